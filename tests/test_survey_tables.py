"""Real survey tables as users have them (issue "Real survey tables").

An APOGEE DR17 allStar-shaped table (its real column set: calibrated and
spectroscopic parameters, errors, bitmask flags, per-element flags, array
columns) must annotate with no mapping, using the calibrated columns; the
survey's own quality flags must withhold predictions; output names must not
collide; labels from another survey must be called out; and a run that predicts
nothing must say why, once.
"""

import re
import warnings

import astropy.units as u
import numpy as np
import pytest
from astropy.table import MaskedColumn, Table

from stellar_ml_ages import (
    AmbiguousColumnError,
    AssumedUnitWarning,
    ExistingColumnError,
    FlaggedRowsWarning,
    LabelNoiseWarning,
    LabelSourceWarning,
    MassAgeFlag,
    MassAgeModel,
    StellarMLAgesWarning,
    add_mass_age,
    conf,
    get_model,
    list_models,
)
from stellar_ml_ages.cli import EXIT_IO, EXIT_OK, EXIT_REFUSED, main
from stellar_ml_ages.columns import resolve_columns
from stellar_ml_ages.labelsource import table_label_source
from stellar_ml_ages.quality import survey_quality
from stellar_ml_ages.registry import select_model
from tests.helpers import survey_like_table, write_quietly

DEX, LOGG_UNIT = u.dex, u.dex(u.cm / u.s**2)
STAR_BAD, NO_ASPCAP_RESULT, TEFF_WARN, M_H_BAD = 1 << 23, 1 << 31, 1 << 0, 1 << 19
MULTIPLE_SUSPECT = 1 << 41  # above 32 bits: DR17's ASPCAPFLAG is 64-bit
GRIDEDGE_BAD, CALRANGE_BAD, TEFF_CUT = 1 << 0, 1 << 1, 1 << 6
VERY_BRIGHT_NEIGHBOR, LOW_SNR = 1 << 3, 1 << 4


def allstar_like(n_rows=60, seed=3):
    """A synthetic table with APOGEE DR17 allStar's column set (not its data).

    Labels are drawn from the giants model's training distribution; the
    uncalibrated ``*_SPEC`` values are offset from the calibrated ones (by +80 K
    and -0.15 dex, about DR17's RGB log g calibration), so reading the wrong pair
    would change the masses. Flags are all 0 (good) unless a test sets them.
    """
    giants = get_model("giants")
    base = survey_like_table(giants, n_rows, seed=seed)
    rng = np.random.default_rng(seed)
    n_fe = np.asarray(base["N_FE"], dtype=float)
    table = Table()
    table["APOGEE_ID"] = [f"2M{19000000 + i:08d}+{4400000 + i:07d}" for i in range(n_rows)]
    table["TELESCOPE"] = ["apo25m"] * n_rows
    table["FIELD"] = ["K21"] * n_rows
    table["RA"] = rng.uniform(280, 300, n_rows)
    table["DEC"] = rng.uniform(36, 50, n_rows)
    table["SNR"] = rng.uniform(80, 400, n_rows).astype(np.float32)
    table["STARFLAG"] = np.zeros(n_rows, dtype=np.int64)
    table["STARFLAGS"] = [""] * n_rows
    table["ASPCAPFLAG"] = np.zeros(n_rows, dtype=np.int64)
    table["ASPCAPFLAGS"] = [""] * n_rows
    table["EXTRATARG"] = np.zeros(n_rows, dtype=np.int16)
    teff = np.nan_to_num(np.asarray(base["TEFF"], dtype=float), nan=4700.0)
    logg = np.nan_to_num(np.asarray(base["LOGG"], dtype=float), nan=2.5)
    table["TEFF"], table["TEFF_ERR"] = teff.astype(np.float32), np.full(n_rows, 60, np.float32)
    table["TEFF_SPEC"] = (teff + 80.0).astype(np.float32)
    table["LOGG"], table["LOGG_ERR"] = logg.astype(np.float32), np.full(n_rows, 0.03, np.float32)
    table["LOGG_SPEC"] = (logg - 0.15).astype(np.float32)
    fe_h = np.asarray(base["FE_H"], dtype=float)
    table["M_H"], table["M_H_ERR"] = fe_h.astype(np.float32), np.full(n_rows, 0.01, np.float32)
    table["ALPHA_M"] = np.asarray(base["ALPHA_M"], dtype=np.float32)
    table["ALPHA_M_ERR"] = np.full(n_rows, 0.01, np.float32)
    table["PARAM"] = np.zeros((n_rows, 9), dtype=np.float32)  # array columns exist too
    table["PARAMFLAG"] = np.zeros((n_rows, 9), dtype=np.int32)
    c_fe = np.asarray(base["C_N"], dtype=float) + n_fe
    for name, values in (("FE_H", fe_h), ("C_FE", c_fe), ("N_FE", n_fe),
                         ("MG_FE", np.asarray(base["ALPHA_M"], dtype=float) + 0.01)):
        table[name] = values.astype(np.float32)
        table[f"{name}_SPEC"] = (values + 0.05).astype(np.float32)
        table[f"{name}_ERR"] = np.full(n_rows, 0.02, np.float32)
        table[f"{name}_FLAG"] = np.zeros(n_rows, dtype=np.int32)
    return table


def calibrated_only(allstar):
    """The same stars with only the columns a user would have chosen by hand, with units."""
    table = Table()
    for name, unit in (("TEFF", u.K), ("LOGG", LOGG_UNIT), ("FE_H", DEX), ("ALPHA_M", DEX),
                       ("C_FE", DEX), ("N_FE", DEX)):
        table[name] = MaskedColumn(np.asarray(allstar[name], dtype=np.float64), unit=unit)
    return table


def quietly(function, *args, **kwargs):
    """Call with the expected warnings of unit-less survey files recorded, not raised."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = function(*args, **kwargs)
    unexpected = [w for w in caught
                  if not issubclass(w.category, (AssumedUnitWarning, FlaggedRowsWarning))]
    assert not unexpected, [str(w.message) for w in unexpected]
    return result, caught


# ------------------------------------------------------------------ allStar
def test_allstar_file_annotates_with_no_mapping_using_calibrated_columns(tmp_path):
    allstar = allstar_like()
    path = tmp_path / "allStar-like.fits"
    allstar.write(path)
    from_file = Table.read(path)
    annotated, caught = quietly(add_mass_age, from_file, model="giants")
    # allStar has no TUNIT: the documented units are assumed, and as the values look like
    # them nothing is asked of the user (item 8 of #26): the assumption is in the meta.
    assert not any(issubclass(w.category, AssumedUnitWarning) for w in caught)
    assert "C_FE as dex" in annotated.meta["MLUNITS"]
    assert "TEFF as K" in annotated.meta["MLUNITS"]
    reference = add_mass_age(calibrated_only(allstar), model="giants")
    predicted = ~np.ma.getmaskarray(annotated["mass"])
    assert predicted.sum() > 40
    np.testing.assert_array_equal(predicted, ~np.ma.getmaskarray(reference["mass"]))
    np.testing.assert_allclose(annotated["mass"][predicted], reference["mass"][predicted],
                               rtol=1e-6)
    assert "teff=TEFF" in annotated.meta["MLINPUTS"]
    assert "logg=LOGG" in annotated.meta["MLINPUTS"]
    assert annotated.meta["MLCHOICE"] == ("Teff: TEFF used, TEFF_SPEC passed over; "
                                          "log g: LOGG used, LOGG_SPEC passed over")
    assert annotated.meta["MLQUAL"] == ("ASPCAPFLAG (BAD mask); STARFLAG (BAD mask); "
                                        "C_FE_FLAG (BAD mask); N_FE_FLAG (BAD mask); "
                                        "FE_H_FLAG (BAD mask)")


def test_spec_columns_alone_are_used_and_said_to_be_used():
    allstar = allstar_like(5)
    spec_only = Table({"TEFF_SPEC": allstar["TEFF_SPEC"], "LOGG_SPEC": allstar["LOGG_SPEC"]})
    resolved = resolve_columns(spec_only, ["teff", "logg"])
    assert [str(resolved[name]) for name in ("teff", "logg")] == ["TEFF_SPEC", "LOGG_SPEC"]


def test_two_calibrated_spellings_are_still_ambiguous():
    table = Table(names=["TEFF", "Teff", "TEFF_SPEC"])
    with pytest.raises(AmbiguousColumnError, match="TEFF, Teff"):
        resolve_columns(table, ["teff"])


# ------------------------------------------------------------------ survey flags
@pytest.mark.parametrize(("column", "value", "bad"), [
    ("ASPCAPFLAG", STAR_BAD, True),
    ("ASPCAPFLAG", NO_ASPCAP_RESULT, True),
    ("ASPCAPFLAG", MULTIPLE_SUSPECT, True),
    ("ASPCAPFLAG", TEFF_WARN | M_H_BAD, False),  # a warning and an informational bit
    ("STARFLAG", VERY_BRIGHT_NEIGHBOR, True),
    ("STARFLAG", LOW_SNR, False),
    ("C_FE_FLAG", GRIDEDGE_BAD, True),
    ("N_FE_FLAG", TEFF_CUT, True),
    ("C_FE_FLAG", CALRANGE_BAD, False),  # not in DR17's BAD mask
    ("MG_FE_FLAG", GRIDEDGE_BAD, False),  # MG_FE is not read: ALPHA_M is
])
def test_apogee_bad_bits_withhold_the_prediction(column, value, bad):
    allstar = allstar_like()
    baseline, _ = quietly(add_mass_age, allstar, model="giants")
    row = int(np.flatnonzero(~np.ma.getmaskarray(baseline["mass"]))[0])
    allstar[column][row] = value
    annotated, _ = quietly(add_mass_age, allstar, model="giants", allow_extrapolation=True)
    flag = MassAgeFlag(int(annotated["mass_age_flag"][row]))
    assert (MassAgeFlag.SURVEY_FLAGGED in flag) is bad
    assert bool(np.ma.getmaskarray(annotated["mass"])[row]) is bad
    # Only that row changed.
    others = np.arange(len(allstar)) != row
    np.testing.assert_array_equal(np.ma.getmaskarray(annotated["mass"])[others],
                                  np.ma.getmaskarray(baseline["mass"])[others]
                                  & (np.asarray(baseline["mass_age_flag"])[others]
                                     & int(MassAgeFlag.OUTSIDE_HULL | MassAgeFlag.OUTSIDE_RANGE)
                                     == 0) | np.ma.getmaskarray(baseline["mass"])[others]
                                  & (np.asarray(baseline["mass_age_flag"])[others]
                                     & int(MassAgeFlag.MISSING_INPUT) != 0))


def test_survey_flags_can_be_ignored_and_then_change_nothing_else():
    allstar = allstar_like()
    allstar["ASPCAPFLAG"][:10] = STAR_BAD
    honoured, _ = quietly(add_mass_age, allstar, model="giants")
    ignored, _ = quietly(add_mass_age, allstar, model="giants", survey_flags=False)
    clean, _ = quietly(add_mass_age, allstar_like(), model="giants")
    assert np.all(np.asarray(honoured["mass_age_flag"][:10]) & MassAgeFlag.SURVEY_FLAGGED)
    assert np.ma.getmaskarray(honoured["mass"][:10]).all()
    np.testing.assert_array_equal(np.asarray(ignored["mass_age_flag"]),
                                  np.asarray(clean["mass_age_flag"]))
    np.testing.assert_array_equal(np.ma.filled(ignored["mass"], -1),
                                  np.ma.filled(clean["mass"], -1))
    assert ignored.meta["MLQUAL"] == "ignored (survey_flags=False)"


def test_text_and_masked_flags():
    table = Table({"TEFF": [4700.0, 4700.0, 4700.0],
                   "ASPCAPFLAGS": ["STAR_BAD,TEFF_WARN", "TEFF_WARN", ""],
                   "C_FE_FLAG": MaskedColumn([1, 1, 0], mask=[False, True, False])})
    check = survey_quality(table, ["TEFF", "C_FE"])
    assert check.bad.tolist() == [True, False, False]  # a masked flag is not a flag
    assert check.counts == {"ASPCAPFLAGS STAR_BAD": 1, "C_FE_FLAG GRIDEDGE_BAD": 1}


def test_galah_and_dd_payne_flags():
    galah = Table({"sobject_id": [1, 2, 3, 4], "teff": [4700.0] * 4, "fe_h": [0.0] * 4,
                   "flag_sp": [0, 1, 0, 0], "flag_fe_h": [0, 0, 16, 0], "Mg_fe": [0.1] * 4,
                   "flag_Mg_fe": [0, 0, 0, 32]})
    check = survey_quality(galah, ["teff", "fe_h", "Mg_fe"])
    assert check.bad.tolist() == [False, True, True, True]
    ddpayne = Table({"qflag_chi2": ["good", "bad", "GOOD", ""],
                     "flag_singlestar": ["YES", "YES", "NO", "YES"]})
    assert survey_quality(ddpayne, []).bad.tolist() == [False, True, True, False]


def test_a_flag_column_that_is_not_a_bitmask_is_refused_by_name():
    table = Table({"TEFF": [4700.0], "C_FE_FLAG": [0.5]})
    with pytest.raises(ValueError, match="C_FE_FLAG"):
        survey_quality(table, ["TEFF", "C_FE"])


# ------------------------------------------------------------------ output names
def test_prefix_keeps_the_tables_own_mass_and_age(stars):
    stars = stars.copy()
    stars["mass"] = np.full(len(stars), 1.23) * u.solMass
    stars["age"] = np.full(len(stars), 4.5) * u.Gyr
    with pytest.raises(ExistingColumnError, match="prefix"):
        add_mass_age(stars, model="giants")
    annotated, _ = quietly(add_mass_age, stars, model="giants", prefix="ml_")
    np.testing.assert_array_equal(annotated["mass"], stars["mass"])
    np.testing.assert_array_equal(annotated["age"], stars["age"])
    plain, _ = quietly(add_mass_age, stars[[c for c in stars.colnames if c not in ("mass", "age")]],
                       model="giants")
    for name in ("mass", "mass_p16", "age_p84", "in_hull", "mass_age_flag"):
        np.testing.assert_array_equal(np.ma.filled(annotated[f"ml_{name}"], -1),
                                      np.ma.filled(plain[name], -1))
        assert annotated[f"ml_{name}"].unit == plain[name].unit
    suffixed, _ = quietly(add_mass_age, stars, model="giants", suffix="_rf")
    assert {"mass_rf", "age_p16_rf", "mass_age_flag_rf"} <= set(suffixed.colnames)


@pytest.mark.parametrize("prefix", ["ml mass", "m/", 3])
def test_prefixes_that_break_file_formats_are_refused(stars, prefix):
    with pytest.raises((ValueError, TypeError), match="prefix"):
        add_mass_age(stars, model="giants", prefix=prefix)


def test_prefix_through_pandas_and_the_command_line(stars, tmp_path, capsys):
    from stellar_ml_ages.dataframes import annotate_pandas

    frame = stars.to_pandas()
    frame["mass"] = 9.9
    units = {name: str(stars[name].unit) for name in stars.colnames if stars[name].unit}
    annotated = annotate_pandas(frame, "giants", units=units, prefix="ml_")
    assert (annotated["mass"] == 9.9).all() and annotated["ml_mass"].notna().sum() > 100
    source = tmp_path / "stars.fits"
    table = stars.copy()
    table["mass"] = 9.9 * u.solMass
    write_quietly(table, source)
    output = tmp_path / "out.fits"
    assert main(["annotate", str(source), str(output), "--model", "giants"]) == EXIT_REFUSED
    assert "--prefix" in capsys.readouterr().err
    assert main(["annotate", str(source), str(output), "--model", "giants",
                 "--prefix", "ml_", "--no-progress"]) == EXIT_OK
    written = Table.read(output)
    assert np.all(written["mass"] == 9.9) and "ml_mass_age_flag" in written.colnames


# ------------------------------------------------------------------ label source
def _retagged(model, label_source, name):
    card = {**model.card, "name": name,
            "training_set": {**model.card["training_set"], "label_source": label_source}}
    return MassAgeModel.from_parts(card, model.forests, model.domain, model.networks)


@pytest.mark.parametrize(("describe", "survey"), [
    (lambda t: t.meta.update(LABELSRC="LAMOST DR5 DD-Payne"), "LAMOST DR5 DD-Payne"),
    (lambda t: t.meta.update(name="J/ApJS/245/34/catalog"), "LAMOST DR5 DD-Payne"),
    (lambda t: t.meta.update(ID="V_164_stellar5"), "LAMOST DR5 LASP"),
    (lambda t: t.add_column(np.arange(len(t)), name="obsid"), "LAMOST"),
    (lambda t: t.add_column(np.arange(len(t)), name="sobject_id"), "GALAH"),
])
def test_labels_from_another_survey_are_called_out(stars, describe, survey):
    table = stars.copy()
    describe(table)
    with pytest.warns(LabelSourceWarning) as caught:
        add_mass_age(table, model="giants")
    assert len(caught) == 1
    message = str(caught[0].message)
    assert survey in message and "APOGEE DR17" in message
    remedy = "train giants-lamost --from-vo" if survey.startswith("LAMOST") else "--table"
    assert remedy in message


def test_dd_payne_labels_under_vizier_names_are_recognised_without_obsid(stars):
    """Silent case 2 of #26: a DD-Payne table from VizieR, obsid dropped, still warns."""
    table = Table()
    for vizier, allstar in (("Teff", "TEFF"), ("logg", "LOGG"), ("[Fe/H]", "FE_H"),
                            ("[C/Fe]", "C_FE"), ("[N/Fe]", "N_FE"), ("[Mg/Fe]", "ALPHA_M")):
        table[vizier] = stars[allstar]
    table["[Ba/Fe]"] = np.zeros(len(table))
    source = table_label_source(table)
    assert source.name == "LAMOST DR5 DD-Payne" and "[Ba/Fe]" in source.evidence
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        add_mass_age(table, model="giants")
    messages = [str(w.message) for w in caught if issubclass(w.category, LabelSourceWarning)]
    assert len(messages) == 1 and "LAMOST DR5 DD-Payne (columns [C/Fe]" in messages[0]


def test_slam_labels_without_obsid_are_recognised_and_choose_giants_slam(stars):
    """A SLAM table (VizieR J/ApJS/246/9 names) that lost its obsid and its meta: its
    [C/M], [N/M] and g-band S/N still say SLAM, so model=None takes giants-slam and
    giants warns that its intervals assume APOGEE's noise. An APOGEE-like table with
    an S/N column but C_FE / N_FE is not taken for SLAM."""
    from stellar_ml_ages import get_model

    table = Table()
    for slam, allstar in (("Teff", "TEFF"), ("logg", "LOGG"), ("[M/H]", "FE_H"),
                          ("[alpha/M]", "ALPHA_M"), ("[C/M]", "C_FE"), ("[N/M]", "N_FE")):
        table[slam] = stars[allstar]
    table["snrg"] = np.full(len(table), 80.0)
    source = table_label_source(table)
    assert source.name == "LAMOST DR5 SLAM (APOGEE DR15 scale)" and "snrg" in source.evidence
    chosen, _ = quietly(add_mass_age, table)
    assert chosen.meta["MLMODEL"].startswith(get_model("giants-slam").name)
    with pytest.warns(LabelNoiseWarning, match="giants-slam"):
        add_mass_age(table, model="giants")
    apogee = stars.copy()
    apogee["SNR"] = np.full(len(apogee), 80.0)
    assert table_label_source(apogee) is None


def test_apogee_and_apogee_scale_tables_pass_silently(stars):
    allstar = allstar_like(20)
    assert table_label_source(allstar).scale == "APOGEE"
    quietly(add_mass_age, allstar, model="giants")  # no LabelSourceWarning
    slam = stars.copy()
    slam.meta["name"] = "J/ApJS/246/9/catalog"  # LAMOST SLAM: on the APOGEE DR15 scale
    with warnings.catch_warnings():
        warnings.simplefilter("error", LabelSourceWarning)
        # On the scale, but noisier than APOGEE: said by a LabelNoiseWarning instead.
        warnings.simplefilter("ignore", LabelNoiseWarning)
        add_mass_age(slam, model="giants")
    relabelled = stars.copy()
    relabelled.add_column(np.arange(len(relabelled)), name="obsid")
    relabelled.meta["LABELSRC"] = "APOGEE DR17"  # the user put them on the scale
    with warnings.catch_warnings():
        warnings.simplefilter("error", LabelSourceWarning)
        add_mass_age(relabelled, model="giants")


def test_apogee_labels_with_a_lamost_model_are_called_out(giants):
    lamost_model = _retagged(giants, "LAMOST DR5 DD-Payne", "giants-lamost-test")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        add_mass_age(allstar_like(20), model=lamost_model)
    labels = [str(w.message) for w in caught if w.category is LabelSourceWarning]
    assert len(labels) == 1
    assert re.search(r"APOGEE .* LAMOST DR5 DD-Payne.*model='giants'", labels[0])


def test_user_models_are_used_by_name_listed_and_preferred_for_their_survey(
        giants, tmp_path, monkeypatch, stars):
    lamost_model = _retagged(giants, "LAMOST DR5 DD-Payne", "giants-lamost-dr5")
    lamost_model.save(tmp_path)
    with conf.set_temp("user_model_dir", str(tmp_path)):
        assert get_model("giants-lamost-dr5").card["training_set"]["label_source"] == (
            "LAMOST DR5 DD-Payne")
        listed = list_models()
        row = listed[listed["name"] == "giants-lamost-dr5"][0]
        assert row["location"].startswith(str(tmp_path)) and row["label_source"] == (
            "LAMOST DR5 DD-Payne")
        assert set(listed["location"][:3]) == {"packaged"}
        lamost = stars.copy()
        lamost.meta["LABELSRC"] = "LAMOST DR5 DD-Payne"
        assert select_model(lamost).name == "giants-lamost-dr5"
        assert select_model(stars).name == "giants-apogee-dr17"
    monkeypatch.setenv("STELLAR_ML_AGES_MODELS", str(tmp_path))
    assert "giants-lamost-dr5" in list_models()["name"]


# ------------------------------------------------------------------ no silent failure
def test_linear_log_g_gives_one_warning_naming_the_cause(stars):
    table = stars.copy()
    table["LOGG"] = 10 ** np.asarray(table["LOGG"].value) * LOGG_UNIT  # mislabelled
    with pytest.warns(FlaggedRowsWarning, match="log g values look linear") as caught:
        annotated = add_mass_age(table, model="giants")
    assert len(caught) == 1 and "200 of 200 rows" in str(caught[0].message)
    assert annotated["mass"].mask.all()


def test_kilokelvin_without_unit_gives_the_cause_once_per_streamed_file(stars, tmp_path):
    from stellar_ml_ages.streaming import annotate_file

    table = stars.copy()
    table["TEFF"] = np.asarray(table["TEFF"].value) / 1000.0  # kK, and no unit
    source = tmp_path / "stars.fits"
    write_quietly(table, source)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        summary = annotate_file(source, tmp_path / "out.fits", input_format="fits",
                                output_format="fits", model="giants", block_rows=30)
    assert summary.n_blocks == 7 and summary.n_in_domain == 0
    kinds = [w.category for w in caught]
    assert kinds.count(FlaggedRowsWarning) == 1 and kinds.count(AssumedUnitWarning) == 1
    message = str(next(w.message for w in caught if w.category is FlaggedRowsWarning))
    assert "look like kK" in message and "200 of 200 rows" in message
    assert summary.reasons["INVALID_INPUT"] == 200


def test_no_warning_below_the_threshold_and_threshold_is_configurable(stars):
    table = stars.copy()
    table["TEFF"][:40] = np.nan
    with warnings.catch_warnings():
        warnings.simplefilter("error", FlaggedRowsWarning)
        add_mass_age(table, model="giants")
    with conf.set_temp("flagged_warning_fraction", 0.1):
        with pytest.warns(FlaggedRowsWarning, match="Teff is missing .* in 40 rows"):
            add_mass_age(table, model="giants")
    with conf.set_temp("flagged_warning_fraction", 2.0):
        with pytest.raises(ValueError, match="flagged_warning_fraction"):
            add_mass_age(table, model="giants")


def test_cli_prints_the_summary_and_the_cause(stars, tmp_path, capsys):
    table = stars.copy()
    table["LOGG"] = 10 ** np.asarray(table["LOGG"].value)
    table["LOGG"].unit = None
    source = tmp_path / "stars.ecsv"
    table.write(source)
    assert main(["annotate", str(source), str(tmp_path / "out.ecsv"), "--model", "giants"]) == 0
    captured = capsys.readouterr()
    assert "0 inside the domain" in captured.out and "200 INVALID_INPUT" in captured.out
    assert "stellar-ml-ages: warning: 200 of 200 rows" in captured.err
    assert "log g values look linear" in captured.err


# ------------------------------------------------------------------ smaller things
def test_cli_errors_use_command_line_syntax(tmp_path, capsys):
    table = Table({"TEFF": [4700.0] * 3 * u.K, "Teff": [4700.0] * 3 * u.K})
    source = tmp_path / "t.ecsv"
    table.write(source)
    assert main(["annotate", str(source), str(tmp_path / "o.ecsv"), "--model", "giants"]) == (
        EXIT_REFUSED)
    err = capsys.readouterr().err
    assert "--map teff=COLUMN" in err and "mapping=" not in err


def test_training_a_lamost_model_without_data_says_how(tmp_path, capsys):
    code = main(["train", "giants-lamost", "--out", str(tmp_path)])
    assert code == EXIT_IO
    err = capsys.readouterr().err
    assert "--from-vo" in err and "--table" in err


def test_training_without_out_needs_a_user_model_directory(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("STELLAR_ML_AGES_MODELS", raising=False)
    assert main(["train", "giants-lamost"]) == EXIT_IO
    assert "STELLAR_ML_AGES_MODELS" in capsys.readouterr().err


def test_dataframe_type_error_points_to_annotate_pandas(stars):
    with pytest.raises(TypeError, match="annotate_pandas"):
        add_mass_age(stars.to_pandas(), model="giants")


def test_derived_labels_are_float64_in_training_and_prediction():
    """[Mg/Fe] = [Mg/H] - [Fe/H] from float32 columns: the same bits on both paths."""
    from stellar_ml_ages.training.catalogs import _difference
    from stellar_ml_ages.units import feature_matrix

    rng = np.random.default_rng(1)
    mg_h = rng.normal(0, 0.3, 1000).astype(np.float32)
    fe_h = rng.normal(0, 0.3, 1000).astype(np.float32)
    table = Table({"MG_H": mg_h * DEX, "FE_H": fe_h * DEX})
    predicted = feature_matrix(table, resolve_columns(table, ["mg_fe"])).values[:, 0]
    trained = np.ma.getdata(_difference(mg_h, fe_h))
    np.testing.assert_array_equal(predicted, trained)
    assert np.any((mg_h - fe_h).astype(np.float64) != trained)  # float32 would differ


def test_text_flags_from_a_votable_are_read_and_numeric_dd_payne_flags_refused():
    # Variable-length VOTable text (TAP, SAMP) arrives as an object array.
    flags = np.array(["STAR_BAD", "", None], dtype=object)
    table = Table({"TEFF": [4700.0] * 3, "ASPCAPFLAGS": MaskedColumn(
        flags, mask=[False, False, True])})
    assert survey_quality(table, ["TEFF"]).bad.tolist() == [True, False, False]
    with pytest.raises(ValueError, match="qflag_chi2"):
        survey_quality(Table({"qflag_chi2": [0, 1]}), [])


def test_extrapolated_rows_are_not_counted_as_without_prediction(giants):
    from stellar_ml_ages.annotate import _annotate_call
    from tests.helpers import typical_star

    table = typical_star(giants, n=2)
    table["N_FE"][:] = 2.0  # far outside the hull
    summary = _annotate_call(table, giants, allow_extrapolation=True)
    assert summary.n_predicted == 2 and summary.reasons == {}
    assert len(summary.messages()) == 0
    withheld = _annotate_call(table, giants)
    assert withheld.reasons["OUTSIDE_RANGE"] == 2


@pytest.mark.parametrize("name", ["giants", "giants-slam", "red-clump-apogee-dr17"])
def test_a_user_model_named_like_a_packaged_one_never_replaces_it(giants, tmp_path, stars, name):
    """H1 (#26): a user model saved as "giants" (an alias) or under a packaged name is
    not what ``model="giants"`` runs; the user is told and pointed to its card path."""
    impostor = _retagged(giants, "LAMOST DR5 DD-Payne", name)
    card_path = impostor.save(tmp_path)
    packaged = get_model(name)
    with conf.set_temp("user_model_dir", str(tmp_path)):
        with pytest.warns(StellarMLAgesWarning, match=f"called '{name}'.*card path"):
            assert get_model(name) is packaged
        with pytest.warns(StellarMLAgesWarning):
            names = list(list_models()["name"])
        assert names.count(packaged.name) == 1 and name not in names[4:]
    # Its card path still reaches it.
    assert get_model(str(card_path)).card["training_set"]["label_source"] == (
        "LAMOST DR5 DD-Payne")


def test_a_broken_file_in_the_user_model_directory_is_skipped(tmp_path, stars):
    (tmp_path / "notes.json").write_text("{not a card")
    with conf.set_temp("user_model_dir", str(tmp_path)):
        with pytest.warns(StellarMLAgesWarning, match="skipping .*notes.json"):
            names = list(list_models()["name"])
    assert names[:3] == ["giants-apogee-dr17", "red-clump-apogee-dr17",
                         "red-clump-seismic-apogee-dr17"]
