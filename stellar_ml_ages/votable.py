"""Write annotated tables as VOTables that keep units, UCDs, descriptions and provenance.

astropy's VOTable writer keeps column units, UCDs and descriptions, but it drops
``table.meta`` (the model name, version, checksum and citation that
`~stellar_ml_ages.add_mass_age` records), and it writes logarithmic units such
as ``dex(cm / s2)`` in a form no VOTable reader parses (VOUnit has no ``dex``).
`to_votable` fixes both: provenance goes into ``INFO`` elements, and
logarithmic units are written in the CDS notation that VizieR and TOPCAT use
(``[cm.s-2]`` for log g, ``[-]`` for abundance ratios), which
`stellar_ml_ages.units` reads back.

`read_votable` is the matching reader: it accepts those CDS strings without
turning the VOTable parser's unit warnings into errors.
"""

import io
import os
import warnings

import astropy.units as u
import numpy as np
from astropy.io.votable import exceptions as votable_exceptions
from astropy.io.votable import from_table, parse
from astropy.io.votable.tree import Info
from astropy.table import Column, MaskedColumn, Table

from .exceptions import ColumnValueError, VOTableReadError

__all__ = ["read_votable", "to_votable", "vo_unit_string", "votable_bytes", "write_votable"]

# Provenance keys written by add_mass_age; other meta entries are kept when simple.
_INFO_VALUE_TYPES = (str, bool, int, float)


def vo_unit_string(unit):
    """Unit string a VOTable reader understands.

    Linear units use the VOUnit syntax; logarithmic (``dex``) units use the CDS
    bracket notation, ``[unit]`` meaning log10 of that unit.

    Examples
    --------
    >>> import astropy.units as u
    >>> vo_unit_string(u.dex(u.cm / u.s**2))
    '[cm.s-2]'
    >>> vo_unit_string(u.dex)
    '[-]'
    >>> vo_unit_string(u.solMass)
    'solMass'
    """
    if unit is None:
        return None
    if isinstance(unit, u.UnrecognizedUnit):
        return unit.to_string()
    if unit == u.dex or (isinstance(unit, u.DexUnit)
                         and unit.physical_unit == u.dimensionless_unscaled):
        return "[-]"
    if isinstance(unit, u.DexUnit):
        return f"[{unit.physical_unit.to_string('cds')}]"
    if isinstance(unit, u.FunctionUnitBase):
        # mag and other function units have no portable spelling; keep astropy's.
        return unit.to_string()
    try:
        return unit.to_string("vounit")
    except (ValueError, u.UnitsError):
        return unit.to_string("cds")


def to_votable(table, name=None):
    """Convert a table to a `~astropy.io.votable.tree.VOTableFile`.

    Parameters
    ----------
    table : `~astropy.table.Table`
        Typically the output of `~stellar_ml_ages.add_mass_age`.
    name : str, optional
        ``name`` attribute of the VOTable ``TABLE`` (shown by TOPCAT).

    Returns
    -------
    `~astropy.io.votable.tree.VOTableFile`
        Columns keep units, UCDs (from ``column.meta["ucd"]``) and descriptions;
        scalar ``table.meta`` entries become ``INFO`` elements of the resource
        (without XML IDs, which could clash with a column's). Missing values stay
        missing: masked booleans are written as ``boolean`` (``bit`` has no null),
        and None in an object column as an empty cell, not the text ``None``.

    Raises
    ------
    ColumnValueError
        A column is an astropy mixin (`~astropy.coordinates.SkyCoord`,
        `~astropy.time.Time`) that VOTable cannot hold; the message names it and
        how to write it as plain columns.

    Examples
    --------
    >>> from stellar_ml_ages import add_mass_age, demo_table
    >>> votable = to_votable(add_mass_age(demo_table(), model="giants"))
    >>> field = votable.get_first_table().get_field_by_id("mass")
    >>> field.unit, field.ucd
    (Unit("solMass"), 'phys.mass')
    >>> [info.value for info in votable.resources[0].infos if info.name == "MLMODEL"]
    ['giants-apogee-dr17']
    """
    plain = Table(table, copy=False)
    plain.meta = {}
    _refuse_mixins(plain)
    notes = _without_uint64(plain)
    _none_as_null(plain)
    with warnings.catch_warnings():
        # astropy warns about every dex unit here; we rewrite those strings below.
        warnings.simplefilter("ignore", votable_exceptions.VOWarning)
        votable = from_table(plain)
        vo_table = votable.get_first_table()
        for field in vo_table.fields:
            column = table[field.name]
            ucd = column.info.meta.get("ucd") if column.info.meta else None
            if ucd:
                field.ucd = ucd
            field.unit = vo_unit_string(column.unit)
            if field.name in notes:
                field.description = " ".join(filter(None, [field.description,
                                                           notes[field.name]]))
            if field.datatype == "bit" and np.ma.getmaskarray(plain[field.name]).any():
                # A bit has no null value (an empty cell is an error); a boolean's is
                # the empty cell, so masked flags stay missing instead of invalid.
                field.datatype = "boolean"
    if name:
        vo_table.name = str(name)
    resource = votable.resources[0]
    for key, value in table.meta.items():
        if isinstance(value, _INFO_VALUE_TYPES):
            info = Info(name=str(key), value=str(value))
            # astropy gives an INFO its name as XML ID: a meta key equal to a column
            # name (DaCHS and VizieR tables carry meta "ID") defined the ID twice.
            info.ID = None
            resource.infos.append(info)
    return votable


def _refuse_mixins(table):
    """A clear error for columns VOTable cannot hold (astropy fails on them without one).

    ``table`` is a `~astropy.table.Table`, where quantities are already plain columns.
    """
    for name in table.colnames:
        column = table[name]
        if isinstance(column, Column):
            continue
        kind = type(column).__name__
        if kind == "SkyCoord":
            how = (f"table[{name + '_ra'!r}] = table[{name!r}].icrs.ra.deg and "
                   f"table[{name + '_dec'!r}] = table[{name!r}].icrs.dec.deg")
        elif kind == "Time":
            how = f"table[{name + '_mjd'!r}] = table[{name!r}].mjd"
        else:
            how = "plain columns of numbers or text"
        raise ColumnValueError(
            f"column {name!r} is a {kind} (an astropy mixin column), which a VOTable cannot "
            f"hold: write it as plain columns first ({how}) and remove it "
            f"(del table[{name!r}])")


def _none_as_null(table):
    """None in an object column as a masked value, in place: the package reads None as
    missing, and the VOTable writer would write the text 'None'."""
    for name in table.colnames:
        column = table[name]
        if column.dtype.kind != "O":
            continue
        values = np.asarray(column, dtype=object)
        missing = np.array([value is None for value in values.ravel()],
                           dtype=bool).reshape(values.shape)
        if not missing.any():
            continue
        filled = values.copy()
        filled[missing] = ""
        mask = np.ma.getmaskarray(column) | missing
        table[name] = MaskedColumn(filled, mask=mask, name=name, unit=column.unit,
                                   description=column.info.description, meta=column.info.meta)


def _without_uint64(table):
    """Unsigned 64-bit columns (survey flag words) as VOTable ``long``, in place.

    VOTable has no unsigned 64-bit type. Values below 2**63 are stored as they are;
    a column with larger ones keeps its bit pattern (two's complement), so bit tests
    still work, and its description says so. Returns ``{column: note}``.
    """
    notes = {}
    for name in table.colnames:
        column = table[name]
        if column.dtype != np.uint64:
            continue
        values = np.ma.getdata(column)
        if len(values) and values.max() >= np.uint64(2**63):
            converted = values.view(np.int64)
            notes[name] = ("(unsigned 64-bit in the source; stored as the same bits in a "
                           "signed long: values of 2**63 and above appear negative)")
        else:
            converted = values.astype(np.int64)
        mask = np.ma.getmaskarray(column)
        table[name] = MaskedColumn(converted, mask=mask, name=name, unit=column.unit,
                                   description=column.info.description,
                                   meta=column.info.meta) if mask.any() else Column(
            converted, name=name, unit=column.unit, description=column.info.description,
            meta=column.info.meta)
    return notes


def _write(votable, destination):
    if isinstance(destination, os.PathLike):
        destination = os.fspath(destination)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", votable_exceptions.VOWarning)
        votable.to_xml(destination)


def write_votable(table, destination, name=None):
    """Write `to_votable` ``(table, name)`` to a path or binary file object.

    Examples
    --------
    >>> import io
    >>> from stellar_ml_ages import add_mass_age, demo_table
    >>> from stellar_ml_ages.votable import read_votable, write_votable
    >>> buffer = io.BytesIO()
    >>> write_votable(add_mass_age(demo_table(), model="giants"), buffer, name="giants")
    >>> _ = buffer.seek(0)
    >>> read_votable(buffer)["mass"].unit
    Unit("solMass")
    """
    _write(to_votable(table, name=name), destination)


def votable_bytes(table, name=None):
    """The VOTable document `write_votable` would write, as bytes.

    Examples
    --------
    >>> from stellar_ml_ages import demo_table
    >>> from stellar_ml_ages.votable import votable_bytes
    >>> votable_bytes(demo_table()[:3], name="demo").startswith(b"<?xml")
    True
    """
    buffer = io.BytesIO()
    write_votable(table, buffer, name=name)
    return buffer.getvalue()


def read_votable(source):
    """Read the first table of a VOTable, keeping unit strings astropy cannot parse.

    CDS logarithmic units such as ``[cm.s-2]`` come back as
    `~astropy.units.UnrecognizedUnit`, which `stellar_ml_ages.units` understands;
    the parser's warnings about them are silenced rather than raised. ``INFO``
    elements of the resource are returned in ``meta``.

    Parameters
    ----------
    source : str, path-like or file-like

    Returns
    -------
    `~astropy.table.Table`

    Raises
    ------
    VOTableReadError
        The VOTable cannot be parsed, whatever the parser's own exception.

    Examples
    --------
    >>> import io
    >>> from stellar_ml_ages import VOTableReadError
    >>> from stellar_ml_ages.votable import read_votable
    >>> try:
    ...     read_votable(io.BytesIO(b"<VOTABLE>truncated"))
    ... except VOTableReadError as error:
    ...     print("refused")
    refused
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", votable_exceptions.VOWarning)
        warnings.simplefilter("ignore", u.UnitsWarning)
        try:
            votable = parse(source, verify="ignore")
            vo_table = votable.get_first_table()
            table = vo_table.to_table(use_names_over_ids=True)
        except Exception as error:  # the parser raises a dozen types (found by fuzzing)
            name = getattr(source, "name", source if isinstance(source, str | os.PathLike)
                           else "the VOTable")
            raise VOTableReadError(
                f"could not read {str(name)!r} as a VOTable: {type(error).__name__}: {error}"
            ) from error
    for resource in votable.resources:
        for info in resource.infos:
            table.meta.setdefault(info.name, info.value)
    return table
