"""The training masses' scale (`stellar_ml_ages.training.massscale`)."""

import json
from importlib.resources import files

import numpy as np
import pytest

from stellar_ml_ages.exceptions import TrainingDataError
from stellar_ml_ages.training import find_data_dir
from stellar_ml_ages.training.massscale import seismic_mass_scale, temperature_consistency

from .helpers import assert_same_numbers


def _seismic_logg(numax, teff):
    """Scaling-relation log g (solar 3076 uHz, 5772 K, 4.438), printed to 5 decimals."""
    return np.round(np.log10(numax / 3076.0 * np.sqrt(teff / 5772.0)) + 4.438, 5)


def test_the_temperature_a_catalog_used_is_the_one_that_reproduces_every_log_g():
    rng = np.random.default_rng(7)
    numax = rng.uniform(5.0, 200.0, 2000)
    used = rng.normal(4700.0, 300.0, 2000)
    another_run = used * np.exp(rng.normal(0.0, 0.01, 2000))
    found = temperature_consistency(_seismic_logg(numax, used), numax,
                                    {"used": used, "another run": another_run})
    # Only the printed log g's rounding is left: 5e-6 dex is 2.3e-5 in ln Teff.
    assert found["used"]["n"] == 2000
    assert found["used"]["max_abs"] < 2.4e-5
    assert found["used"]["median_ln_ratio"] == pytest.approx(
        2 * (np.log(10.0) * 4.438 - np.log(3076.0)) - np.log(5772.0), abs=1e-5)
    # The other run's 1% scatter in Teff comes back as itself.
    assert found["another run"]["robust_sigma"] == pytest.approx(0.01, rel=0.1)


def test_missing_values_are_left_out_not_propagated():
    numax = np.array([20.0, 40.0, np.nan, 80.0])
    teff = np.array([4500.0, np.nan, 4700.0, 4800.0])
    found = temperature_consistency(_seismic_logg(numax, teff), numax,
                                    {"teff": teff, "none": np.full(4, np.nan)})
    assert found["teff"]["n"] == 2 and np.isfinite(found["teff"]["max_abs"])
    assert found["none"] == {"n": 0}


@pytest.mark.shared_data
def test_shipped_mass_scale_report_reproduces_and_reads_as_docs_say():
    """tools/mass_scale_report.py on the shared catalogs (docs/models.rst, "The masses'
    scale"): the preliminary masses used the preliminary run's calibrated Teff; final
    APOKASC-3 clump masses are lower by about 3%, RGB ones within half a percent."""
    try:
        data_dir = find_data_dir()
    except TrainingDataError as error:
        pytest.skip(f"real catalogs not available: {error}")
    shipped = json.loads((files("stellar_ml_ages") / "data" / "mass_scale.json").read_text())
    fresh = seismic_mass_scale(data_dir)
    # Same entries and numbers; floats to 1e-12 relative, since LAPACK builds and
    # processors change the last bits of a least-squares slope (seen: 4e-16).
    assert_same_numbers({key: shipped[key] for key in fresh}, json.loads(json.dumps(fresh)))

    assert fresh["temperature_used"] == "TEFF_COR"
    consistency = fresh["temperature_consistency"]
    assert consistency["TEFF_COR"]["max_abs"] < 1e-4
    # Any other temperature leaves a scatter fifty times that, star by star.
    for name in ("TEFF_FIT", "TEFF (final DR17)"):
        assert consistency[name]["robust_sigma"] > 50 * consistency["TEFF_COR"]["robust_sigma"]
        assert consistency[name]["robust_sigma"] > 1e-3
    final = fresh["final_against_preliminary"]
    assert final["RC"]["n"] + final["RGB"]["n"] == final["all"]["n"] > 5000
    assert -0.04 < final["RC"]["median_ln_mass_ratio"] < -0.02
    assert abs(final["RGB"]["median_ln_mass_ratio"]) < 0.005
    # The final temperatures are a little cooler; alone they explain a fifth of the
    # clump's offset, so the rest is the seismic side.
    for state in ("RGB", "RC"):
        assert -0.006 < final[state]["median_ln_teff_ratio"] < 0
        assert final[state]["robust_sigma_ln_teff_ratio"] < 0.005
    assert final["RC"]["median_ln_mass_ratio_at_same_teff"] < -0.015
    # On the giant branch age falls roughly as M^-3 (the main-sequence lifetime).
    for state in ("RGB", "RC"):
        assert -4.0 < fresh["ln_age_per_ln_mass"][state]["slope"] < -2.0
