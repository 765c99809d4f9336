import pytest
from astropy.table import Table

from stellar_ml_ages.columns import (
    ColumnSource,
    DerivedSource,
    resolve_columns,
    resolve_error_columns,
)
from stellar_ml_ages.exceptions import AmbiguousColumnError, MissingColumnError, StellarMLAgesError


def test_aliases_are_case_insensitive_across_surveys():
    apogee = Table(names=["TEFF", "logg", "Fe_H", "c_fe"])
    vizier = Table(names=["Teff", "log(g)", "[Fe/H]", "[C/Fe]"])
    for table in (apogee, vizier):
        resolved = resolve_columns(table, ["teff", "logg", "fe_h", "c_fe"])
        assert [str(s) for s in resolved.values()] == table.colnames


def test_seismic_aliases():
    table = Table(names=["Deltanu", "DPi1"])
    resolved = resolve_columns(table, ["dnu", "dpi"])
    assert resolved == {"dnu": ColumnSource("Deltanu"), "dpi": ColumnSource("DPi1")}


def test_ratio_derived_from_abundances_relative_to_hydrogen():
    table = Table(names=["MG_H", "FE_H"])
    resolved = resolve_columns(table, ["mg_fe"])
    assert isinstance(resolved["mg_fe"], DerivedSource)
    assert resolved["mg_fe"].parts == (ColumnSource("MG_H"), ColumnSource("FE_H"))
    assert str(resolved["mg_fe"]) == "MG_H - FE_H"


def test_direct_column_wins_over_derivation():
    table = Table(names=["MG_H", "FE_H", "MG_FE"])
    assert resolve_columns(table, ["mg_fe"])["mg_fe"] == ColumnSource("MG_FE")


def test_missing_columns_are_all_listed_with_aliases():
    table = Table(names=["TEFF"])
    with pytest.raises(MissingColumnError) as info:
        resolve_columns(table, ["teff", "c_fe", "dnu"])
    message = str(info.value)
    assert "[C/Fe] (c_fe)" in message and "Δν (dnu)" in message
    assert "C_FE" in message and "Deltanu" in message and "teff" not in message.split("\n")[1:]
    assert isinstance(info.value, StellarMLAgesError) and isinstance(info.value, KeyError)


def test_duplicated_aliases_are_ambiguous_and_mapping_resolves():
    table = Table(names=["TEFF", "Teff", "LOGG"])
    with pytest.raises(AmbiguousColumnError, match="TEFF, Teff"):
        resolve_columns(table, ["teff"])
    resolved = resolve_columns(table, ["teff"], mapping={"teff": "Teff"})
    assert resolved["teff"] == ColumnSource("Teff")


def test_mapping_by_label_and_alias_and_unknown_column():
    table = Table(names=["A3_C_Fe", "my_n"])
    resolved = resolve_columns(table, ["c_fe", "n_fe"], mapping={"[C/Fe]": "A3_C_Fe",
                                                                 "N_FE": "my_n"})
    assert str(resolved["c_fe"]) == "A3_C_Fe" and str(resolved["n_fe"]) == "my_n"
    with pytest.raises(MissingColumnError, match="'nope'"):
        resolve_columns(table, ["c_fe"], mapping={"c_fe": "nope"})
    with pytest.raises(MissingColumnError, match="not a known feature"):
        resolve_columns(table, ["c_fe"], mapping={"carbon": "A3_C_Fe"})


def test_error_columns_by_survey_convention():
    table = Table(names=["TEFF", "TEFF_ERR", "[C/Fe]", "e_[C/Fe]", "Teff_x", "MG_H", "FE_H",
                         "MG_H_ERR", "FE_H_ERR", "N_FE"])
    resolved = resolve_columns(table, ["teff", "c_fe", "mg_fe", "n_fe"])
    errors = resolve_error_columns(table, resolved)
    assert errors["teff"] == ColumnSource("TEFF_ERR")
    assert errors["c_fe"] == ColumnSource("e_[C/Fe]")
    assert errors["mg_fe"] == (ColumnSource("MG_H_ERR"), ColumnSource("FE_H_ERR"))
    assert errors["n_fe"] is None
