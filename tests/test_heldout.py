"""The packaged models against real, held-out asteroseismic truth (needs the catalogs).

The test split is fixed by a salted hash of KIC, so it can be rebuilt here from the
catalogs and pushed through the public `add_mass_age`, exactly as a user would.
"""

import dataclasses

import numpy as np
import pytest

from stellar_ml_ages import add_mass_age, get_model
from stellar_ml_ages.training import get_spec, train_model
from stellar_ml_ages.training.pipeline import _select, kic_test_mask, paper_metrics

pytestmark = pytest.mark.shared_data


def _held_out(table, model_name):
    spec = get_spec(model_name)
    keep, _, _ = _select(table, spec)
    selected = table[keep]
    return selected[kic_test_mask(selected["KIC"], spec.test_fraction)]


@pytest.mark.parametrize("model_name", ["giants", "red-clump"])
def test_held_out_stars_reproduce_model_card(training_table, model_name):
    model = get_model(model_name)
    test = _held_out(training_table, model_name)
    assert len(test) == model.card["training_set"]["n_test"]
    annotated = add_mass_age(test, model=model, copy=True)
    inside = ~annotated["mass"].mask
    assert inside.mean() == pytest.approx(model.card["training_set"]["test_fraction_in_hull"])
    for target in model.card["targets"]:
        name = target["name"]
        truth = np.asarray(test[target["name"].upper()])[inside]
        predicted = np.asarray(annotated[name])[inside]
        metrics = paper_metrics(predicted, truth)
        for key, value in target["metrics"].items():
            assert metrics[key] == pytest.approx(value, rel=1e-6), key
        low = np.asarray(annotated[f"{name}_p16"])[inside]
        high = np.asarray(annotated[f"{name}_p84"])[inside]
        covered = np.mean((truth >= low) & (truth <= high))
        assert covered == pytest.approx(target["coverage"]["p16_p84"], abs=1e-9)
        # What a physicist needs, independently of the card: accuracy and honest intervals.
        limit = {"mass": 0.08, "age": 0.2}[name]
        assert metrics["median_rel_error"] < limit
        assert np.corrcoef(predicted, truth)[0, 1] > 0.7
        assert 0.55 < covered < 0.8
        # Intervals as wide as the errors they describe: half-width ~ median relative error.
        half_width = np.median((high - low) / (2 * predicted))
        assert 0.5 < half_width / metrics["median_rel_error"] < 3


def test_training_is_deterministic_and_accurate(training_table):
    spec = dataclasses.replace(get_spec("giants"), n_estimators=30, cleaning_estimators=20)
    first = train_model(spec, training_table)
    second = train_model(spec, training_table)
    for name in ("feature", "threshold", "value", "variance"):
        np.testing.assert_array_equal(getattr(first.model.forests["mass"], name),
                                      getattr(second.model.forests["mass"], name))
    metrics = first.model.card["targets"][0]["metrics"]
    assert metrics["median_rel_error"] < 0.08
    # No star is both trained on and tested on; cleaning never touches the test split.
    assert not np.isin(first.test_table["KIC"], first.train_kic).any()
    card = first.model.card["training_set"]
    assert card["n_test"] == len(first.test_table)
    assert card["n_train"] + card["n_removed_by_cleaning"] + card["n_test"] == card["n_selected"]
