"""Spectroscopic RGB/clump classification (#23 item 6)."""

import copy

import numpy as np
import pytest
from astropy.table import MaskedColumn

from stellar_ml_ages import add_mass_age, demo_table
from stellar_ml_ages.exceptions import ExistingColumnError, ModelChecksumError
from stellar_ml_ages.stateclass import (
    StateClassifier,
    add_spectroscopic_state,
    load_state_classifier,
)


def test_the_packaged_classifier_selects_a_clean_clump_out_of_fold():
    metrics = load_state_classifier().card["metrics"]
    assert metrics["protocol"].startswith("10-fold out of fold")
    assert metrics["n"] > 8000
    assert metrics["rc_completeness"] > 0.95
    assert metrics["rc_contamination"] < 0.05  # ES_SP-like selections: about 5%


def test_demo_stars_are_classified_without_touching_the_input():
    stars = demo_table()
    before = stars.copy()
    out = add_spectroscopic_state(stars)
    assert stars.colnames == before.colnames
    assert set(out["EVSTATE_SPEC"]) <= {"RC", "RGB", ""}
    inside = ~np.ma.getmaskarray(out["P_RC"])
    assert inside.sum() > 150
    p = np.asarray(out["P_RC"])[inside]
    assert np.all((p >= 0) & (p <= 1))
    np.testing.assert_array_equal(out["EVSTATE_SPEC"][inside] == "RC", p > 0.5)
    # The demo's own (synthetic) populations: clump stars are called clump far more often.
    truth = np.asarray(out["POPULATION"])[inside]
    called = np.asarray(out["EVSTATE_SPEC"])[inside] == "RC"
    assert called[truth == "red_clump"].mean() > called[truth != "red_clump"].mean() + 0.3


def test_a_row_without_inputs_gets_no_state_and_the_column_feeds_the_intervals():
    stars = demo_table()
    stars["TEFF"] = MaskedColumn(stars["TEFF"], mask=np.arange(len(stars)) == 3)
    out = add_spectroscopic_state(stars)
    assert out["EVSTATE_SPEC"][3] == "" and np.ma.is_masked(out["P_RC"][3])
    # A dwarf is outside the box of the training giants: no state, not a guess.
    dwarf = demo_table()[:1]
    dwarf["LOGG"] = 4.5
    dwarf["TEFF"] = 5800.0
    assert add_spectroscopic_state(dwarf)["EVSTATE_SPEC"][0] == ""
    annotated = add_mass_age(out, model="giants", state_column="EVSTATE_SPEC")
    assert annotated.meta["MLSTATE"] == "EVSTATE_SPEC"


def test_existing_columns_are_not_overwritten():
    out = add_spectroscopic_state(demo_table())
    with pytest.raises(ExistingColumnError, match="EVSTATE_SPEC"):
        add_spectroscopic_state(out)
    with pytest.raises(ValueError, match="threshold"):
        add_spectroscopic_state(demo_table(), threshold=1.5)


def test_an_edited_card_is_refused():
    card = copy.deepcopy(load_state_classifier().card)
    card["coefficients"][0] += 1.0
    with pytest.raises(ModelChecksumError):
        StateClassifier(card)


@pytest.mark.slow
@pytest.mark.shared_data
def test_retraining_reproduces_the_packaged_classifier(full_range_table):
    from stellar_ml_ages.training.stateclass import train_state_classifier

    shipped = load_state_classifier().card
    retrained = train_state_classifier(full_range_table).card
    assert retrained["coefficients"] == shipped["coefficients"]
    assert retrained["metrics"] == shipped["metrics"]


def test_quadratic_terms_keep_the_order_the_shipped_card_was_fitted_in():
    """The classifier's terms are built without scikit-learn now; their order must stay
    that of ``PolynomialFeatures(degree=2)``, which the shipped card's powers record."""
    from sklearn.preprocessing import PolynomialFeatures

    from stellar_ml_ages.training.stateclass import quadratic_powers

    expected = PolynomialFeatures(degree=2).fit(np.zeros((1, 6))).powers_
    assert np.array_equal(quadratic_powers(6), expected)
    assert np.array_equal(quadratic_powers(6), load_state_classifier().card["powers"])
