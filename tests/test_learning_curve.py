"""tools/learning_curve.py: how the giants model's error falls with the number of
training stars (docs/models.rst, "Where the mass error comes from")."""

import json
import sys
from importlib.resources import files
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from stellar_ml_ages.training import get_spec, make_synthetic_catalog
from stellar_ml_ages.training.evaluation import kic_folds

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tools"))
import learning_curve  # tools/ is not a package: found through sys.path above

SHIPPED = files("stellar_ml_ages") / "data" / "learning_curve.json"


def test_subsamples_are_even_within_each_fold_and_differ_between_draws():
    """The keys spread evenly over [0, 1) in every fold (their salt is not the
    folds'), and another draw keeps other stars."""
    kic = np.arange(1_000_000, 1_020_000)
    key = learning_curve.subsample_key(kic)
    assert np.all((key >= 0) & (key < 1))
    fold = kic_folds(kic, 10)
    for k in range(10):
        for fraction in (0.25, 0.5, 0.71):
            assert np.mean(key[fold == k] < fraction) == pytest.approx(fraction, abs=0.03)
    other = learning_curve.subsample_key(kic, draw=1)
    assert np.mean((key < 0.5) == (other < 0.5)) == pytest.approx(0.5, abs=0.03)


def test_fold_models_never_train_on_their_fold_and_subsets_are_nested(monkeypatch):
    """The stars each fold model trains on, recorded from `train_model`: never its own
    fold; nested across fractions within a draw; every other star at fraction 1,
    trained once for all draws; each held-out star predicted once per curve."""
    spec = get_spec("giants")
    table = make_synthetic_catalog(spec, 400, seed=1)
    trained = []

    def fake_train_model(spec, selected, test_mask):
        trained.append(~np.asarray(test_mask))
        predict = lambda features, states: {  # noqa: E731 - the fake's one method
            target: {"value": np.full(len(features), len(trained), float)}
            for target in spec.targets}
        return SimpleNamespace(model=SimpleNamespace(predict=predict))

    monkeypatch.setattr(learning_curve, "train_model", fake_train_model)
    truth, predicted, n_train, states, fold = learning_curve.learning_curve(
        spec, table, fractions=(0.5, 1.0), n_folds=4, draws=(0, 1), say=lambda message: None)
    assert len(trained) == 3 * 4  # (draw 0: 0.5, 1), (draw 1: 0.5); fraction 1 once
    per = {(draw, fraction): trained[i * 4:(i + 1) * 4]
           for i, (draw, fraction) in enumerate([(0, 0.5), (0, 1.0), (1, 0.5)])}
    for (_, fraction), masks in per.items():
        for k, mask in enumerate(masks):
            assert not np.any(mask & (fold == k))
            if fraction == 1.0:
                np.testing.assert_array_equal(mask, fold != k)
            else:
                assert np.all(mask <= per[0, 1.0][k])  # nested in the full set
                assert mask.sum() == pytest.approx(0.5 * (fold != k).sum(), rel=0.25)
    assert not np.array_equal(per[0, 0.5][0], per[1, 0.5][0])
    assert predicted[1, 1.0] is predicted[0, 1.0] and n_train[1, 1.0] == n_train[0, 1.0]
    # Fold k's stars carry the value of the k-th model of their curve.
    np.testing.assert_array_equal(predicted[0, 0.5]["mass"], fold + 1.0)
    np.testing.assert_array_equal(predicted[1, 0.5]["mass"], fold + 9.0)
    assert set(truth) == set(spec.targets) and len(states) == len(fold) == 400


def test_doubling_rate_recovers_a_line_in_log_n():
    """An error falling 0.1 points per doubling gives -0.001; a flat one gives 0."""
    n = np.array([1000.0, 2000.0, 4000.0, 8000.0])
    assert learning_curve.doubling_rate(n, 0.06 - 0.001 * np.log2(n / 1000)) == pytest.approx(
        -0.001, abs=1e-12)
    assert learning_curve.doubling_rate(n, np.full(4, 0.05)) == pytest.approx(0, abs=1e-12)


def _curve(errors, n_stars=4000, seed=1):
    """Predictions of the same stars whose relative error scales with ``errors``
    (one per fraction): the errors move together, as the test stars are shared."""
    rng = np.random.default_rng(seed)
    truth = rng.uniform(0.8, 2.0, n_stars)
    sign = rng.choice([-1.0, 1.0], n_stars)
    scale = rng.uniform(0.5, 1.5, n_stars)  # median 1
    curve = {f: (n, truth * (1 + sign * scale * error))
             for f, n, error in zip((0.25, 0.5, 1.0), (1000, 2000, 4000), errors, strict=True)}
    return curve, truth, scale


def test_rate_counts_the_doublings_to_a_target():
    """Errors of 8%, 7%, 6% at 1000, 2000, 4000 stars: -1 point per doubling, a
    bootstrap sigma that is small because the draw is paired across fractions, and
    the doublings counted from the measured error at the largest N."""
    curve, truth, scale = _curve((0.08, 0.07, 0.06))
    rate = learning_curve.rate_with_bootstrap(curve, truth, target_error=0.05, n_boot=100)
    assert rate["per_doubling"] == pytest.approx(-0.01, rel=0.05)
    # Unpaired resampling of these stars gives about 4e-4; paired, under 1e-4.
    assert rate["per_doubling_sigma"] < 2e-4
    current = 0.06 * np.median(scale)
    assert rate["doublings_to_target"] == pytest.approx((0.05 - current) / rate["per_doubling"])
    # A curve that does not fall, or no target, gives no number of doublings.
    flat = {f: (n, curve[1.0][1]) for f, (n, _) in curve.items()}
    assert learning_curve.rate_with_bootstrap(flat, truth, 0.05, n_boot=5)[
        "doublings_to_target"] is None
    assert learning_curve.rate_with_bootstrap(curve, truth, None, n_boot=5)[
        "doublings_to_target"] is None


def test_draws_combine_into_a_mean_and_a_wider_sigma():
    """Two draws' rates: their mean, and a sigma that grows with their difference."""
    same = learning_curve.combine_draws([{"per_doubling": -0.001, "per_doubling_sigma": 3e-4}] * 2)
    assert same["per_doubling"] == pytest.approx(-0.001)
    assert same["per_doubling_sigma"] == pytest.approx(3e-4)
    apart = learning_curve.combine_draws([{"per_doubling": -0.0005, "per_doubling_sigma": 3e-4},
                                          {"per_doubling": -0.0015, "per_doubling_sigma": 3e-4}])
    assert apart["per_doubling"] == pytest.approx(-0.001)
    assert apart["per_doubling_sigma"] == pytest.approx(np.sqrt(9e-8 + 5e-7))
    assert apart["per_doubling_by_draw"] == [-0.0005, -0.0015]


def test_shipped_curve_reads_as_the_docs_say():
    """The shipped run: nested fractions up to every training star; fraction 1 is the
    packaged recipe, so it scores what the models report says; a quarter of the stars
    costs the mass error only tenths of a point (docs/models.rst quotes these)."""
    shipped = json.loads(SHIPPED.read_text())
    report = json.loads((files("stellar_ml_ages") / "data" / "models_report.json").read_text())
    packaged = report["variants"]["v3"]["scores"]
    assert shipped["draws"] == [0, 1] and "-dirty" not in shipped["generated"]["commit"]
    for draw, curve in shipped["curve"].items():
        assert list(curve) == ["0.25", "0.5", "0.71", "1"]
        stars = [entry["mean_training_stars"] for entry in curve.values()]
        assert stars == sorted(stars) and stars[0] == pytest.approx(stars[-1] / 4, rel=0.05)
        for target in ("mass", "age"):
            assert curve["1"][target]["median_rel_error_all"] == pytest.approx(
                packaged[target]["median_rel_error_all"], abs=1e-12)
        mass = [entry["mass"]["median_rel_error_all"] for entry in curve.values()]
        assert 0 < mass[0] - mass[-1] < 0.003, draw
    # The numbers docs/models.rst and the CHANGELOG quote (to their last digit).
    table = {draw: {key: [round(100 * entry[key]["median_rel_error_all"], 2)
                          for entry in curve.values()] for key in ("mass", "age")}
             for draw, curve in shipped["curve"].items()}
    assert table["0"] == {"mass": [5.39, 5.34, 5.25, 5.22], "age": [18.76, 18.60, 18.02, 17.90]}
    assert table["1"] == {"mass": [5.41, 5.29, 5.22, 5.22], "age": [18.66, 18.30, 18.10, 17.90]}
    assert [[round(entry["mean_training_stars"]) for entry in curve.values()]
            for curve in shipped["curve"].values()] == [[1930, 3917, 5561, 7792],
                                                        [2001, 3853, 5483, 7792]]
    mass, age = shipped["rate"]["mass"], shipped["rate"]["age"]
    assert round(100 * mass["per_doubling"], 3) == -0.098
    assert round(100 * mass["per_doubling_sigma"], 3) == 0.033
    assert [round(100 * r, 3) for r in mass["per_doubling_by_draw"]] == [-0.089, -0.107]
    assert round(mass["doublings_to_target"], 1) == 2.2
    assert round(100 * age["per_doubling"], 2) == -0.42
    assert round(100 * age["per_doubling_sigma"], 2) == 0.10
    assert -0.002 < mass["per_doubling"] < 0 and len(mass["by_draw"]) == 2
