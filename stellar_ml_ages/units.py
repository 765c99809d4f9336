"""Check the units of input columns and convert them to the models' units.

Second step of the annotation pipeline: given the columns found by
`stellar_ml_ages.columns`, produce plain float64 arrays in each feature's
canonical unit, together with which entries are missing (masked, NaN, inf) or
physically invalid. Numeric kernels downstream only ever see these arrays.

Accepted units, by feature kind:

=============  ===========================================================
temperature    anything convertible to K (``deg_C`` included)
log_gravity    ``dex(cm/s2)`` or any log of an acceleration, plain ``dex``,
               dimensionless, a linear acceleration (its log10 in cgs is
               taken), or the strings ``log(cm.s**-2)``, ``[cm/s2]``
abundance      ``dex``, ``dex(---)``/``[-]``, ``dex(Sun)``, dimensionless
frequency      anything convertible to uHz
period         anything convertible to s
=============  ===========================================================

A column without a unit is read in the canonical unit, with an
`~stellar_ml_ages.exceptions.AssumedUnitWarning`.
"""

import warnings
from dataclasses import dataclass

import astropy.units as u
import numpy as np
from astropy.table import Column

from .columns import ColumnSource, DerivedSource, SubstituteSource
from .exceptions import AssumedUnitWarning, ColumnUnitError, ColumnValueError
from .features import get_feature

__all__ = ["FeatureMatrix", "InputErrors", "column_to_canonical", "feature_matrix"]

# Unit strings seen in survey files that astropy does not parse.
_LOG_GRAVITY_STRINGS = {"log(cm.s**-2)", "log(cm/s2)", "log(cm/s**2)", "log(cm.s-2)",
                        "[cm/s2]", "[cm.s-2]", "dex", "cgs", "log(cgs)", "dex(cgs)"}
_ABUNDANCE_STRINGS = {"dex", "[-]", "[sun]", "[solar]", "dex(sun)", "[dex]"}


def _unit_string(unit):
    return unit.to_string().replace(" ", "").lower()


def _reparsed(unit):
    """A unit a file reader left unrecognised, parsed once more in astropy's own syntax.

    FITS files written by astropy < 7 store ``dex(cm / s2)`` verbatim in TUNIT,
    which the FITS unit parser then refuses; the generic parser reads it. The VOTable
    reader (VOUnit, which has no dex) reads a plain ``unit="dex"``, what astropy
    writes for an abundance, as a tenth of a unit called "ex" (deci-ex): that is
    ``dex``.
    """
    if isinstance(unit, u.PrefixUnit) and unit.name == "dex":
        return u.dex
    if isinstance(unit, u.UnrecognizedUnit):
        reparsed = u.Unit(unit.name, format="generic", parse_strict="silent")
        if not isinstance(reparsed, u.UnrecognizedUnit):
            return reparsed
    return unit


def _convert_log_gravity(values, unit):
    target = u.dex(u.cm / u.s**2)
    if isinstance(unit, u.UnrecognizedUnit):
        return values if _unit_string(unit) in _LOG_GRAVITY_STRINGS else None
    if unit == u.dimensionless_unscaled or unit == u.dex:
        return values
    if isinstance(unit, u.DexUnit):
        if unit.physical_unit == u.dimensionless_unscaled:
            return values
        if unit.physical_unit.physical_type == "acceleration":
            return unit.to(target, values)
        return None
    if isinstance(unit, u.UnitBase) and unit.physical_type == "acceleration":
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.log10(unit.to(u.cm / u.s**2, values))
    return None


def _convert_abundance(values, unit):
    if isinstance(unit, u.UnrecognizedUnit):
        return values if _unit_string(unit) in _ABUNDANCE_STRINGS else None
    if unit == u.dimensionless_unscaled or unit == u.dex:
        return values
    if isinstance(unit, u.DexUnit):
        physical = unit.physical_unit
        if physical == u.dimensionless_unscaled or physical.to_string() == "Sun":
            return values
    return None


def _convert_linear(target, equivalencies=()):
    def convert(values, unit):
        if isinstance(unit, u.UnrecognizedUnit | u.FunctionUnitBase):
            return None
        try:
            return unit.to(target, values, equivalencies=equivalencies)
        except u.UnitsError:
            return None

    return convert


_CONVERTERS = {
    "temperature": _convert_linear(u.K, u.temperature()),
    "log_gravity": _convert_log_gravity,
    "abundance": _convert_abundance,
    "frequency": _convert_linear(u.uHz),
    "period": _convert_linear(u.s),
}


def _raw_values(column, name):
    """Return (numeric float64 values, mask, unit) of any table column type."""
    if getattr(column, "ndim", 1) != 1:
        raise ColumnValueError(
            f"column {name!r} has shape {column.shape}; a feature column must be one value per row"
        )
    mask = np.zeros(len(column), dtype=bool)
    column_mask = getattr(column, "mask", None)
    if column_mask is not None and column_mask is not np.ma.nomask:
        mask |= np.asarray(column_mask, dtype=bool)
    if isinstance(column, u.Quantity):
        data = column.unmasked if hasattr(column, "unmasked") else column
        unit, raw = column.unit, np.asarray(data.value)
    else:
        unit, raw = column.unit, np.asarray(np.ma.getdata(column))
    return _as_float(raw, mask, name), mask, unit


class _NotANumber(ColumnValueError):
    """Text where a number belongs; ``row`` counts from the top of the table given."""

    def __init__(self, column, row, text):
        self.column, self.row, self.text = column, row, text
        super().__init__(self.describe(row))

    def describe(self, row):
        return (f"column {self.column!r} holds text that is not a number: row {row} "
                f"(counting the first as 0) is {self.text!r}")


def _as_float(raw, mask, name):
    kind = raw.dtype.kind
    if kind in "iuf":
        return raw.astype(np.float64)
    if kind in "SUO":
        values = np.full(len(raw), np.nan)
        for i, item in enumerate(raw):
            if item is None:  # an object column's missing entry, as pandas reads it
                continue
            text = item.decode() if isinstance(item, bytes) else str(item)
            if mask[i] or not text.strip():
                continue
            try:
                values[i] = float(text)
            except ValueError:
                raise _NotANumber(name, i, text) from None
        return values
    raise ColumnValueError(f"column {name!r} has dtype {raw.dtype}, which is not numeric")


def column_to_canonical(column, feature, name="<column>"):
    """Convert one column to its feature's canonical unit.

    Parameters
    ----------
    column : `~astropy.table.Column`, `~astropy.table.MaskedColumn` or `~astropy.units.Quantity`
    feature : `~stellar_ml_ages.features.Feature` or str
    name : str
        Column name, used in error messages.

    Returns
    -------
    values : `~numpy.ndarray`
        float64 values in ``feature.unit``; missing entries are NaN.
    assumed_unit : bool
        True if the column had no unit and the canonical one was assumed.

    Raises
    ------
    ColumnUnitError
        If the unit cannot describe the feature (e.g. Teff in dex).
    ColumnValueError
        If the column is not numeric or not one-dimensional.

    Examples
    --------
    >>> import astropy.units as u
    >>> from astropy.table import Column
    >>> from stellar_ml_ages.units import column_to_canonical
    >>> values, assumed = column_to_canonical(Column([4500.0], unit=u.deg_C), "teff")
    >>> print(values, assumed)
    [4773.15] False
    """
    feature = get_feature(feature) if isinstance(feature, str) else feature
    values, mask, unit = _raw_values(column, name)
    unit = _reparsed(unit)
    values = np.where(mask, np.nan, values)
    if unit is None:
        return values, True
    converted = _CONVERTERS[feature.kind](values, unit)
    if converted is None:
        raise ColumnUnitError(
            f"column {name!r} has unit {unit.to_string()!r}, which cannot express "
            f"{feature.label} ({feature.kind}); expected {feature.unit.to_string()!r} "
            "or a convertible unit"
        )
    return np.asarray(converted, dtype=np.float64), False


@dataclass
class FeatureMatrix:
    """Input features of every row, in canonical units.

    Attributes
    ----------
    names : tuple of str
        Feature names, one per column of ``values``.
    values : ndarray, shape (n_rows, n_features)
        float64, NaN where missing.
    errors : ndarray or None
        1-sigma uncertainties in the same units, NaN where unknown (for a derived
        feature, its parts' errors in quadrature).
    missing : ndarray of bool, shape (n_rows,)
        Any feature masked, NaN or infinite.
    invalid : ndarray of bool, shape (n_rows,)
        Any feature outside its physically possible range (e.g. Δν <= 0), or, with
        error sources, an error that is negative, infinite or wider than that range.
    sources : dict
        Feature name to the column(s) it was read from.
    """

    names: tuple
    values: np.ndarray
    errors: np.ndarray | None
    missing: np.ndarray
    invalid: np.ndarray
    sources: dict
    #: With error sources: 1-sigma errors of the *input columns*, (n_rows, n_columns),
    #: NaN where unknown; a feature that several columns feed (``[C/N] = C_FE - N_FE``)
    #: and columns that feed several features (``N_FE``) are related by ``error_design``.
    column_errors: np.ndarray | None = None
    #: (n_features, n_columns) coefficients: feature = sum of coefficient * column.
    error_design: np.ndarray | None = None
    #: The label (feature name) each error column measures, e.g. ``("c_fe", "n_fe")``.
    column_labels: tuple = ()
    #: Columns read without a unit, as ``"TEFF as K"``.
    assumed_units: tuple = ()
    #: Error columns with impossible values in some rows: ``(column, n_rows)``; those
    #: rows are ``invalid``.
    bad_errors: tuple = ()

    def input_errors(self, rows=slice(None)):
        """The column errors of ``rows`` as an `InputErrors`, or None without errors."""
        if self.column_errors is None:
            return None
        return InputErrors(self.column_errors[rows], self.error_design, self.column_labels)


@dataclass
class InputErrors:
    """1-sigma errors of input columns and how the columns make the features.

    Monte Carlo draws perturb each *column* once and recompute every feature from
    the perturbed columns, so a column that feeds two features (``N_FE`` in
    [C/N] and [N/Fe]) moves both together, with the right (anti)correlation.

    Attributes
    ----------
    column_errors : ndarray, shape (n_rows, n_columns)
        Errors in the canonical unit of each column's label; NaN where unknown.
    design : ndarray, shape (n_features, n_columns)
        feature = sum over columns of coefficient * column.
    labels : tuple of str
        The feature name each column measures.
    """

    column_errors: np.ndarray
    design: np.ndarray
    labels: tuple


def _stand_in(source, feature):
    """The feature a `SubstituteSource` really reads, and its own source."""
    if isinstance(source, SubstituteSource):
        return source.source, get_feature(source.feature)
    return source, feature


def _read_source(table, source, feature, assumed):
    source, feature = _stand_in(source, feature)
    if isinstance(source, DerivedSource):
        # Sum over distinct columns with merged coefficients, so a column entering
        # with +1 and -1 ([N/M] + [M/H] - [M/H] standing in for [Fe/H]) cancels
        # exactly rather than to rounding.
        total = np.zeros(len(table))
        coefficients, features = {}, {}
        for column, coefficient, label, _ in _linear_terms(source, feature, None):
            coefficients[column] = coefficients.get(column, 0.0) + coefficient
            features[column] = get_feature(label)
        for column, coefficient in coefficients.items():
            if coefficient != 0.0:
                total = total + coefficient * _read_source(
                    table, ColumnSource(column), features[column], assumed)
        return total
    values, was_assumed = column_to_canonical(table[source.column], feature, source.column)
    if was_assumed:
        assumed.append(f"{source.column} as {feature.unit.to_string() or 'dimensionless'}")
    return values


def _read_error(table, source, feature, assumed):
    """One error column in the feature's canonical unit (NaN everywhere if None)."""
    if source is None:
        return np.full(len(table), np.nan)
    unit = _reparsed(getattr(table[source.column], "unit", None))
    if feature.kind == "log_gravity" and unit is not None and not (
            isinstance(unit, (u.DexUnit, u.UnrecognizedUnit))
            or unit in (u.dex, u.dimensionless_unscaled)):
        raise ColumnUnitError(
            f"error column {source.column!r} of {feature.label} has the linear unit "
            f"{unit.to_string()!r}; a log g error is a difference of logarithms: give it "
            "in dex")
    values = _read_source(table, source, feature, assumed)
    if feature.kind in ("temperature", "log_gravity") and unit is not None:
        # An uncertainty is a difference: for an affine scale f(x) = a*x + b the
        # error converts as f(err) - f(0), which drops the zero point (deg_C -> K,
        # dex(m/s2) -> dex(cm/s2) adds 2 to values, nothing to errors).
        zero, _ = column_to_canonical(Column([0.0], unit=unit), feature)
        values = values - zero[0]
    return values


def feature_matrix(table, resolved, error_sources=None, *, warn=True):
    """Read every resolved feature into one float64 matrix.

    Parameters
    ----------
    table : `~astropy.table.Table`
    resolved : dict
        Feature name to source, from `~stellar_ml_ages.columns.resolve_columns`.
    error_sources : dict, optional
        From `~stellar_ml_ages.columns.resolve_error_columns`; when given, the
        ``errors`` attribute is filled.
    warn : bool
        Warn about columns without units; False leaves that to the caller, which
        reads them from ``assumed_units`` (`~stellar_ml_ages.add_mass_age` warns
        once per call, not once per block).

    Returns
    -------
    FeatureMatrix

    Warns
    -----
    AssumedUnitWarning
        Once, naming every column read without a unit.

    Examples
    --------
    >>> from stellar_ml_ages import demo_table
    >>> from stellar_ml_ages.columns import resolve_columns
    >>> from stellar_ml_ages.units import feature_matrix
    >>> stars = demo_table()
    >>> matrix = feature_matrix(stars, resolve_columns(stars, ["teff", "dnu"]))
    >>> matrix.values.shape
    (200, 2)
    """
    names = tuple(resolved)
    assumed = []
    columns, invalid = [], np.zeros(len(table), dtype=bool)
    for name in names:
        feature = get_feature(name)
        values = _read_source(table, resolved[name], feature, assumed)
        low, high = _stand_in(resolved[name], feature)[1].valid_range
        with np.errstate(invalid="ignore"):
            invalid |= np.isfinite(values) & ~((values > low) & (values < high))
        columns.append(values)
    errors = column_errors = design = None
    labels, bad_errors = (), ()
    if error_sources is not None:
        column_errors, design, labels, error_names = _column_error_terms(
            table, resolved, error_sources, assumed)
        bad_rows, bad_errors = _impossible_errors(column_errors, labels, error_names)
        invalid |= bad_rows
        column_errors[bad_rows] = np.nan  # withheld rows: nothing of them is propagated
        # Each feature's own error: its columns' errors in quadrature (a difference's
        # parts are taken as independent); NaN where any of them is unknown.
        errors = np.column_stack([
            np.sqrt(np.sum((column_errors[:, row != 0] * row[row != 0]) ** 2, axis=1))
            for row in design
        ]) if names else np.empty((len(table), 0))
    values = np.column_stack(columns) if columns else np.empty((len(table), 0))
    if assumed and warn:
        warnings.warn(
            "no unit on column(s): " + "; ".join(dict.fromkeys(assumed))
            + ". Give the columns units to silence this warning.",
            AssumedUnitWarning,
            stacklevel=3,
        )
    missing = ~np.all(np.isfinite(values), axis=1)
    return FeatureMatrix(
        names=names,
        values=values,
        errors=errors,
        missing=missing,
        invalid=invalid,
        sources={name: str(resolved[name]) for name in names},
        column_errors=column_errors,
        error_design=design,
        column_labels=labels,
        assumed_units=tuple(dict.fromkeys(assumed)),
        bad_errors=bad_errors,
    )


def _linear_terms(source, feature, error_source, sign=1.0):
    """(column, coefficient, label, error source) of every column a feature is read from."""
    source, feature = _stand_in(source, feature)
    if isinstance(source, DerivedSource):
        terms_of = source.terms()
        parts = error_source if isinstance(error_source, tuple) else (None,) * len(terms_of)
        terms = []
        for (part_sign, name, part), error in zip(terms_of, parts, strict=True):
            terms += _linear_terms(part, get_feature(name), error, sign * part_sign)
        return terms
    return [(source.column, sign, feature.name, error_source)]


def _column_error_terms(table, resolved, error_sources, assumed):
    """Per-column errors and the design that maps them onto the features."""
    columns, labels, errors, found, names = {}, [], [], [], []
    rows = []
    for name in resolved:
        row = {}
        for column, coefficient, label, error_source in _linear_terms(
                resolved[name], get_feature(name), error_sources[name]):
            if column not in columns:
                columns[column] = len(columns)
                labels.append(label)
                errors.append(_read_error(table, error_source, get_feature(label), assumed))
                found.append(error_source is not None)
                names.append(None if error_source is None else str(error_source))
            elif error_source is not None and not found[columns[column]]:
                # Another feature reading the same column knows its error column.
                errors[columns[column]] = _read_error(table, error_source, get_feature(label),
                                                      assumed)
                found[columns[column]] = True
                names[columns[column]] = str(error_source)
            row[columns[column]] = row.get(columns[column], 0.0) + coefficient
        rows.append(row)
    design = np.zeros((len(resolved), len(columns)))
    for i, row in enumerate(rows):
        for j, coefficient in row.items():
            design[i, j] = coefficient
    values = np.column_stack(errors) if errors else np.empty((len(table), 0))
    return values, design, tuple(labels), tuple(names)


def _impossible_errors(column_errors, labels, names):
    """Rows whose error in some column is negative, infinite or wider than every
    possible value of its label (1e300 K), and ``(column, n_rows)`` per such column."""
    bad_rows = np.zeros(len(column_errors), dtype=bool)
    found = []
    for j, (label, name) in enumerate(zip(labels, names, strict=True)):
        low, high = get_feature(label).valid_range
        span = high - low if np.isfinite(high - low) else np.inf
        error = column_errors[:, j]
        with np.errstate(invalid="ignore"):
            bad = (error < 0) | np.isposinf(error) | np.isneginf(error) | (error > span)
        if bad.any():
            bad_rows |= bad
            found.append((name, int(bad.sum())))
    return bad_rows, tuple(found)
