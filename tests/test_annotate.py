"""add_mass_age: what an astronomer relies on when annotating a catalog."""

import io
import warnings

import astropy.units as u
import numpy as np
import pytest
from astropy.table import MaskedColumn, QTable, Table
from scipy.stats import spearmanr

from stellar_ml_ages import (
    OUTPUT_COLUMNS,
    ColumnUnitError,
    ExistingColumnError,
    FlaggedRowsWarning,
    MassAgeFlag,
    MissingColumnError,
    add_mass_age,
    get_model,
)
from tests.helpers import typical_star, write_quietly


def _snapshot(table):
    return [(name, np.ma.getdata(table[name]).copy(), np.ma.getmaskarray(table[name]).copy(),
             table[name].unit) for name in table.colnames]


def _equal(snapshot, table):
    assert [s[0] for s in snapshot] == table.colnames
    for name, data, mask, unit in snapshot:
        np.testing.assert_array_equal(np.ma.getdata(table[name]), data)
        np.testing.assert_array_equal(np.ma.getmaskarray(table[name]), mask)
        assert table[name].unit == unit


def test_input_table_is_not_mutated(stars):
    before = _snapshot(stars)
    annotated = add_mass_age(stars, model="giants")
    _equal(before, stars)
    assert "mass" in annotated.colnames and "mass" not in stars.colnames


def test_copy_false_annotates_in_place(stars):
    returned = add_mass_age(stars, model="giants", copy=False)
    assert returned is stars and "mass_age_flag" in stars.colnames


def test_output_columns_units_and_ordering(stars):
    annotated = add_mass_age(stars, model="red-clump")
    for name, unit in [("mass", u.solMass), ("mass_p16", u.solMass), ("age", u.Gyr),
                       ("age_p84", u.Gyr)]:
        assert annotated[name].unit == unit
        assert annotated[name].description and annotated[name].meta["ucd"]
    ok = ~annotated["mass"].mask
    assert ok.sum() > 20
    for target in ("mass", "age"):
        low, mid, high = (np.asarray(annotated[f"{target}{s}"][ok]) for s in ("_p16", "", "_p84"))
        assert np.all(low <= mid) and np.all(mid <= high) and np.all(high > low)
    # Physical bounds of red-clump stars.
    assert np.all((annotated["mass"][ok] > 0.5) & (annotated["mass"][ok] < 3.5))
    assert np.all((annotated["age"][ok] > 0.1) & (annotated["age"][ok] < 14.0))


def test_row_order_is_preserved(stars):
    order = np.random.default_rng(0).permutation(len(stars))
    direct = add_mass_age(stars, model="giants")
    shuffled = add_mass_age(stars[order], model="giants")
    np.testing.assert_array_equal(shuffled["ID"], stars["ID"][order])
    np.testing.assert_array_equal(shuffled["mass"].filled(-1), direct["mass"].filled(-1)[order])
    np.testing.assert_array_equal(shuffled["mass_age_flag"], direct["mass_age_flag"][order])


def test_masked_inputs_stay_masked_and_flagged(giants):
    table = typical_star(giants, n=3)
    table["N_FE"] = MaskedColumn(table["N_FE"], mask=[False, True, False])
    table["TEFF"][2] = np.nan
    with pytest.warns(FlaggedRowsWarning, match=r"2 of 3 rows .*2 MISSING_INPUT"):
        annotated = add_mass_age(table, model=giants)
    assert annotated["mass"].mask.tolist() == [False, True, True]
    assert annotated["mass_age_flag"].tolist() == [0, 1, 1]
    assert annotated["in_hull"].tolist() == [True, False, False]


def test_star_far_outside_hull_is_flagged_not_dropped(giants):
    table = typical_star(giants, n=2)
    table["TEFF"][1] = 6500.0  # a hot star, far from any K giant
    annotated = add_mass_age(table, model="giants")
    assert len(annotated) == 2
    flag = MassAgeFlag(int(annotated["mass_age_flag"][1]))
    assert MassAgeFlag.OUTSIDE_HULL in flag and MassAgeFlag.OUTSIDE_RANGE in flag
    assert annotated["mass"].mask.tolist() == [False, True]
    extrapolated = add_mass_age(table, model="giants", allow_extrapolation=True)
    assert not extrapolated["mass"].mask.any()
    assert MassAgeFlag.EXTRAPOLATED in MassAgeFlag(int(extrapolated["mass_age_flag"][1]))
    assert extrapolated["mass_age_flag"][0] == 0


def test_inside_range_but_outside_hull(giants):
    """A star inside every feature's range can still be outside the hull: the exact test."""
    table = typical_star(giants, n=1)
    bounds = {f["name"]: (f["min"], f["max"]) for f in giants.card["features"]}
    low_cn, high_cn = bounds["c_n"]
    low_n, high_n = bounds["n_fe"]
    # High [C/N] *and* nitrogen-rich: each within range, the combination is not a giant.
    c_n = low_cn + 0.95 * (high_cn - low_cn)
    table["N_FE"][0] = low_n + 0.95 * (high_n - low_n)
    table["C_FE"][0] = c_n + table["N_FE"][0]
    with pytest.warns(FlaggedRowsWarning, match="outside the convex hull"):
        annotated = add_mass_age(table, model=giants)
    assert annotated["mass_age_flag"][0] == MassAgeFlag.OUTSIDE_HULL


def test_invalid_seismic_input_is_flagged():
    table = typical_star(get_model("red-clump-seismic"), n=2)
    table["DNU"][1] = -table["DNU"][1]
    annotated = add_mass_age(table, model="red-clump-seismic")
    assert MassAgeFlag.INVALID_INPUT in MassAgeFlag(int(annotated["mass_age_flag"][1]))
    assert annotated["age"].mask.tolist() == [False, True]


def test_unit_conversion_gives_identical_predictions():
    red_clump = get_model("red-clump-seismic")
    canonical = typical_star(red_clump, n=4)
    canonical["DNU"] = canonical["DNU"] * np.array([0.95, 1.0, 1.02, 1.05])
    converted = canonical.copy()
    converted["TEFF"] = (canonical["TEFF"].quantity).to(u.deg_C, equivalencies=u.temperature())
    converted["DNU"] = canonical["DNU"].quantity.to(u.mHz)
    converted["LOGG"] = canonical["LOGG"].quantity.to(u.dex(u.m / u.s**2))
    first = add_mass_age(canonical, model=red_clump)
    second = add_mass_age(converted, model=red_clump)
    for name in ("mass", "mass_p16", "age", "age_p84"):
        np.testing.assert_allclose(second[name], first[name], rtol=1e-9)


def test_qtable_and_table_subclass(stars):
    class MyTable(Table):
        pass

    qtable = QTable(stars)
    annotated = add_mass_age(qtable, model="giants")
    assert isinstance(annotated, QTable)
    assert annotated["mass"].unit == u.solMass
    reference = add_mass_age(stars, model="giants")
    np.testing.assert_array_equal(np.ma.getmaskarray(annotated["mass"]),
                                  np.ma.getmaskarray(reference["mass"]))
    assert isinstance(add_mass_age(MyTable(stars), model="giants"), MyTable)


def test_existing_columns_need_overwrite(stars):
    annotated = add_mass_age(stars, model="giants")
    with pytest.raises(ExistingColumnError, match="mass, mass_p16"):
        add_mass_age(annotated, model="giants")
    again = add_mass_age(annotated, model="giants", overwrite=True)
    np.testing.assert_array_equal(again["mass"].filled(0), annotated["mass"].filled(0))


@pytest.mark.parametrize("name", ["MASS", "Mass", "AGE_P16", "In_Hull"])
def test_a_column_differing_only_in_case_is_an_existing_column(stars, name, tmp_path):
    """FITS and VOTable readers do not tell MASS from mass: the same error as an exact
    clash, and overwrite=True replaces it instead of writing both."""
    table = stars.copy()
    table[name] = np.ones(len(table))
    with pytest.raises(ExistingColumnError, match=name):
        add_mass_age(table, model="giants")
    replaced = add_mass_age(table, model="giants", overwrite=True)
    assert name not in replaced.colnames
    lower = [column.lower() for column in replaced.colnames]
    assert len(lower) == len(set(lower))
    path = tmp_path / "out.fits"
    write_quietly(replaced, path)
    assert "mass" in Table.read(path).colnames or "MASS" in Table.read(path).colnames
    assert table.colnames[-1] == name  # the caller's table is untouched


def test_overwrite_removes_outputs_of_an_earlier_run_that_are_not_rewritten(stars, giants):
    """M5 (#26): a mass-only model after a mass-and-age run leaves no stale age columns,
    nor quantile columns the new run does not write."""
    from stellar_ml_ages.model import MassAgeModel

    card = {**giants.card, "name": "mass-only", "aliases": [],
            "targets": [t for t in giants.card["targets"] if t["name"] == "mass"]}
    mass_only = MassAgeModel.from_parts(card, {"mass": giants.forests["mass"]}, giants.domain,
                                         {"mass": giants.networks["mass"]})
    first = add_mass_age(stars, model="giants", quantiles=(0.025, 0.975))
    first["age_note"] = "kept"  # not an output column
    again = add_mass_age(first, model=mass_only, overwrite=True)
    assert not {"age", "age_p16", "age_p84", "age_p2_5", "age_p97_5", "mass_p2_5",
                "mass_p97_5"} & set(again.colnames)
    assert {"mass", "mass_p16", "mass_p84", "in_hull", "mass_age_flag", "age_note"} <= set(
        again.colnames)
    # Other prefixes are another run's columns and stay.
    prefixed = add_mass_age(first, model=mass_only, prefix="v3_")
    assert {"age", "age_p2_5", "v3_mass"} <= set(prefixed.colnames)


def test_run_notes_describe_the_last_run_only(stars):
    """MLUNITS and MLSCALE are the last run's: an earlier note it would not write goes,
    and MLAFFIX says which columns the ML* keys describe."""
    unitless = stars.copy()
    unitless["TEFF"].unit = None
    first = add_mass_age(unitless, model="giants")
    assert "TEFF as K" in first.meta["MLUNITS"] and first.meta["MLAFFIX"] == "{}"
    first["TEFF"].unit = "K"
    again = add_mass_age(first, model="giants", overwrite=True)
    assert "MLUNITS" not in again.meta
    assert "MLUNITS" in first.meta  # the caller's table keeps its own
    assert add_mass_age(stars, model="giants", suffix="_v3").meta["MLAFFIX"] == "{}_v3"


def test_error_columns_can_be_named_by_feature_err_keys(stars):
    """M6 (#26): the documented ``{"<feature>_err": column}`` mapping keys work."""
    table = stars.copy()
    table["sigma_teff"] = 300.0 * table["TEFF"].unit
    wide = add_mass_age(table, model="giants", mapping={"teff_err": "sigma_teff"},
                        propagate_errors=True)
    plain = add_mass_age(table, model="giants")
    width = np.ma.median(wide["mass_p84"] - wide["mass_p16"])
    assert width > 1.1 * np.ma.median(plain["mass_p84"] - plain["mass_p16"])
    with pytest.raises(MissingColumnError, match="'tef_err' names the error column of 'tef'"):
        add_mass_age(table, model="giants", mapping={"tef_err": "sigma_teff"})


def test_impossible_errors_flag_their_rows_and_name_the_column(giants):
    """L5 (#26): a negative, infinite or absurd (1e300 K) error is not propagated as if
    it were a measurement: the row is flagged INVALID_INPUT and the column named."""
    table = typical_star(giants, 6)
    table["TEFF_ERR"] = [50.0, -50.0, np.inf, 1e300, np.nan, 0.0] * u.K
    with pytest.warns(FlaggedRowsWarning, match="error column 'TEFF_ERR' is negative, "
                                                "infinite or wider .* in 3 rows"):
        out = add_mass_age(table, model="giants", propagate_errors=True)
    flagged = (np.asarray(out["mass_age_flag"]) & MassAgeFlag.INVALID_INPUT) != 0
    assert flagged.tolist() == [False, True, True, True, False, False]
    assert out["mass"].mask.tolist() == flagged.tolist()
    # Without propagation the error columns are not read, so nothing is withheld.
    assert not add_mass_age(table, model="giants")["mass"].mask.any()


def test_a_stars_propagated_interval_does_not_depend_on_its_neighbours(stars):
    """M1 (#26): error-propagation draws are seeded per row from its own inputs, so row
    order, the block size and the rest of the table leave a star's interval as it is."""
    from stellar_ml_ages import conf

    table = stars.copy()
    table["TEFF_ERR"] = 120.0 * table["TEFF"].unit
    table["N_FE_ERR"] = 0.08 * table["N_FE"].unit
    whole = add_mass_age(table, model="giants", propagate_errors=True)
    reversed_rows = add_mass_age(table[::-1], model="giants", propagate_errors=True)[::-1]
    with conf.set_temp("chunk_size", 7):
        small_blocks = add_mass_age(table, model="giants", propagate_errors=True)
    star = int(np.flatnonzero(~np.ma.getmaskarray(whole["age"]))[-1])
    alone = add_mass_age(table[star:star + 1], model="giants", propagate_errors=True)
    for other in (reversed_rows, small_blocks):
        for name in ("mass_p16", "mass_p84", "age_p16", "age_p84"):
            np.testing.assert_array_equal(np.ma.filled(other[name], np.nan),
                                          np.ma.filled(whole[name], np.nan), err_msg=name)
    assert alone["age_p16"][0] == whole["age_p16"][star]


def test_correlated_draws_of_a_star_do_not_depend_on_its_neighbours(stars):
    """As above, with [X/Fe] made from three columns ([X/M] + [M/H] - [Fe/H]): the
    draws' design then sums three products per feature, which a BLAS matrix product
    orders differently for one row and for many."""
    table = stars.copy()
    table["M_H"] = table["FE_H"] + 0.03 * u.dex
    for element in ("C", "N"):
        table[f"{element}_M"] = table[f"{element}_FE"] - table["M_H"] + table["FE_H"]
        del table[f"{element}_FE"]
    for name, error in (("TEFF", 110 * u.K), ("N_M", 0.09 * u.dex), ("C_M", 0.07 * u.dex),
                        ("M_H", 0.05 * u.dex), ("FE_H", 0.06 * u.dex)):
        table[f"{name}_ERR"] = error
    whole = add_mass_age(table, model="giants", propagate_errors=True)
    predicted = np.flatnonzero(~np.ma.getmaskarray(whole["age"]))
    assert len(predicted) > 100
    for star in predicted[::20]:
        alone = add_mass_age(table[star:star + 1], model="giants", propagate_errors=True)
        for name in ("mass_p16", "mass_p84", "age_p16", "age_p84"):
            assert alone[name][0] == whole[name][star], (star, name)


def test_model_selection_and_clear_errors(stars, giants):
    assert add_mass_age(stars).meta["MLMODEL"] == giants.name
    with pytest.raises(MissingColumnError, match="no packaged model applies"):
        add_mass_age(stars["TEFF", "LOGG"])
    with pytest.raises(TypeError, match="astropy Table"):
        add_mass_age({"TEFF": [4500]})
    broken = stars.copy()
    broken["TEFF"].unit = u.dex
    with pytest.raises(ColumnUnitError, match="'TEFF' has unit 'dex'"):
        add_mass_age(broken, model="giants")


def test_empty_and_single_row_tables(stars):
    empty = add_mass_age(stars[:0], model="giants")
    assert len(empty) == 0 and empty["mass"].unit == u.solMass
    single = add_mass_age(stars[:1], model="giants")
    assert len(single) == 1


def test_provenance_in_meta(stars, giants):
    annotated = add_mass_age(stars, model="giants")
    assert annotated.meta["MLMODEL"] == "giants-apogee-dr17"
    assert annotated.meta["MLSHA256"] == giants.card["arrays"]["sha256"]
    assert "Pinsonneault" in annotated.meta["MLCITE"]
    assert "c_n=C_FE - N_FE" in annotated.meta["MLINPUTS"]


def test_chunked_evaluation_matches_single_block(stars):
    from stellar_ml_ages import conf

    whole = add_mass_age(stars, model="red-clump")
    with conf.set_temp("chunk_size", 7):
        chunked = add_mass_age(stars, model="red-clump")
    for name in ("mass", "age_p16", "mass_age_flag", "in_hull"):
        np.testing.assert_array_equal(np.ma.filled(chunked[name], -1),
                                      np.ma.filled(whole[name], -1))


@pytest.mark.parametrize("fmt", ["votable", "fits", "ascii.ecsv"])
def test_file_round_trip_keeps_units_descriptions_and_masks(stars, tmp_path, fmt):
    annotated = add_mass_age(stars, model="red-clump")
    # Only the columns the package writes: dex input units are not storable in FITS/VOTable.
    annotated = annotated[["ID", *(n for n in OUTPUT_COLUMNS if n in annotated.colnames)]]
    path = tmp_path / "out.dat"
    annotated.write(path, format=fmt)
    back = Table.read(path, format=fmt)
    for name in ("mass", "age_p84"):
        assert u.Unit(back[name].unit) == annotated[name].unit
        assert back[name].description == annotated[name].description
        np.testing.assert_array_equal(np.ma.getmaskarray(back[name]),
                                      np.ma.getmaskarray(annotated[name]))
    np.testing.assert_array_equal(back["in_hull"], annotated["in_hull"])
    if fmt == "votable":
        text = io.BytesIO()
        annotated.write(text, format="votable")
        assert b'ucd="phys.mass"' in text.getvalue() and b'ucd="time.age"' in text.getvalue()


def test_error_propagation_widens_intervals(giants):
    table = typical_star(giants, n=1)
    for column, error in (("TEFF", 100.0), ("LOGG", 0.1), ("FE_H", 0.05), ("ALPHA_M", 0.05),
                          ("C_FE", 0.05), ("N_FE", 0.05)):
        table[f"{column}_ERR"] = [error] * table[column].unit
    from stellar_ml_ages import LabelNoiseWarning

    with pytest.warns(LabelNoiseWarning, match="propagate_errors=True"):  # what it measures
        plain = add_mass_age(table, model=giants)
    noisy = add_mass_age(table, model=giants, propagate_errors=True, n_draws=64)
    assert (noisy["mass_p84"][0] - noisy["mass_p16"][0]) > (plain["mass_p84"][0]
                                                           - plain["mass_p16"][0])
    assert noisy["mass"][0] == pytest.approx(plain["mass"][0], rel=0.1)
    assert noisy.meta["MLERRPRP"] is True


def test_carbon_to_nitrogen_traces_mass(giants):
    """Dredge-up lowers [C/N] more in more massive giants: mass must fall as [C/N] rises."""
    table = typical_star(giants, n=7)
    mean_n = table["N_FE"][0]
    table["N_FE"] = (mean_n + np.linspace(0.12, -0.12, 7)) * u.dex  # [C/N] rises along rows
    mass = np.asarray(add_mass_age(table, model=giants)["mass"])
    assert spearmanr(np.arange(7), mass).statistic < -0.8
    assert mass[0] > 1.1 * mass[-1]


def test_red_clump_mass_age_anticorrelation(stars):
    """Core-helium-burning stars live longer the less massive they are."""
    annotated = add_mass_age(stars, model="red-clump")
    ok = ~annotated["age"].mask
    assert spearmanr(annotated["mass"][ok], annotated["age"][ok]).statistic < -0.8


def test_all_rows_masked_or_not_finite(giants):
    """Nothing predictable: every row kept, masked and flagged, no error, one summary warning."""
    table = typical_star(giants, n=4)
    table["TEFF"] = MaskedColumn(table["TEFF"], mask=[True] * 4)
    table["LOGG"] = [np.nan, np.inf, -np.inf, np.nan] * table["LOGG"].unit
    with pytest.warns(FlaggedRowsWarning, match="Teff is missing") as caught:
        annotated = add_mass_age(table, model=giants)
    assert len(caught) == 1
    assert len(annotated) == 4
    assert annotated["mass"].mask.all()
    assert np.all(annotated["mass_age_flag"] & MassAgeFlag.MISSING_INPUT)
    assert not annotated["in_hull"].any()


@pytest.mark.parametrize("intervals, words", [("robust", "robust 84th percentile bound"),
                                              ("posterior", "84th percentile of prediction")])
def test_interval_columns_say_what_they_are(stars, tmp_path, intervals, words):
    """A robust end is not a percentile of one distribution; the description says which."""
    annotated = add_mass_age(stars, model="giants", intervals=intervals)
    assert annotated.meta["MLINTVL"] == intervals
    assert annotated["mass_p84"].description == f"Stellar mass, {words}"
    assert annotated["age_p16"].description.startswith("Stellar age, ")
    path = tmp_path / "annotated.fits"
    write_quietly(annotated, path)
    # Short enough for a FITS header card: read back unaltered.
    assert Table.read(path)["mass_p84"].description == f"Stellar mass, {words}"


def test_error_columns_noisier_than_the_training_labels_are_warned_about(stars):
    """#26: a table whose own errors exceed the model's training noise, given without
    propagation, would get intervals that are too narrow: one warning with the remedy."""
    from stellar_ml_ages import LabelNoiseWarning

    stars["TEFF_ERR"] = np.full(len(stars), 30.0) * u.K  # DR17-like: as trained
    stars["N_FE_ERR"] = np.full(len(stars), 0.2) * u.dex  # LAMOST-like: 4-5x the training's
    with pytest.warns(LabelNoiseWarning, match=r"\(N_FE_ERR, TEFF_ERR\).*widen the median "
                      r"68% interval of its first 200 rows by \d\d+% \(mass\)") as caught:
        add_mass_age(stars, model="giants")
    messages = [str(w.message) for w in caught if w.category is LabelNoiseWarning]
    assert len(messages) == 1
    assert "propagate_errors=True" in messages[0]
    with warnings.catch_warnings():
        warnings.simplefilter("error", LabelNoiseWarning)
        propagated = add_mass_age(stars, model="giants", propagate_errors=True)
        stars["N_FE_ERR"] = np.full(len(stars), 0.04) * u.dex
        add_mass_age(stars, model="giants")
        plain = add_mass_age(stars, model="giants")
    # Propagated, the intervals are wider than without the errors.
    ok = ~propagated["mass"].mask & ~plain["mass"].mask

    def width(annotated):
        return np.median(np.asarray(annotated["mass_p84"] - annotated["mass_p16"])[ok])

    assert width(propagated) > 1.2 * width(plain)


@pytest.mark.parametrize("propagate", [False, True])
def test_error_columns_with_nothing_to_predict(stars, propagate):
    """An empty table, or one whose every row lacks an input, with error columns: every row
    kept and flagged, no crash in the error draws (there is no row to draw for)."""
    stars["N_FE_ERR"] = np.full(len(stars), 0.2) * u.dex
    assert len(add_mass_age(stars[:0], model="giants", propagate_errors=propagate)) == 0
    stars["TEFF"] = np.nan * stars["TEFF"]
    with pytest.warns(FlaggedRowsWarning, match="Teff is missing"):
        annotated = add_mass_age(stars, model="giants", propagate_errors=propagate)
    assert len(annotated) == len(stars) and annotated["mass"].mask.all()
    assert np.all(annotated["mass_age_flag"] & MassAgeFlag.MISSING_INPUT)
