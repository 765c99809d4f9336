"""pandas and Dask paths agree with add_mass_age row for row."""

import numpy as np
import pytest

from stellar_ml_ages import add_mass_age, get_model
from stellar_ml_ages.dataframes import annotate_dask, annotate_pandas

from .helpers import survey_like_table

pd = pytest.importorskip("pandas")

OUTPUTS = ["mass", "mass_p16", "mass_p84", "age", "age_p16", "age_p84", "in_hull",
           "mass_age_flag"]


@pytest.fixture(scope="module")
def catalog():
    table = survey_like_table(get_model("giants"), 4000, seed=31)
    table.remove_column("QUALITY")  # pandas has no masked integers by default
    return table


def units_of(table):
    return {name: table[name].unit.to_string() for name in table.colnames
            if table[name].unit is not None}


def assert_matches(frame, reference):
    for name in OUTPUTS:
        expected = reference[name]
        if expected.dtype.kind == "f":
            expected = np.ma.filled(np.ma.asarray(expected, dtype=np.float64), np.nan)
        np.testing.assert_array_equal(frame[name].to_numpy(), np.asarray(expected), err_msg=name)


def test_pandas_matches_table_path(catalog):
    frame = catalog.to_pandas()
    frame.index = frame.index[::-1] + 1000  # a non-trivial index must be kept
    annotated = annotate_pandas(frame, "giants", units=units_of(catalog))
    assert list(annotated.index) == list(frame.index)
    assert "mass" not in frame.columns  # the caller's frame is untouched
    assert_matches(annotated, add_mass_age(catalog, "giants"))
    assert annotated["mass"].isna().mean() == pytest.approx(
        1 - annotated["in_hull"].mean(), abs=0.05)


def test_pandas_unknown_unit_column(catalog):
    with pytest.raises(KeyError, match="'TEF'"):
        annotate_pandas(catalog.to_pandas(), "giants", units={"TEF": "K"})


def test_dask_on_a_local_process_cluster(catalog, tmp_path):
    dd = pytest.importorskip("dask.dataframe")
    distributed = pytest.importorskip("distributed")
    frame = catalog.to_pandas()
    frame.to_parquet(tmp_path / "part.0.parquet", index=False)  # a Parquet dataset
    # Every listening socket on loopback: older distributed starts its HTTP servers
    # on 0.0.0.0 unless given an address, even without a dashboard.
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  host="127.0.0.1", dashboard_address="127.0.0.1:0",
                                  worker_dashboard_address="127.0.0.1:0") as cluster, \
            distributed.Client(cluster) as client:
        stars = dd.read_parquet(tmp_path).repartition(npartitions=5)
        lazy = annotate_dask(stars, get_model("giants"), units=units_of(catalog))
        assert list(lazy.columns[-len(OUTPUTS):]) == OUTPUTS
        result = lazy.compute()
        # Two separate worker processes, each with its own copy of the model.
        assert len(set(client.run(__import__("os").getpid).values())) == 2
    assert len(result) == len(catalog)
    assert_matches(result.reset_index(drop=True), add_mass_age(catalog, "giants"))


def test_pandas_overwrite_returns_the_new_values(catalog):
    """Re-annotating a frame that already has the outputs replaces them (was: old values)."""
    frame = catalog.to_pandas()
    units = units_of(catalog)
    first = annotate_pandas(frame, "giants", units=units)
    again = annotate_pandas(first, "giants", units=units, overwrite=True,
                            allow_extrapolation=True)
    extrapolated = first["mass"].isna() & again["mass"].notna()
    assert extrapolated.any()
    assert list(again.columns) == list(first.columns)


def test_pandas_overwrite_replaces_extra_quantiles_and_drops_left_over_ones(catalog):
    """With overwrite=True every column the run writes is new, extra quantiles too, and
    the columns add_mass_age removes as left over from an earlier run are gone."""
    frame = catalog.to_pandas()[:400]
    units = units_of(catalog)
    first = annotate_pandas(frame, "giants", units=units, quantiles=(0.025, 0.975))
    hotter = first.copy()
    hotter["TEFF"] += 150.0
    again = annotate_pandas(hotter, "giants", units=units, quantiles=(0.025, 0.975),
                            overwrite=True)
    table = catalog[:400].copy()
    table["TEFF"] += 150.0
    expected = add_mass_age(table, "giants", quantiles=(0.025, 0.975))
    for name in ("mass", "mass_p2_5", "age_p97_5"):
        np.testing.assert_array_equal(
            again[name].to_numpy(),
            np.ma.filled(np.ma.asarray(expected[name], dtype=np.float64), np.nan), err_msg=name)
    predicted = again["mass"].notna()
    assert (again["mass_p2_5"][predicted] <= again["mass_p16"][predicted]).all()
    assert list(again.columns) == list(first.columns)
    plain = annotate_pandas(hotter, "giants", units=units, overwrite=True)
    assert "mass_p2_5" not in plain.columns and "mass_p16" in plain.columns
    assert "TEFF" in plain.columns and len(plain) == len(frame)
