"""Fetch survey tables over TAP by sky region, and cross-match on the server.

The functions return astropy Tables with units and column names that
`stellar_ml_ages.add_mass_age` understands, so "TAP query then annotate" is::

    stars = fetch_lamost(CircleSkyRegion(center, 0.5 * u.deg))
    annotated = add_mass_age(stars, model="giants")
"""


import astropy.units as u
import numpy as np
from astropy.table import MaskedColumn, Table, vstack

from ..exceptions import RegionError, TAPQueryError
from ..training.crossmatch import sky_coordinates
from .adql import format_degrees, quote_identifier, quote_table_name, region_to_adql
from .catalogs import CATALOGS, column_spellings, is_optional, positions_from_2mass
from .tap import run_query

__all__ = ["build_lamost_training_table", "fetch", "fetch_apokasc", "fetch_lamost",
           "fetch_lasp", "fetch_red_clump", "fetch_slam", "position_columns", "table_name",
           "tap_crossmatch"]


def _catalog(catalog):
    if isinstance(catalog, str):
        try:
            return CATALOGS[catalog]
        except KeyError:
            raise KeyError(f"unknown catalog {catalog!r}; known: {', '.join(CATALOGS)}") from None
    return catalog


#: (service URL, table) -> the column names its TAP_SCHEMA lists, for this session.
_SERVICE_COLUMNS = {}
#: (service URL, table-name prefix) -> the ADQL name of the table found under it.
_SERVICE_TABLES = {}


def _columns_of(url, table):
    """Column names of one table, from the service's own TAP_SCHEMA (cached); None without."""
    key = (url, table.strip().strip('"'))
    if key not in _SERVICE_COLUMNS:
        name = key[1].replace("'", "''")
        query = f"SELECT column_name FROM TAP_SCHEMA.columns WHERE table_name = '{name}'"
        try:
            found = run_query(url, query, maxrec=100_000)
        except TAPQueryError:
            return set()  # a service without TAP_SCHEMA.columns: use the first spellings
        _SERVICE_COLUMNS[key] = {str(value).strip().strip('"') for value in found["column_name"]}
    return _SERVICE_COLUMNS[key]


def _service_columns(catalog):
    """Column names of the catalog's table, from the service's own TAP_SCHEMA (cached)."""
    return _columns_of(catalog.url, table_name(catalog))


def _spelling(entry, available, lowered):
    """The entry's spelling the service has: exact, else by case.

    A regular identifier matched by case keeps the catalog's spelling (ADQL compares
    it without case, and services such as DaCHS list it in lower case in TAP_SCHEMA
    but return the declared case); a delimited one takes the service's.
    """
    spellings = column_spellings(entry)
    exact = next((s for s in spellings if s in available), None)
    if exact is not None:
        return exact
    for spelling in spellings:
        found = lowered.get(spelling.lower())
        if found is not None:
            return spelling if quote_identifier(spelling) == spelling else found
    return None


def table_name(catalog):
    """The ADQL name of a catalog's table: the configured one, else the one found.

    A catalog whose table item is empty names a prefix instead (SLAM: VizieR
    ``J/ApJS/246/9/``); the table is then the one under that prefix, in the
    service's ``TAP_SCHEMA.tables``, that has every required column.

    Raises
    ------
    TAPQueryError
        No table, or several, under the prefix have the columns.
    """
    catalog = _catalog(catalog)
    configured = (catalog.table or "").strip()
    if configured or not catalog.table_prefix:
        return configured
    key = (catalog.url, catalog.table_prefix)
    if key not in _SERVICE_TABLES:
        prefix = catalog.table_prefix.replace("'", "''")
        found = run_query(catalog.url, "SELECT table_name FROM TAP_SCHEMA.tables "
                                       f"WHERE table_name LIKE '{prefix}%'", maxrec=10_000)
        required = [entry for entry in (catalog.ra, catalog.dec, *catalog.columns)
                    if entry is not None and not is_optional(entry)]
        suitable, lacking = [], []
        # LIKE's "_" matches any character: keep the names that really start so.
        names = [str(value).strip() for value in found["table_name"]]
        for name in (n for n in names if n.startswith(catalog.table_prefix)):
            available = _columns_of(catalog.url, name)
            lowered = {column.lower(): column for column in available}
            missing = [" or ".join(column_spellings(entry)) for entry in required
                       if _spelling(entry, available, lowered) is None]
            (lacking.append(f"{name} (no {', '.join(missing)})") if missing
             else suitable.append(name))
        if len(suitable) != 1:
            what = ("several tables have them: " + ", ".join(suitable)) if suitable else (
                "tables: " + ("; ".join(lacking) or "none"))
            raise TAPQueryError(
                f"no single table under {catalog.table_prefix!r} has the columns of "
                f"{catalog.title} ({what}); set stellar_ml_ages.vo.conf.{catalog.table_item} "
                "to the table's ADQL name", service=catalog.url)
        _SERVICE_TABLES[key] = quote_table_name(suitable[0])
    return _SERVICE_TABLES[key]


def _choose_columns(catalog, entries):
    """Service column names for the catalog's entries (alternatives settled by TAP_SCHEMA).

    Optional entries (`~stellar_ml_ages.vo.catalogs.is_optional`) the service lacks
    are left out.
    """
    if all(isinstance(entry, str) for entry in entries):
        return list(entries)
    available = _service_columns(catalog)
    lowered = {name.lower(): name for name in available}
    chosen, unknown = [], []
    for entry in entries:
        spellings = column_spellings(entry)
        found = _spelling(entry, available, lowered)
        if found is None and is_optional(entry):
            continue
        if found is None and available and len(spellings) > 1:
            unknown.append(" or ".join(spellings))
        chosen.append(found or spellings[0])
    if unknown:
        raise TAPQueryError(
            f"table {table_name(catalog)} has no column {'; '.join(unknown)} (its columns: "
            f"{', '.join(sorted(available))}); pass columns=[...] with its names, or set "
            "the table name in stellar_ml_ages.vo.conf", service=catalog.url)
    return chosen


def position_columns(catalog):
    """The service's names of the catalog's RA and Dec columns, or (None, None)."""
    catalog = _catalog(catalog)
    if catalog.ra is None:
        return None, None
    ra, dec = _choose_columns(catalog, [catalog.ra, catalog.dec])
    return ra, dec


#: Beyond this a "cross-match" pairs unrelated stars (and makes the server join slow).
MAX_MATCH_RADIUS = 1 * u.deg


def _check_match_radius(radius):
    try:
        value = u.Quantity(radius).to(u.arcsec)
    except (TypeError, u.UnitsError):
        raise RegionError(f"the match radius must be an angle, got {radius!r}") from None
    if not (np.isscalar(value.value) or value.isscalar) or not (
            0 < value < MAX_MATCH_RADIUS):
        raise RegionError(f"the match radius must be above 0 and below {MAX_MATCH_RADIUS}, "
                          f"got {radius}")


def _select_list(names, alias=None):
    prefix = f"{alias}." if alias else ""
    return ", ".join(prefix + quote_identifier(name) for name in names)


def _finish(table, catalog):
    """Renames, units, and derived columns, so the resolver can read the table."""
    for old, new in catalog.rename.items():
        if old in table.colnames and new not in table.colnames:
            table.rename_column(old, new)
            table[new].meta["service_name"] = old
    for name, unit in catalog.units.items():
        if name in table.colnames:
            current = table[name].unit
            if current is None or isinstance(current, u.UnrecognizedUnit):
                table[name].unit = unit
    if catalog.key == "apokasc2":
        if "TMASS_ID" in table.colnames and "RA" not in table.colnames:
            ra, dec = positions_from_2mass(table["TMASS_ID"])
            table["RA"], table["DEC"] = ra, dec
        if "LOGAGE_MYR" in table.colnames:
            log_age = np.ma.masked_invalid(np.ma.asarray(table["LOGAGE_MYR"], dtype=float))
            # APOKASC-2 ages are log10(age / Myr).
            table["AGE"] = MaskedColumn(10**log_age / 1000.0, unit=u.Gyr)
    table.meta["CATALOG"] = catalog.title
    table.meta["CITATION"] = catalog.citation
    if catalog.label_source:
        table.meta["LABELSRC"] = catalog.label_source
    if catalog.prepare is not None:
        table = catalog.prepare(table)
    return table


def _position_names(catalog):
    """Every name the catalog's position columns may have, the service's and the package's."""
    names = {"RA", "DEC"}
    for entry in (catalog.ra, catalog.dec):
        if entry is not None:
            for spelling in column_spellings(entry):
                names.update({spelling, catalog.rename.get(spelling, spelling)})
    return names


def _matched_meta(out, found, before, catalog, placed):
    """Carry what `_finish` said of the catalog's columns over to a cross-match result.

    Parameters
    ----------
    out : `~astropy.table.Table`
        The result: the caller's rows and meta, plus the catalog's columns.
    found : `~astropy.table.Table`
        The catalog rows after `_finish`, whose meta has the catalog's keys.
    before : set
        The keys ``found.meta`` had before `_finish` (the service's own).
    catalog : `~stellar_ml_ages.vo.catalogs.Catalog`
    placed : dict
        Catalog column name to its name in ``out``.

    Notes
    -----
    ``LABELSRC`` names where the labels the annotation reads come from: it becomes the
    catalog's as soon as one of the catalog's columns other than the positions got
    its own name (the resolver reads those), replacing what the caller's table said;
    when every such column had to take a suffix, the caller's own labels are read and
    its ``LABELSRC`` (or none) stays. The catalog's other keys (``CATALOG``,
    ``CITATION``, what its ``prepare`` added) go where the caller's meta has none.
    """
    positions = _position_names(catalog)
    for key, value in found.meta.items():
        # The service's own keys describe one query (the last chunk's), not the result.
        if key in before or key in out.meta or key == "LABELSRC":
            continue
        out.meta[key] = value
    source = found.meta.get("LABELSRC")
    if source and any(name == target and name not in positions
                      for name, target in placed.items()):
        out.meta["LABELSRC"] = source


def _cone_filter(table, region, coordinates, radius):
    """Client-side cone for tables without server-side positions."""
    from regions import CircleSkyRegion

    if isinstance(region, CircleSkyRegion):
        coordinates, radius = region.center, region.radius
    elif region is not None:
        raise RegionError("this catalog has no position columns: only cones can be applied, "
                          "after download")
    # Rows without a position (NaN) compare False: they are outside every cone.
    return table[sky_coordinates(table).separation(coordinates) <= radius]


def fetch(catalog, region=None, *, coordinates=None, radius=None, columns=None, where=None,
          maxrec=None, mode="sync", on_overflow="raise", cache=None):
    """Fetch rows of a catalog, optionally inside a sky region.

    Parameters
    ----------
    catalog : str or `~stellar_ml_ages.vo.catalogs.Catalog`
        ``"lamost"``, ``"apokasc2"``, ``"red_clump"``, ``"lasp"`` or ``"slam"``.
    region : `regions.SkyRegion`, optional
        Circle, annulus, polygon, rectangle, or a compound of them.
    coordinates, radius : `~astropy.coordinates.SkyCoord`, `~astropy.units.Quantity`
        A cone, instead of ``region``.
    columns : sequence of str or "*", optional
        Service column names; default: the catalog's usual columns.
    where : str, optional
        Extra ADQL condition, ANDed with the region.
    maxrec : int, optional
        Row limit. Hitting it raises (or warns, with ``on_overflow="warn"``).
    mode : {"sync", "async"}
    on_overflow : {"raise", "warn"}
    cache : bool, optional
        Reuse results from the astropy cache.

    Returns
    -------
    `~astropy.table.Table`

    Examples
    --------
    >>> import astropy.units as u
    >>> from astropy.coordinates import SkyCoord
    >>> from stellar_ml_ages.vo import fetch
    >>> kepler = SkyCoord(290.5 * u.deg, 43.5 * u.deg)
    >>> stars = fetch("lamost", coordinates=kepler, radius=5 * u.arcmin)  # doctest: +REMOTE_DATA
    >>> stars.meta["TRUNCATED"]  # doctest: +REMOTE_DATA
    False
    """
    catalog = _catalog(catalog)
    names = catalog.columns if columns is None else columns
    select = "*" if names == "*" else _select_list(_choose_columns(catalog, names))
    conditions = []
    cone = region is not None or coordinates is not None
    if cone and catalog.ra is not None:
        conditions.append(region_to_adql(coordinates if region is None else region,
                                         *position_columns(catalog), radius=radius))
    if where:
        conditions.append(f"({where})")
    query = f"SELECT {select} FROM {table_name(catalog)}"
    if conditions:
        query += " WHERE " + " AND ".join(conditions)
    table = _finish(run_query(catalog.url, query, maxrec=maxrec, mode=mode,
                              on_overflow=on_overflow, cache=cache), catalog)
    if cone and catalog.ra is None:
        table = _cone_filter(table, region, coordinates, radius)
    return table


def fetch_lamost(region=None, **kwargs):
    """LAMOST DR5 DD-Payne labels (Xiang+2019) from VizieR; see `fetch` for arguments.

    Examples
    --------
    >>> import astropy.units as u
    >>> from astropy.coordinates import SkyCoord
    >>> from regions import CircleSkyRegion
    >>> from stellar_ml_ages import add_mass_age
    >>> from stellar_ml_ages.vo import fetch_lamost
    >>> region = CircleSkyRegion(SkyCoord(290.5 * u.deg, 43.5 * u.deg), 10 * u.arcmin)
    >>> giants = fetch_lamost(region)  # doctest: +REMOTE_DATA
    >>> annotated = add_mass_age(giants, model="giants")  # doctest: +REMOTE_DATA
    """
    return fetch("lamost", region, **kwargs)


def fetch_apokasc(region=None, **kwargs):
    """APOKASC-2 masses, ages and states (Pinsonneault+2018) from VizieR; see `fetch`.

    Table 5 has no position columns: RA/Dec are computed from the 2MASS designations
    (good to 0.1 arcsec), and only cones can be applied, after download.

    Examples
    --------
    >>> from stellar_ml_ages.vo import fetch_apokasc
    >>> apokasc = fetch_apokasc(maxrec=10,
    ...                         on_overflow="warn")  # doctest: +REMOTE_DATA +IGNORE_WARNINGS
    """
    return fetch("apokasc2", region, **kwargs)


def fetch_red_clump(region=None, **kwargs):
    """LAMOST red-clump stars with Δν and ΔP (Ting+2018) from VizieR; see `fetch`.

    Examples
    --------
    >>> from stellar_ml_ages.vo import fetch_red_clump
    >>> clump = fetch_red_clump(maxrec=10,
    ...                         on_overflow="warn")  # doctest: +REMOTE_DATA +IGNORE_WARNINGS
    """
    return fetch("red_clump", region, **kwargs)


def fetch_lasp(region=None, **kwargs):
    """LAMOST DR5 LASP parameters from the GAVO data centre; see `fetch`.

    Examples
    --------
    >>> import astropy.units as u
    >>> from astropy.coordinates import SkyCoord
    >>> from stellar_ml_ages.vo import fetch_lasp
    >>> lasp = fetch_lasp(coordinates=SkyCoord(290.5 * u.deg, 43.5 * u.deg),
    ...                   radius=5 * u.arcmin)  # doctest: +REMOTE_DATA
    """
    return fetch("lasp", region, **kwargs)


def fetch_slam(region=None, **kwargs):
    """LAMOST DR5 K giants with SLAM labels on the APOGEE scale (Zhang+2020); see `fetch`.

    The labels are the packaged giants models' inputs ([C/N] = [C/M] - [N/M]; [Fe/H]
    taken as [M/H], see `stellar_ml_ages.slam`). The label errors are already
    SLAM's (`~stellar_ml_ages.slam.slam_uncertainties`): annotate with
    ``propagate_errors=True`` so the intervals include them.

    Examples
    --------
    >>> import astropy.units as u
    >>> from astropy.coordinates import SkyCoord
    >>> from stellar_ml_ages import add_mass_age
    >>> from stellar_ml_ages.vo import fetch_slam
    >>> giants = fetch_slam(coordinates=SkyCoord(290.5 * u.deg, 43.5 * u.deg),
    ...                     radius=10 * u.arcmin)  # doctest: +REMOTE_DATA
    >>> annotated = add_mass_age(giants, model="giants",
    ...                          propagate_errors=True)  # doctest: +REMOTE_DATA
    """
    return fetch("slam", region, **kwargs)


@u.quantity_input(radius=u.arcsec)
def tap_crossmatch(table, catalog, radius=3 * u.arcsec, *, columns=None, ra=None, dec=None,
                   mode="sync", maxrec=None, on_overflow="raise", cache=None, chunk_rows=2000):
    """Add the nearest catalog match of every row, joining on the server (TAP_UPLOAD).

    Only a row index and the positions are uploaded; the service returns the
    catalog rows within ``radius`` of each position, and the nearest is kept. The
    caller's table is not modified; the result has every input row, in order, with
    the catalog's columns masked where nothing matched and a ``separation`` column.

    Parameters
    ----------
    table : `~astropy.table.Table`
        Your stars; positions from ``ra``/``dec`` or the usual RA/Dec column names.
    catalog : str or `~stellar_ml_ages.vo.catalogs.Catalog`
        A catalog with position columns (``"lamost"``, ``"red_clump"``, ``"lasp"``).
    radius : `~astropy.units.Quantity`
        Largest separation: above 0 and below 1 deg.
    columns : sequence of str, optional
        Catalog columns to add (default: the catalog's usual columns).
    chunk_rows : int
        Rows uploaded per query (at least 1), to stay under the services' upload
        limits.

    Returns
    -------
    `~astropy.table.Table`
        Every input row, in order; ``meta`` keeps the caller's entries and adds
        ``MATCHED``, ``TRUNCATED`` (True when a chunk's answer was cut at
        ``maxrec``), the catalog's ``CATALOG`` and ``CITATION`` where the caller has
        none, and ``LABELSRC`` when the catalog's labels are the ones read (see
        `stellar_ml_ages.vo`'s documentation).

    Raises
    ------
    RegionError
        The radius is not above 0 and below 1 deg, or the catalog has no positions.
    ValueError
        ``chunk_rows`` is below 1.

    Examples
    --------
    >>> import astropy.units as u
    >>> from astropy.table import Table
    >>> from stellar_ml_ages.vo import tap_crossmatch
    >>> mine = Table({"ra": [290.1, 291.3] * u.deg, "dec": [43.9, 42.8] * u.deg})
    >>> matched = tap_crossmatch(mine, "lamost", 3 * u.arcsec)  # doctest: +REMOTE_DATA
    >>> len(matched) == len(mine)  # doctest: +REMOTE_DATA
    True
    """
    catalog = _catalog(catalog)
    if catalog.ra is None:
        raise RegionError(f"{catalog.title} has no position columns to match on")
    _check_match_radius(radius)
    if int(chunk_rows) < 1:
        raise ValueError(f"chunk_rows must be at least 1, not {chunk_rows}")
    chunk_rows = int(chunk_rows)
    positions = sky_coordinates(table, ra, dec)
    upload = Table({"row_id": np.arange(len(table), dtype=np.int64),
                    "ra": positions.ra.deg, "dec": positions.dec.deg})
    valid = np.isfinite(upload["ra"]) & np.isfinite(upload["dec"])
    upload = upload[valid]
    if not len(upload):
        # Nothing to match, so the service is not asked: an empty upload is an error
        # to some services, and every row comes back unmatched all the same.
        out = table.copy(copy_data=True)
        name = "separation" if "separation" not in out.colnames else f"separation_{catalog.key}"
        out[name] = MaskedColumn(np.ma.masked_all(len(out), dtype=float), unit=u.arcsec,
                                 description=f"Distance to the {catalog.key} match")
        out.meta.update({"MATCHED": f"{catalog.title} within {radius}", "TRUNCATED": False})
        return out
    names = _choose_columns(catalog, list(catalog.columns if columns is None else columns))
    ra_column, dec_column = position_columns(catalog)
    point = f"POINT('ICRS', t.{quote_identifier(ra_column)}, t.{quote_identifier(dec_column)})"
    query = (
        f"SELECT u.row_id, {_select_list(names, 't')}, "
        f"DISTANCE(POINT('ICRS', u.ra, u.dec), {point}) AS match_distance "
        f"FROM TAP_UPLOAD.stars AS u JOIN {table_name(catalog)} AS t "
        f"ON 1 = CONTAINS({point}, CIRCLE('ICRS', u.ra, u.dec, {format_degrees(radius)}))"
    )
    # Services cap upload sizes (DaCHS: 500 kB for sync requests by default), so
    # large tables go up in chunks; each chunk is a complete, independent join.
    parts = [
        run_query(catalog.url, query, uploads={"stars": upload[start:start + chunk_rows]},
                  mode=mode, maxrec=maxrec, on_overflow=on_overflow, cache=cache)
        for start in range(0, len(upload), chunk_rows)
    ]
    # One cut chunk makes the whole match incomplete: its unmatched rows may have
    # counterparts the service did not return.
    truncated = any(part.meta.get("TRUNCATED", False) for part in parts)
    found = vstack(parts, metadata_conflicts="silent") if len(parts) > 1 else parts[0]
    service_keys = set(found.meta)
    found = _finish(found, catalog)
    # Nearest match per input row.
    order = np.lexsort((np.asarray(found["match_distance"]), np.asarray(found["row_id"])))
    found = found[order]
    first = np.ones(len(found), dtype=bool)
    first[1:] = np.asarray(found["row_id"])[1:] != np.asarray(found["row_id"])[:-1]
    found = found[first]

    out = table.copy(copy_data=True)
    rows = np.asarray(found["row_id"], dtype=int)
    placed = {}
    for name in found.colnames:
        if name in ("row_id", "match_distance"):
            continue
        target = name if name not in out.colnames else f"{name}_{catalog.key}"
        column = found[name]
        data = np.ma.masked_all(len(out), dtype=column.dtype)
        data[rows] = np.ma.asarray(column)
        out[target] = MaskedColumn(data, unit=column.unit, description=column.description)
        placed[name] = target
    separation = np.ma.masked_all(len(out), dtype=float)
    separation[rows] = (np.asarray(found["match_distance"], dtype=float) * u.deg).to_value(
        u.arcsec)
    # Never over a user's own column: the catalog's key tells them apart.
    name = "separation" if "separation" not in out.colnames else f"separation_{catalog.key}"
    out[name] = MaskedColumn(separation, unit=u.arcsec,
                             description=f"Distance to the {catalog.key} match")
    out.meta["MATCHED"] = f"{catalog.title} within {radius}"
    out.meta["TRUNCATED"] = truncated
    _matched_meta(out, found, service_keys, catalog, placed)
    return out


def build_lamost_training_table(radius=3 * u.arcsec, red_clump=False, mode="async",
                                cache=None):
    """LAMOST DD-Payne labels x APOKASC-2 (and Ting+2018 Δν/ΔP): a training table.

    Downloads APOKASC-2 Table 5 (6,676 rows), uploads its positions to match the
    LAMOST DD-Payne table on the server, and, with ``red_clump=True``, adds the
    spectroscopic Δν and ΔP of Ting+2018 (replacing the seismic Δν, as in the paper,
    so that the model applies to LAMOST stars without asteroseismology).

    Returns
    -------
    `~astropy.table.Table`
        Matched stars only, with ``KIC``, ``EVSTATE``, ``MASS``, ``AGE`` and the
        labels: ready for `~stellar_ml_ages.training.train_model`.

    Examples
    --------
    >>> from stellar_ml_ages.vo import build_lamost_training_table
    >>> table = build_lamost_training_table()  # doctest: +REMOTE_DATA
    >>> "MASS" in table.colnames  # doctest: +REMOTE_DATA
    True
    """
    apokasc = fetch_apokasc(cache=cache)
    matched = tap_crossmatch(apokasc, "lamost", radius, mode=mode, cache=cache)
    matched = matched[~np.ma.getmaskarray(matched["separation"])]
    if red_clump:
        matched.rename_column("DNU", "DNU_SEISMIC")
        matched = tap_crossmatch(matched, "red_clump", radius, mode=mode, cache=cache,
                                 ra="RA", dec="DEC")
        # The labels the LAMOST models read are still DD-Payne's: Ting+2018 adds Δν, ΔP.
        matched.meta["LABELSRC"] = CATALOGS["lamost"].label_source
    matched.meta["TRAINING"] = "LAMOST DD-Payne x APOKASC-2" + (
        " x Ting+2018" if red_clump else "")
    return matched
