"""Properties of add_mass_age over random tables (hypothesis).

Each example is a table a survey could plausibly hand over: the model's
features under random aliases and letter case, values drawn around the
training distribution or far from it, NaN, inf and masked entries, unit
variants, extra columns, Table or QTable. Whatever the table, the output must
keep every row in order, leave the input alone, mask exactly what it cannot
predict, flag it consistently, and give finite, ordered, physical numbers.

The examples are derandomised so CI is reproducible; ``tools/fuzz.py`` runs the
same strategies with fresh randomness for a bounded time.
"""

import warnings

import astropy.units as u
import numpy as np
import pytest
from astropy.table import MaskedColumn, QTable, Table

from stellar_ml_ages import (
    AssumedUnitWarning,
    FlaggedRowsWarning,
    MassAgeFlag,
    add_mass_age,
    get_model,
)
from stellar_ml_ages.features import get_feature
from stellar_ml_ages.flags import NEAR_EDGE

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

PROPERTY_SETTINGS = settings(max_examples=60, deadline=None, derandomize=True,
                             suppress_health_check=[HealthCheck.too_slow])

# Equivalent units a catalog may use, with the factor to the canonical value.
UNIT_VARIANTS = {"teff": [(u.K, 1.0)], "dnu": [(u.uHz, 1.0), (u.mHz, 1e-3)]}


CORRUPTIONS = np.array([np.nan, np.inf, -np.inf, 1e6, -1e6, 0.0, -1.0])


@st.composite
def survey_tables(draw, model_name):
    model = get_model(model_name)
    n_rows = draw(st.integers(0, 30))
    # Rows from the training distribution (most land in the hull), then a drawn
    # fraction of cells replaced by gaps, infinities, absurd or boundary values.
    distribution = model.card["training_set"]["feature_distribution"]
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    base = rng.multivariate_normal(distribution["mean"], distribution["covariance"], n_rows)
    base *= draw(st.sampled_from([1.0, 1.0, 1.05]))  # sometimes nudged towards the edges
    corrupt = rng.random(base.shape) < draw(st.sampled_from([0.0, 0.02, 0.1, 0.5]))
    base[corrupt] = rng.choice(CORRUPTIONS, size=int(corrupt.sum()))
    table = draw(st.sampled_from([Table, QTable]))()
    for index, entry in enumerate(model.card["features"]):
        feature = get_feature(entry["name"])
        name = draw(st.sampled_from([alias for alias in feature.aliases[:3]
                                     if "/" not in alias and "(" not in alias]))
        name = draw(st.sampled_from([name, name.lower(), name.upper()]))
        unit, factor = draw(st.sampled_from(UNIT_VARIANTS.get(entry["name"],
                                                              [(feature.unit, 1.0)])))
        values = base[:, index] * factor
        mask = rng.random(n_rows) < draw(st.sampled_from([0.0, 0.0, 0.1]))
        if isinstance(table, QTable) and isinstance(unit, u.FunctionUnitBase):
            # Masked quantities cannot have logarithmic units: NaN marks gaps there.
            table[name] = values * unit
        else:
            # In a QTable this becomes a masked Quantity.
            table[name] = MaskedColumn(values, mask=mask, unit=unit)
    table["ID"] = np.arange(n_rows)
    return model, table


def mask_of(column):
    mask = getattr(column, "mask", None)
    return np.zeros(len(column), dtype=bool) if mask is None else np.array(mask, dtype=bool)


def data_of(column):
    """Plain values of a Column, MaskedColumn, Quantity or masked Quantity."""
    column = getattr(column, "unmasked", column)
    return np.array(getattr(column, "value", np.ma.getdata(column)), copy=True)


def snapshot(table):
    return {name: (data_of(table[name]), mask_of(table[name]), table[name].unit)
            for name in table.colnames}


def missing_or_invalid(table, model):
    """Rows where some input is masked or not finite: they can have no prediction."""
    bad = np.zeros(len(table), dtype=bool)
    lower = {name.lower(): name for name in table.colnames}
    for entry in model.card["features"]:
        aliases = [alias.lower() for alias in get_feature(entry["name"]).aliases]
        column = table[next(lower[alias] for alias in aliases if alias in lower)]
        bad |= mask_of(column) | ~np.isfinite(data_of(column).astype(float))
    return bad


PREDICTED_ROWS = {}


def check_properties(model, table):
    before = snapshot(table)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        annotated = add_mass_age(table, model=model)
    # One summary warning exactly when more than half of the rows get no prediction.
    n_without = int(np.count_nonzero(mask_of(annotated["mass"])))
    summaries = [w for w in caught if issubclass(w.category, FlaggedRowsWarning)]
    assert len(summaries) == int(n_without > 0.5 * len(table)), [str(w.message) for w in caught]
    assert all(issubclass(w.category, (FlaggedRowsWarning, AssumedUnitWarning)) for w in caught)
    # The input is untouched, and every row comes back, in order.
    assert snapshot(table).keys() == before.keys()
    for name, (data, mask, unit) in before.items():
        np.testing.assert_array_equal(data_of(table[name]), data)
        np.testing.assert_array_equal(mask_of(table[name]), mask)
        assert table[name].unit == unit
    assert len(annotated) == len(table)
    np.testing.assert_array_equal(data_of(annotated["ID"]), np.arange(len(table)))

    flags = data_of(annotated["mass_age_flag"])
    predicted = ~mask_of(annotated["mass"])
    # Masked or non-finite in -> masked out, flagged as missing or invalid.
    bad = missing_or_invalid(table, model)
    assert not np.any(predicted & bad)
    assert np.all(flags[bad] & (MassAgeFlag.MISSING_INPUT | MassAgeFlag.INVALID_INPUT))
    # Without extrapolation, a prediction exists exactly where no masking flag is raised
    # (the edge bits only warn, and only on predicted rows).
    masking = flags & ~np.int16(NEAR_EDGE)
    np.testing.assert_array_equal(predicted, masking == 0)
    assert not np.any(flags[~predicted] & NEAR_EDGE)
    PREDICTED_ROWS[model.name] = PREDICTED_ROWS.get(model.name, 0) + int(predicted.sum())
    np.testing.assert_array_equal(data_of(annotated["in_hull"]), masking == 0)
    # Point estimates within the training targets (mass < 5 Msun, age < 14 Gyr: a forest
    # averages training values); intervals may reach further, as the seismic ages do.
    for target, upper, interval_upper in (("mass", 5.0, 20.0), ("age", 14.0, 20.0)):
        if target not in annotated.colnames:
            continue
        low, middle, high = (data_of(annotated[target + suffix])[predicted]
                             for suffix in ("_p16", "", "_p84"))
        assert np.all(np.isfinite(low) & np.isfinite(high))
        assert np.all((low > 0) & (middle < upper) & (high < interval_upper)), target
        assert np.all((low <= middle) & (middle <= high)), target
        np.testing.assert_array_equal(mask_of(annotated[target]), ~predicted)


@PROPERTY_SETTINGS
@given(survey_tables("giants"))
def test_giants_properties(example):
    check_properties(*example)


@PROPERTY_SETTINGS
@given(survey_tables("red-clump"))
def test_red_clump_properties(example):
    check_properties(*example)


def test_the_properties_were_checked_on_predicted_rows():
    """Guard against strategies that only ever produce unpredictable rows."""
    if len(PREDICTED_ROWS) < 2:  # run alone: generate the examples here
        test_giants_properties()
        test_red_clump_properties()
    for name in ("giants-apogee-dr17", "red-clump-apogee-dr17"):
        assert PREDICTED_ROWS.get(name, 0) > 100, PREDICTED_ROWS
