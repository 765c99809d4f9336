"""Helpers shared by the tests."""

import warnings

import numpy as np
import pytest
from astropy.table import Table
from astropy.utils.exceptions import AstropyWarning

from stellar_ml_ages.features import get_feature


def typical_star(model, n=1):
    """Rows at the training-set mean of ``model``, under APOGEE allStar names.

    A model's [C/N] input is written as ``C_FE`` (with ``N_FE``), as allStar has it.
    """
    names = {"teff": "TEFF", "logg": "LOGG", "fe_h": "FE_H", "mg_fe": "MG_FE",
             "c_fe": "C_FE", "n_fe": "N_FE", "dnu": "DNU", "alpha_m": "ALPHA_M"}
    means = {entry["name"]: entry["mean"] for entry in model.card["features"]}
    if "c_n" in means:
        means["c_fe"] = means.pop("c_n") + means["n_fe"]
    table = Table()
    for name, mean in means.items():
        table[names[name]] = np.full(n, mean)
        table[names[name]].unit = get_feature(name).unit
    return table


def survey_like_table(model, n_rows, seed=0):
    """A catalog as a survey query returns it: the model's features drawn from its
    training distribution, with units, an ID string column, a masked integer
    column, and missing values (NaN) in two features."""
    distribution = model.card["training_set"]["feature_distribution"]
    rng = np.random.default_rng(seed)
    values = rng.multivariate_normal(distribution["mean"], distribution["covariance"], n_rows)
    table = Table()
    table["ID"] = np.array([f"2M{index:08d}" for index in range(n_rows)])
    for index, name in enumerate(model.feature_names):
        feature = get_feature(name)
        column = values[:, index].copy()
        if index < 2:
            column[rng.random(n_rows) < 0.03] = np.nan
        table[feature.aliases[0]] = column
        table[feature.aliases[0]].unit = feature.unit
    quality = np.ma.MaskedArray(rng.integers(0, 5, n_rows), mask=rng.random(n_rows) < 0.1)
    table["QUALITY"] = quality
    return table


def write_quietly(table, path):
    """FITS cannot spell dex(cm/s2); astropy warns, which is not what these tests test."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", AstropyWarning)  # the unit warning's class varies
        table.write(path)


def assert_same_numbers(expected, found, rel=1e-12, path="report"):
    """Nested dicts and lists equal entry by entry, floats to ``rel`` relative.

    For reports recomputed from the shared catalogs: the structure, the types, the
    integers, booleans and strings must match exactly; a float may differ in its last
    bits, which LAPACK builds and processors change (an exact 0.0 must stay 0.0).
    """
    assert type(found) is type(expected), f"{path}: {found!r} is not like {expected!r}"
    if isinstance(expected, dict):
        assert set(found) == set(expected), f"{path}: keys {sorted(found)} != {sorted(expected)}"
        for key in expected:
            assert_same_numbers(expected[key], found[key], rel, f"{path}[{key!r}]")
    elif isinstance(expected, list):
        assert len(found) == len(expected), f"{path}: {len(found)} entries != {len(expected)}"
        for i, (a, b) in enumerate(zip(expected, found, strict=True)):
            assert_same_numbers(a, b, rel, f"{path}[{i}]")
    elif isinstance(expected, float):
        assert found == pytest.approx(expected, rel=rel, abs=0, nan_ok=True), (
            f"{path}: {found!r} != {expected!r}")
    else:
        assert found == expected, f"{path}: {found!r} != {expected!r}"
