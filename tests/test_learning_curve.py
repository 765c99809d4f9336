"""tools/learning_curve.py: how the giants model's error falls with the number of
training stars (docs/models.rst, "Where the mass error comes from")."""

import json
import sys
from importlib.resources import files
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tools"))
import learning_curve  # tools/ is not a package: found through sys.path above

SHIPPED = files("stellar_ml_ages") / "data" / "learning_curve.json"


def test_subsamples_are_nested_and_even():
    """A star's key does not depend on the fraction asked for, so the star sets are
    nested; the keys spread evenly over [0, 1)."""
    kic = np.arange(1_000_000, 1_020_000)
    key = learning_curve.subsample_key(kic)
    assert np.all((key >= 0) & (key < 1))
    np.testing.assert_array_equal(key, learning_curve.subsample_key(kic.copy()))
    for fraction in (0.25, 0.5, 0.71):
        assert np.mean(key < fraction) == pytest.approx(fraction, abs=0.01)
    assert np.all((key < 0.25) <= (key < 0.5))


def test_doubling_rate_recovers_a_line_in_log_n():
    """An error falling 0.1 points per doubling gives -0.001; a flat one gives 0."""
    n = np.array([1000.0, 2000.0, 4000.0, 8000.0])
    assert learning_curve.doubling_rate(n, 0.06 - 0.001 * np.log2(n / 1000)) == pytest.approx(
        -0.001, abs=1e-12)
    assert learning_curve.doubling_rate(n, np.full(4, 0.05)) == pytest.approx(0, abs=1e-12)


def test_rate_counts_the_doublings_to_a_target():
    """Predictions whose error halves at each step: the rate, a small bootstrap
    sigma, and the doublings to the target follow from the last point."""
    rng = np.random.default_rng(1)
    truth = rng.uniform(0.8, 2.0, 4000)
    sign = rng.choice([-1.0, 1.0], truth.size)
    scale = rng.uniform(0.5, 1.5, truth.size)  # median ~1
    n_train = [1000, 2000, 4000]
    predicted = {f: truth * (1 + sign * scale * error)
                 for f, error in zip((0.25, 0.5, 1.0), (0.08, 0.07, 0.06), strict=True)}
    rate = learning_curve.rate_with_bootstrap(n_train, predicted, truth, target_error=0.05,
                                              n_boot=50)
    assert rate["per_doubling"] == pytest.approx(-0.01, rel=0.05)
    assert rate["per_doubling_sigma"] < 0.002
    current = 0.06 * np.median(scale)
    assert rate["doublings_to_target"] == pytest.approx((0.05 - current) / rate["per_doubling"])
    # A curve that does not fall gives no number of doublings.
    flat = {f: predicted[1.0] for f in predicted}
    assert learning_curve.rate_with_bootstrap(n_train, flat, truth, 0.05, n_boot=5)[
        "doublings_to_target"] is None


def test_shipped_curve_reads_as_the_docs_say():
    """The shipped run: nested fractions up to every training star; fraction 1 is the
    packaged recipe, so it scores what the models report says; a quarter of the stars
    costs the mass error only tenths of a point (docs/models.rst quotes these)."""
    shipped = json.loads(SHIPPED.read_text())
    report = json.loads((files("stellar_ml_ages") / "data" / "models_report.json").read_text())
    packaged = {target: report["variants"]["v3"]["scores"][target]["median_rel_error_all"]
                for target in ("mass", "age")}
    curve = shipped["curve"]
    assert list(curve) == ["0.25", "0.5", "0.71", "1"]
    stars = [entry["mean_training_stars"] for entry in curve.values()]
    assert stars == sorted(stars) and stars[0] == pytest.approx(stars[-1] / 4, rel=0.02)
    for target in ("mass", "age"):
        assert curve["1"][target]["median_rel_error_all"] == pytest.approx(packaged[target],
                                                                           abs=1e-12)
    mass = [entry["mass"]["median_rel_error_all"] for entry in curve.values()]
    assert 0 < mass[0] - mass[-1] < 0.003
    rate = shipped["rate"]["mass"]
    assert -0.002 < rate["per_doubling"] < 0 and rate["doublings_to_target"] > 2
    # The numbers docs/models.rst quotes (to their last digit).
    assert [round(100 * m, 2) for m in mass] == [5.39, 5.34, 5.25, 5.22]
    assert [round(100 * entry["age"]["median_rel_error_all"], 2)
            for entry in curve.values()] == [18.76, 18.60, 18.02, 17.90]
    assert [round(n) for n in stars] == [1930, 3917, 5561, 7792]
    assert round(100 * rate["per_doubling"], 3) == -0.089
    assert round(100 * rate["per_doubling_sigma"], 3) == 0.032
    assert round(rate["doublings_to_target"], 1) == 2.4
    age = shipped["rate"]["age"]
    assert round(100 * age["per_doubling"], 2) == -0.46
    assert round(100 * age["per_doubling_sigma"], 2) == 0.09
    assert "-dirty" not in shipped["generated"]["commit"]
