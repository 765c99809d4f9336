"""Cross-match a whole table with a VizieR catalog through CDS XMatch, and read VizieR metadata.

`xmatch_vizier` sends your positions to the `CDS XMatch service
<http://cdsxmatch.u-strasbg.fr/xmatch>`_ (through `astroquery.xmatch`), which
matches them against its copy of a VizieR table and keeps, here, the nearest
counterpart of each star. Use it for large tables of your own and positional
matches; use `~stellar_ml_ages.vo.tap_crossmatch` for matches that need ADQL
(constraints in the same query, another TAP service, the local mirror)::

    matched = xmatch_vizier(my_stars, "lamost", 3 * u.arcsec)
    annotated = add_mass_age(matched, model="giants")

`vizier_columns` reads a table's own column metadata from VizieR (through
``astroquery.vizier``), to check the package's default column names.

The service addresses come from ``stellar_ml_ages.vo.conf`` (``xmatch_url`` and
``vizier_server``) when those items exist, else from the CDS defaults.
"""

import functools
import time
import warnings

import astropy.units as u
import numpy as np
import requests
from astropy.table import MaskedColumn, Table, vstack

from .. import __version__
from ..exceptions import RegionError, TAPQueryError, TAPServiceError, TAPTimeoutError
from ..training.crossmatch import sky_coordinates
from .catalogs import CATALOGS, Catalog
from .config import conf
from .fetch import _finish, _matched_meta, table_name
from .tap import _TRANSIENT_HTTP, _cause_chain, check_service_url

__all__ = ["vizier_columns", "xmatch_vizier"]

_MAX_RADIUS = 180 * u.arcsec  # the service's limit on distMaxArcsec
# Names of the uploaded columns: unlikely in any VizieR table, so never confused with its columns.
_ROW, _RA, _DEC = "xm_row_id", "xm_ra", "xm_dec"
_DISTANCE = "angDist"  # the service's first column: distance in arcsec


def _xmatch_url():
    return conf.xmatch_url


def _vizier_server():
    return conf.vizier_server


def _vizier_table(catalog):
    """VizieR table id (``"J/ApJS/245/34/catalog"``) and the package's `Catalog`, if any."""
    entry = catalog if isinstance(catalog, Catalog) else (
        CATALOGS.get(catalog) if isinstance(catalog, str) else None)
    if entry is not None:
        if entry.service_item != "vizier_tap_url":
            raise ValueError(f"{entry.title} is not a VizieR table (its service is "
                             f"conf.{entry.service_item}); use tap_crossmatch for it")
        # SLAM's table is found through VizieR's TAP_SCHEMA (its name is not configured).
        return table_name(entry).strip().strip('"'), entry
    if isinstance(catalog, str):
        table_id = catalog.removeprefix("vizier:").strip()
        if "/" in table_id:
            return table_id, None
    raise KeyError(f"unknown catalog {catalog!r}; give one of {', '.join(CATALOGS)} or a VizieR "
                   "table such as 'vizier:J/ApJS/245/34/catalog'")


def _check_radius(radius):
    if not radius.isscalar or not 0 < radius.to_value(u.arcsec) <= _MAX_RADIUS.value:
        raise RegionError(f"radius must be greater than 0 and at most {_MAX_RADIUS} (the CDS "
                          f"XMatch limit), not {radius}")
    return radius.to(u.arcsec)


def _free_name(name, suffix, taken):
    while name in taken:
        name += suffix
    return name


def _classify(error, service, query):
    """Our exception for a failure of an astroquery call, and whether it is worth retrying."""
    chain = _cause_chain(error)
    if any(isinstance(e, requests.Timeout) for e in chain):
        return TAPTimeoutError(f"no answer within {conf.timeout} s: {error}", service, query), True
    if any(isinstance(e, requests.ConnectionError) for e in chain):
        return TAPServiceError(f"cannot connect: {error}", service, query), True
    http = [e for e in chain if isinstance(e, requests.HTTPError)]
    response = next((e.response for e in http if e.response is not None), None)
    if response is not None:
        code = response.status_code
        # astroquery raises InvalidQueryError with the service's QUERY_STATUS text, from the
        # HTTPError; when the error page is no VOTable, the parse error hides the HTTPError.
        reason = str(error) if error.__cause__ is http[0] else (response.reason or "")
        message = f"HTTP {code}" + (f": {reason}" if reason else "")
        if code in _TRANSIENT_HTTP:
            return TAPServiceError(message, service, query), True
        if 400 <= code < 500 and code not in (401, 403, 404, 429):
            return TAPQueryError(f"the service rejected the request: {message}", service,
                                 query), False
        return TAPServiceError(message, service, query), False
    if http:  # astroquery's own HTTPError, e.g. "your IP address has been banned"
        return TAPServiceError(str(error), service, query), False
    return TAPServiceError(f"unreadable answer (truncated or not a VOTable): {error}", service,
                           query), True


def _call(action, service, query):
    """``action()``, retrying transient failures as `~stellar_ml_ages.vo.run_query` does."""
    delay = conf.retry_backoff
    for attempt in range(conf.max_retries + 1):
        try:
            # astroquery silences VOTable warnings globally while parsing; keep that local.
            with warnings.catch_warnings():
                return action()
        except Exception as error:  # astroquery and requests raise many types; all are classified
            problem, transient = _classify(error, service, query)
            if not transient or attempt == conf.max_retries:
                if attempt:
                    problem = type(problem)(f"{problem.message} (after {attempt + 1} attempts)",
                                            service, query)
                raise problem from error
            time.sleep(delay)
            delay *= 2
    raise AssertionError("unreachable")  # pragma: no cover


def _user_agent(session):
    session.headers["User-Agent"] = (f"stellar_ml_ages/{__version__} "
                                     f"{session.headers.get('User-Agent', '')}").strip()


@functools.cache
def _xmatch_class():
    from astroquery.utils.url_helpers import urljoin_keep_path
    from astroquery.xmatch import XMatchClass

    class PackageXMatch(XMatchClass):
        """`astroquery.xmatch.XMatchClass` on the configured URL and timeout.

        The list of tables the service holds is asked for once per instance, with the
        package's cache setting and timeout (astroquery always caches it, and waits
        for it without a timeout).
        """

        def __init__(self, url, cache):
            super().__init__()
            self.name = "XMatch"  # astroquery's cache directory for the service
            self.URL = url
            self.TIMEOUT = conf.timeout
            self._use_cache = cache
            self._tables = None
            _user_agent(self._session)

        def get_available_tables(self, *, cache=None):
            if self._tables is None:
                response = self._request(
                    "GET", urljoin_keep_path(self.URL, "tables"),
                    params={"action": "getVizieRTableNames", "RESPONSEFORMAT": "txt"},
                    timeout=self.TIMEOUT, cache=self._use_cache if cache is None else cache)
                response.raise_for_status()
                self._tables = set(response.text.split())
            return self._tables

    return PackageXMatch


def _nearest(found):
    """One row per uploaded star, the nearest; sorted by row index."""
    rows = np.asarray(found[_ROW]).astype(np.int64)
    distance = np.ma.filled(np.ma.asarray(found[_DISTANCE], dtype=float), np.inf)
    order = np.lexsort((distance, rows))
    rows = rows[order]
    first = np.ones(len(rows), dtype=bool)
    first[1:] = rows[1:] != rows[:-1]
    return found[order[first]]


@u.quantity_input(radius=u.arcsec)
def xmatch_vizier(table, catalog, radius=3 * u.arcsec, *, ra=None, dec=None, columns=None,
                  cache=None, chunk_rows=50_000):
    """Add the nearest match of every row in a VizieR catalog, through CDS XMatch.

    Only a row index and the positions are uploaded (in chunks of ``chunk_rows``);
    the service matches them with its copy of the VizieR table, and the nearest
    counterpart within ``radius`` is kept. The caller's table is not modified: the
    result has every input row, once and in order, with the catalog's columns
    (masked where nothing matched, or where the row has no position) and a
    ``separation`` column in arcsec. Columns are renamed and given units as by
    `~stellar_ml_ages.vo.fetch`; a catalog column whose name you already use gets
    the suffix ``_<catalog key>`` (``_xm`` for a raw VizieR identifier).

    The service holds only VizieR tables with positions, and for each the
    columns VizieR shows by default plus positional errors and photometry: a
    column VizieR has may be missing here (see `vizier_columns`, and
    ``columns``). It matches by position only; for constraints on the catalog
    side, or another service, use `~stellar_ml_ages.vo.tap_crossmatch`.

    Parameters
    ----------
    table : `~astropy.table.Table`
        Your stars; positions (ICRS, degrees if no unit) from ``ra``/``dec`` or the
        usual RA/Dec column names.
    catalog : str or `~stellar_ml_ages.vo.catalogs.Catalog`
        A VizieR catalog of the package that has positions (e.g. ``"lamost"``), or a
        VizieR table identifier (``"vizier:J/ApJS/245/34/catalog"``).
    radius : `~astropy.units.Quantity`
        Largest separation, at most 180 arcsec.
    ra, dec : str, optional
        Position columns of ``table``.
    columns : sequence, optional
        Catalog columns to add, by their VizieR names (default: every column the
        service returns); an entry that is a tuple lists alternative spellings, as
        in ``Catalog.columns``, and the first one present is used.
    cache : bool, optional
        Reuse answers from astroquery's cache (default: ``conf.cache``).
    chunk_rows : int
        Rows uploaded per request: the service refuses uploads over 100 MB and caps
        the rows of one answer (at most one row per uploaded star here).

    Returns
    -------
    `~astropy.table.Table`

    Raises
    ------
    RegionError
        The radius is not in (0, 180] arcsec, or the catalog has no positions.
    TAPQueryError
        The service does not hold the table, lacks a requested column, or rejected
        the request.
    TAPServiceError, TAPTimeoutError
        The service failed or did not answer in time (after retries).

    Examples
    --------
    >>> import astropy.units as u
    >>> from astropy.table import Table
    >>> from stellar_ml_ages.vo.xmatch import xmatch_vizier
    >>> mine = Table({"ra": [290.1, 291.3] * u.deg, "dec": [43.9, 42.8] * u.deg})
    >>> matched = xmatch_vizier(mine, "lamost", 3 * u.arcsec)  # doctest: +REMOTE_DATA
    >>> len(matched) == len(mine)  # doctest: +REMOTE_DATA
    True

    The radius is checked before anything is sent:

    >>> xmatch_vizier(mine, "lamost", 5 * u.arcmin)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    stellar_ml_ages.exceptions.RegionError: radius must be greater than 0 and at most 180.0 ...
    """
    table_id, entry = _vizier_table(catalog)
    if entry is not None and entry.ra is None:
        raise RegionError(f"{entry.title} has no position columns to match on")
    radius = _check_radius(radius)
    if int(chunk_rows) < 1:
        raise ValueError(f"chunk_rows must be at least 1, not {chunk_rows}")
    wanted = None if columns is None else ([columns] if isinstance(columns, str)
                                           else list(columns))
    positions = sky_coordinates(table, ra, dec)
    ra_deg, dec_deg = positions.ra.deg, positions.dec.deg
    valid = np.flatnonzero(np.isfinite(ra_deg) & np.isfinite(dec_deg))
    upload = Table({_ROW: valid.astype(np.int64), _RA: ra_deg[valid], _DEC: dec_deg[valid]})
    suffix = f"_{entry.key}" if entry is not None else "_xm"
    title = entry.title if entry is not None else table_id
    out = table.copy(copy_data=True)
    out.meta["MATCHED"] = f"{title} ({table_id}, CDS XMatch) within {radius}"
    separation_name = _free_name("separation", suffix, out.colnames)
    separation = np.ma.masked_all(len(out), dtype=float)
    if not len(upload):  # nothing to match: the service is not asked
        out[separation_name] = MaskedColumn(separation, unit=u.arcsec,
                                            description=f"Distance to the {table_id} match")
        return out

    url = _xmatch_url()
    check_service_url(url)
    use_cache = conf.cache if cache is None else bool(cache)
    client = _xmatch_class()(url, use_cache)
    cat2 = f"vizier:{table_id}"
    if not _call(functools.partial(client.is_table_available, cat2), url, cat2):
        raise TAPQueryError(f"the XMatch service does not hold {table_id} (it holds only VizieR "
                            "tables with positions)", url, cat2)
    parts = []
    for start in range(0, len(upload), int(chunk_rows)):
        chunk = upload[start:start + int(chunk_rows)]
        request = (f"cat2={cat2} distMaxArcsec={radius.value:g} selection=best, uploaded rows "
                   f"{start}..{start + len(chunk) - 1} of {len(upload)}")
        parts.append(_call(functools.partial(
            client.query, chunk, cat2, radius, colRA1=_RA, colDec1=_DEC, cache=use_cache,
            selection="best"), url, request))
    found = vstack(parts, metadata_conflicts="silent") if len(parts) > 1 else parts[0]
    missing = [name for name in (_DISTANCE, _ROW) if name not in found.colnames]
    if missing:
        raise TAPServiceError(f"unexpected answer: no {' or '.join(missing)} column", url, cat2)
    names = [name for name in found.colnames if name not in (_DISTANCE, _ROW, _RA, _DEC)]
    if wanted is not None:
        chosen, absent = [], []
        for entry_names in wanted:
            spellings = (entry_names,) if isinstance(entry_names, str) else tuple(entry_names)
            found_name = next((name for name in spellings if name in names), None)
            if found_name is None:
                absent.append(" or ".join(spellings))
            elif found_name not in chosen:
                chosen.append(found_name)
        if absent:
            raise TAPQueryError(f"the XMatch copy of {table_id} has no column "
                                f"{'; '.join(absent)}; it has {', '.join(names)}", url, cat2)
        names = chosen

    found = _nearest(found)
    rows = np.asarray(found[_ROW]).astype(np.int64)
    distance = found[_DISTANCE]
    separation[rows] = u.Quantity(np.ma.asarray(distance, dtype=float).filled(np.nan),
                                  distance.unit or u.arcsec).to_value(u.arcsec)
    separation = np.ma.masked_invalid(separation)
    matched = found[names] if names else Table()
    service_keys = set(matched.meta)
    if entry is not None:
        matched = _finish(matched, entry)
    placed = {}
    for name in matched.colnames:
        column = matched[name]
        data = np.ma.masked_all((len(out), *column.shape[1:]), dtype=column.dtype)
        data[rows] = np.ma.asarray(column)
        target = _free_name(name, suffix, [*out.colnames, separation_name])
        out[target] = MaskedColumn(data, unit=column.unit, description=column.description,
                                   meta=column.meta)
        placed[name] = target
    out[separation_name] = MaskedColumn(separation, unit=u.arcsec,
                                        description=f"Distance to the {table_id} match")
    if entry is not None:
        _matched_meta(out, matched, service_keys, entry, placed)
    return out


def vizier_columns(catalog, *, cache=None):
    """The column metadata of a VizieR table, from VizieR itself.

    Asks VizieR (``astroquery.vizier``, server ``conf.vizier_server``) for one row
    with every column, and returns what it says of each column: a way to check
    column names against the live service.

    Parameters
    ----------
    catalog : str or `~stellar_ml_ages.vo.catalogs.Catalog`
        A VizieR catalog of the package (e.g. ``"lamost"``, ``"apokasc2"``) or a
        VizieR table identifier (``"J/ApJS/245/34/catalog"``, with or without
        ``vizier:``).
    cache : bool, optional
        Reuse answers from astroquery's cache (default: ``conf.cache``).

    Returns
    -------
    `~astropy.table.Table`
        One row per column: ``name``, ``unit`` (VizieR's notation, empty if none),
        ``description`` and ``ucd``; ``meta["CATALOG"]`` and ``meta["SERVICE"]``.

    Raises
    ------
    TAPQueryError
        VizieR has no such table.
    TAPServiceError, TAPTimeoutError
        VizieR failed or did not answer in time (after retries).

    Examples
    --------
    >>> from stellar_ml_ages.vo.xmatch import vizier_columns
    >>> columns = vizier_columns("lamost")  # doctest: +REMOTE_DATA
    >>> "Teff" in columns["name"]  # doctest: +REMOTE_DATA
    True
    """
    table_id, _ = _vizier_table(catalog)
    from astroquery import cache_conf
    from astroquery.vizier import VizierClass

    server = _vizier_server()
    service = f"https://{server}/viz-bin/votable"  # where astroquery sends the request
    client = VizierClass(columns=["**"], row_limit=1, vizier_server=server,
                         timeout=conf.timeout)
    _user_agent(client._session)
    use_cache = conf.cache if cache is None else bool(cache)

    def ask():
        with cache_conf.set_temp("cache_active", use_cache):
            return client.get_catalogs(table_id)

    query = f"-source={table_id}"
    tables = _call(ask, service, query)
    if tables is None:  # neither VOTable nor TSV
        raise TAPServiceError("unreadable answer (not a VOTable)", service, query)
    if table_id in tables.keys():
        result = tables[table_id]
    elif len(tables) == 1:
        result = tables[0]
    else:
        raise TAPQueryError(f"VizieR has no table {table_id}"
                            + (f" (it answered {', '.join(tables.keys())})" if len(tables)
                               else ""), service, query)

    def unit(column):
        if column.unit is None:
            return ""
        try:
            return column.unit.to_string("cds")
        except ValueError:
            return str(column.unit)

    out = Table(
        [[c.name for c in result.itercols()], [unit(c) for c in result.itercols()],
         [c.description or "" for c in result.itercols()],
         [str(c.meta.get("ucd", "")) for c in result.itercols()]],
        names=("name", "unit", "description", "ucd"), dtype=(str, str, str, str))
    out.meta.update({"CATALOG": table_id, "SERVICE": service})
    return out
