import warnings

import astropy.units as u
import numpy as np
import pytest
from astropy.table import Column, MaskedColumn, QTable, Table

from stellar_ml_ages.columns import resolve_columns, resolve_error_columns
from stellar_ml_ages.exceptions import AssumedUnitWarning, ColumnUnitError, ColumnValueError
from stellar_ml_ages.units import column_to_canonical, feature_matrix


@pytest.mark.parametrize(("values", "unit", "feature", "expected"), [
    ([4500.0], u.K, "teff", [4500.0]),
    ([4226.85], u.deg_C, "teff", [4500.0]),
    ([4.0], u.mHz, "dnu", [4000.0]),
    ([4.0], u.uHz, "dnu", [4.0]),
    ([0.5], u.dex(u.m / u.s**2), "logg", [2.5]),
    ([2.5], u.dex(u.cm / u.s**2), "logg", [2.5]),
    ([2.5], u.dex, "logg", [2.5]),
    ([316.227766], u.cm / u.s**2, "logg", [2.5]),
    ([0.1], u.dex, "c_fe", [0.1]),
    ([0.1], u.dimensionless_unscaled, "c_fe", [0.1]),
    ([0.1], u.Unit("[-]", format="cds"), "c_fe", [0.1]),
    ([0.1], u.Unit("[Sun]", format="cds"), "fe_h", [0.1]),
    ([300.0], u.s, "dpi", [300.0]),
    ([5.0], u.min, "dpi", [300.0]),
])
def test_units_convert_to_canonical(values, unit, feature, expected):
    converted, assumed = column_to_canonical(Column(values, unit=unit), feature, "x")
    np.testing.assert_allclose(converted, expected, rtol=1e-9)
    assert not assumed


@pytest.mark.parametrize("unit_string", ["log(cm.s**-2)", "[cm/s2]"])
def test_survey_log_gravity_strings(unit_string):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", u.UnitsWarning)
        column = Column([2.5], unit=u.Unit(unit_string, parse_strict="silent"))
    assert column_to_canonical(column, "logg", "LOGG")[0][0] == 2.5


@pytest.mark.parametrize(("unit", "feature"), [
    (u.dex, "teff"), (u.K, "c_fe"), (u.s, "dnu"), (u.uHz, "dpi"), (u.K, "logg"), (u.mag, "fe_h"),
])
def test_wrong_unit_names_column_and_unit(unit, feature):
    with pytest.raises(ColumnUnitError) as info:
        column_to_canonical(Column([1.0], unit=unit), feature, "MYCOL")
    assert "MYCOL" in str(info.value) and unit.to_string() in str(info.value)


def test_missing_unit_is_assumed_with_one_warning():
    table = Table({"TEFF": [4500.0], "LOGG": [2.5]})
    with pytest.warns(AssumedUnitWarning, match=r"TEFF as K; LOGG as dex\(cm / s2\)"):
        matrix = feature_matrix(table, resolve_columns(table, ["teff", "logg"]))
    np.testing.assert_array_equal(matrix.values, [[4500.0, 2.5]])


def test_masks_nan_and_invalid_values():
    table = QTable()
    table["TEFF"] = MaskedColumn([4500.0, 4600.0, np.nan, 4700.0, 500.0], unit=u.K,
                                 mask=[False, True, False, False, False])
    table["DNU"] = [4.0, 4.0, 4.0, -4.0, 4.0] * u.uHz
    matrix = feature_matrix(table, resolve_columns(table, ["teff", "dnu"]))
    assert matrix.missing.tolist() == [False, True, True, False, False]
    assert matrix.invalid.tolist() == [False, False, False, True, True]
    assert np.isnan(matrix.values[1, 0])  # the masked value never leaks through


def test_text_numbers_bytes_and_bad_text():
    numbers = Column(np.array([b"4500.5", b"  ", b"4600"]), unit=u.K)
    values, _ = column_to_canonical(numbers, "teff", "TEFF")
    np.testing.assert_array_equal(values, [4500.5, np.nan, 4600.0])
    with pytest.raises(ColumnValueError, match=r"row 1 \(counting the first as 0\) is 'hot'"):
        column_to_canonical(Column(["4500", "hot"], unit=u.K), "teff", "TEFF")


def test_non_numeric_and_multidimensional_columns():
    with pytest.raises(ColumnValueError, match="dtype bool"):
        column_to_canonical(Column([True], unit=u.K), "teff", "TEFF")
    with pytest.raises(ColumnValueError, match=r"shape \(2, 3\)"):
        column_to_canonical(Column(np.ones((2, 3)), unit=u.K), "teff", "TEFF")


def test_big_endian_columns():
    column = Column(np.array([4500.0], dtype=">f8"), unit=u.K)
    assert column_to_canonical(column, "teff", "TEFF")[0].dtype == np.float64


def test_errors_convert_scale_not_zero_point_and_add_in_quadrature():
    table = Table()
    table["TEFF"] = Column([4226.85], unit=u.deg_C)
    table["TEFF_ERR"] = Column([50.0], unit=u.deg_C)
    table["MG_H"] = Column([0.1], unit=u.dex)
    table["MG_H_ERR"] = Column([0.03], unit=u.dex)
    table["FE_H"] = Column([-0.1], unit=u.dex)
    table["FE_H_ERR"] = Column([0.04], unit=u.dex)
    resolved = resolve_columns(table, ["teff", "mg_fe"])
    matrix = feature_matrix(table, resolved, resolve_error_columns(table, resolved))
    np.testing.assert_allclose(matrix.values, [[4500.0, 0.2]])
    np.testing.assert_allclose(matrix.errors, [[50.0, 0.05]])


def test_unit_strings_a_fits_reader_left_unrecognised():
    """astropy < 7 writes dex(cm / s2) verbatim to TUNIT and cannot read it back."""
    column = Column([2.5], unit=u.UnrecognizedUnit("dex(cm / s2)"))
    values, assumed = column_to_canonical(column, "logg")
    assert values.tolist() == [2.5] and not assumed
    with pytest.raises(ColumnUnitError, match=r"'LOGG'.*furlong"):
        column_to_canonical(Column([2.5], unit=u.UnrecognizedUnit("furlong")), "logg",
                            name="LOGG")


def test_dex_from_a_votable_is_dex(tmp_path):
    """astropy writes an abundance's unit as unit="dex"; its VOTable reader (VOUnit has
    no dex) reads that back as a tenth of a unit called "ex". The columns must still
    read as dex, through astropy's reader and the package's."""
    from astropy.io.votable.exceptions import W50

    from stellar_ml_ages import add_mass_age, demo_table
    from stellar_ml_ages.votable import read_votable

    path = tmp_path / "stars.vot"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", W50)  # astropy's "Invalid unit string 'dex'"
        demo_table().write(path, format="votable")
        plain = Table.read(path, format="votable")
    assert 'unit="dex"' in path.read_text()
    values, assumed = column_to_canonical(plain["FE_H"], "fe_h")
    np.testing.assert_array_equal(values, np.ma.filled(demo_table()["FE_H"], np.nan))
    assert not assumed
    expected = np.ma.filled(add_mass_age(demo_table(), model="giants")["mass"], np.nan)
    for table in (plain, read_votable(path)):
        annotated = add_mass_age(table, model="giants")
        np.testing.assert_allclose(np.ma.filled(annotated["mass"], np.nan), expected,
                                   rtol=1e-12)


def test_log_g_errors_convert_as_differences():
    """0.05 dex(m/s2) is a 0.05 dex error, not 2.05; a linear error is refused, by name."""
    from stellar_ml_ages import ColumnUnitError, get_model
    from stellar_ml_ages.columns import resolve_columns, resolve_error_columns
    from stellar_ml_ages.units import feature_matrix
    from tests.helpers import typical_star

    model = get_model("giants")
    table = typical_star(model, 1)
    table["LOGG"] = (table["LOGG"].quantity.value - 2) * u.dex(u.m / u.s**2)
    table["LOGG_ERR"] = [0.05] * u.dex(u.m / u.s**2)
    resolved = resolve_columns(table, model.feature_names)
    matrix = feature_matrix(table, resolved, resolve_error_columns(table, resolved))
    logg = model.feature_names.index("logg")
    assert matrix.values[0, logg] == pytest.approx(model.card["features"][logg]["mean"])
    assert matrix.errors[0, logg] == pytest.approx(0.05)
    table["LOGG_ERR"] = [5.0] * (u.cm / u.s**2)
    with pytest.raises(ColumnUnitError, match=r"'LOGG_ERR'.*dex"):
        feature_matrix(table, resolved, resolve_error_columns(table, resolved))
