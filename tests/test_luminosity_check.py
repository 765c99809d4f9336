"""tools/luminosity_check.py: what a Gaia luminosity adds to the giants model's mass
(docs/models.rst, "Where the mass error comes from")."""

import json
import sys
from importlib.resources import files
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tools"))
import luminosity_check  # tools/ is not a package: found through sys.path above


def test_luminosity_mass_follows_g_l_over_teff4():
    """M = g L / (4 pi G sigma Teff^4): the Sun is 1 Msun; a red giant of log g 2.5,
    4800 K and 50 Lsun about 1.2 Msun; twice L at the same g and Teff is twice M."""
    assert luminosity_check.luminosity_mass(4.438, 5772.0, 1.0) == pytest.approx(0, abs=1e-12)
    giant = np.exp(luminosity_check.luminosity_mass(2.5, 4800.0, 50.0))
    assert 1.1 < giant < 1.3
    assert np.exp(luminosity_check.luminosity_mass(2.5, 4800.0, 100.0)) == pytest.approx(2 * giant)


def test_the_combination_is_fitted_out_of_fold():
    """Exact data are recovered fold by fold; a star's combined value does not depend
    on its own truth (changing it moves only the other folds' coefficients)."""
    rng = np.random.default_rng(3)
    model, mass_l = rng.normal(0, 0.3, 400), rng.normal(0, 0.3, 400)
    fold = np.arange(400) % 5
    truth = 0.1 + 0.7 * model + 0.3 * mass_l
    combined, beta = luminosity_check.combined_out_of_fold(model, mass_l, truth, fold)
    np.testing.assert_allclose(combined, truth, atol=1e-12)
    np.testing.assert_allclose(beta, [0.1, 0.7, 0.3], atol=1e-12)
    moved = truth.copy()
    moved[0] += 5.0
    again, _ = luminosity_check.combined_out_of_fold(model, mass_l, moved, fold)
    assert again[0] == combined[0]
    assert not np.allclose(again[fold != 0], combined[fold != 0])


def test_shipped_luminosity_check_reads_as_the_docs_say():
    """The shipped report: about 2,000 RGB stars; the luminosity mass scatters several
    times more than the model's error, and combined it gains at most a few tenths of a
    point of mass error (docs/models.rst quotes these numbers)."""
    shipped = json.loads((files("stellar_ml_ages") / "data" / "luminosity_check.json").read_text())
    assert shipped["n_matched"] > 2000 and shipped["states"]["RGB"] > 0.99 * shipped["n_matched"]
    mass, age = shipped["mass"]["all"], shipped["age"]["all"]
    assert mass["luminosity_mass_mad"] > 2.5 * mass["median_rel_error_model"]
    # The numbers docs/models.rst quotes (to their last digit).
    assert mass["n"] == 2067
    assert mass["median_rel_error_model"] == pytest.approx(0.0349, abs=5e-5)
    assert mass["median_rel_error_combined"] == pytest.approx(0.0334, abs=5e-5)
    assert mass["change"] == pytest.approx(-0.0015, abs=5e-5)
    assert mass["change_bootstrap_sigma"] == pytest.approx(0.0010, abs=5e-5)
    assert mass["luminosity_mass_mad"] == pytest.approx(0.102, abs=5e-4)
    assert mass["luminosity_mass_median_ln_offset"] == pytest.approx(-0.064, abs=5e-4)
    assert mass["correlation_with_model_residual"] == pytest.approx(-0.10, abs=5e-3)
    assert age["median_rel_error_model"] == pytest.approx(0.126, abs=5e-4)
    assert age["median_rel_error_combined"] == pytest.approx(0.124, abs=5e-4)
    assert age["change"] == pytest.approx(-0.002, abs=5e-4)
    assert age["change_bootstrap_sigma"] == pytest.approx(0.003, abs=5e-4)
    assert "-dirty" not in shipped["generated"]["commit"]
