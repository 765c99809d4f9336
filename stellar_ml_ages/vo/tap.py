"""Running ADQL on TAP services: retries, timeouts, overflow and clear errors.

Every query of the package goes through `run_query`, so the rules hold
everywhere: a transient HTTP failure is retried with exponential backoff; a
truncated result (the service's OVERFLOW status) is never returned as if it were
complete; every error names the service and the query.
"""

import hashlib
import io
import time
import warnings
from functools import cache

import astropy.units as u
import numpy as np
import requests
from astropy.table import Table

from .. import __version__
from ..exceptions import (
    TAPOverflowError,
    TAPQueryError,
    TAPServiceError,
    TAPTimeoutError,
    TruncatedResultWarning,
)
from .config import conf

__all__ = ["check_service_url", "get_service", "run_query"]

_TRANSIENT_HTTP = {500, 502, 503, 504}


class _TimeoutSession(requests.Session):
    """A requests session whose calls time out, and whose streamed responses get closed.

    pyvo polls UWS jobs with ``stream=True`` and leaves those responses open, which
    leaks a connection per async query; `close_streams` releases them.
    """

    def __init__(self):
        super().__init__()
        self.headers["User-Agent"] = f"stellar_ml_ages/{__version__} (pyvo)"
        self._streams = []

    def request(self, *args, **kwargs):
        kwargs.setdefault("timeout", conf.timeout)
        response = super().request(*args, **kwargs)
        if kwargs.get("stream"):
            self._streams.append(response)
        return response

    def close_streams(self):
        while self._streams:
            self._streams.pop().close()


@cache
def _session(url):
    return _TimeoutSession()


@cache
def get_service(url):
    """A `pyvo.dal.TAPService` for ``url``, created on first use and reused.

    Creating it contacts nobody: pyvo asks the service for its capabilities only
    when a query needs them.
    """
    import pyvo

    return pyvo.dal.TAPService(url, session=_session(url))


def check_service_url(url, query=None):
    """Refuse, before any request, a service URL that is not ``http(s)://host...``.

    ``127.0.0.1:8080/tap`` (no scheme) made requests fail in a way that read as an
    unreadable answer, retried as if transient: it is a setting to correct.

    Raises
    ------
    TAPServiceError
        Naming the URL, the configuration item that holds it (if one does), and the fix.
    """
    import urllib.parse

    text = str(url)
    parsed = urllib.parse.urlparse(text)
    if parsed.scheme in ("http", "https") and parsed.netloc:
        return
    items = [name for name in ("vizier_tap_url", "xmatch_url")
             if str(getattr(conf, name)) == text]
    where = (f"stellar_ml_ages.vo.conf.{items[0]}, or --service" if items
             else "the service URL given")
    hint = f"; did you mean 'http://{text}'?" if not parsed.netloc and "://" not in text else ""
    raise TAPServiceError(f"configuration error: the service URL {text!r} ({where}) is not an "
                          f"http:// or https:// URL{hint}", url, query)


def _cause_chain(error):
    """The exception and its causes; pyvo keeps some causes as plain strings."""
    seen = []
    while isinstance(error, BaseException) and error not in seen:
        seen.append(error)
        cause = getattr(error, "cause", None)
        error = cause if isinstance(cause, BaseException) else (
            error.__cause__ or error.__context__)
    return seen


def _classify(error, url, query):
    """Our exception for a pyvo/requests failure, and whether it is worth retrying."""
    import pyvo

    chain = _cause_chain(error)
    if any(isinstance(e, requests.Timeout) for e in chain):
        return TAPTimeoutError(f"no answer within {conf.timeout} s: {error}", url, query), True
    # A rejection is a rejection, whatever its text says (a column named "timeout"...).
    if isinstance(error, pyvo.dal.DALQueryError):
        return TAPQueryError(f"the service rejected the query: {error}", url, query), False
    if any(word in str(error).lower() for word in ("timed out", "timeout")):
        return TAPTimeoutError(f"no answer within {conf.timeout} s: {error}", url, query), True
    code = getattr(error, "code", None)
    if any(isinstance(e, requests.ConnectionError) for e in chain):
        return TAPServiceError(f"cannot connect: {error}", url, query), True
    if code in _TRANSIENT_HTTP:
        return TAPServiceError(f"HTTP {code}: {error}", url, query), True
    if code is not None:
        return TAPServiceError(f"HTTP {code}: {error}", url, query), False
    if isinstance(error, pyvo.dal.DALFormatError | ValueError):
        return TAPServiceError(f"unreadable answer (truncated or not a VOTable): {error}",
                               url, query), True
    return TAPServiceError(f"service failure: {error}", url, query), False


def _execute(service, query, maxrec, mode, uploads):
    import pyvo

    with warnings.catch_warnings():
        # We report truncation ourselves, from the status, with the query in the message.
        warnings.simplefilter("ignore", pyvo.dal.DALOverflowWarning)
        if mode == "async":
            results = service.run_async(query, maxrec=maxrec, uploads=uploads,
                                        timeout=conf.timeout)
        else:
            results = service.run_sync(query, maxrec=maxrec, uploads=uploads)
        table = results.to_table()
    status = (results.query_status or "OK").upper()
    return table, status


#: How results are kept in the cache; part of the key, so that entries kept in an
#: earlier form (VOTable, which gave ``[Fe/H]`` back as ``__Fe_H_``) are never read.
_CACHE_FORMAT = "ecsv-1"


def _cache_key(url, query, maxrec, mode, uploads):
    digest = hashlib.sha256(repr((_CACHE_FORMAT, url, query, maxrec, mode)).encode())
    for name, table in sorted((uploads or {}).items()):
        buffer = io.BytesIO()
        table.write(buffer, format="votable")
        digest.update(name.encode() + buffer.getvalue())
    return f"https://stellar-ml-ages.invalid/tap-cache/{digest.hexdigest()}"


def run_query(url, query, *, maxrec=None, mode="sync", uploads=None, on_overflow="raise",
              cache=None):
    """Run ADQL on a TAP service and return the result as an astropy Table.

    Parameters
    ----------
    url : str
        TAP service base URL.
    query : str
        ADQL.
    maxrec : int, optional
        Most rows to return; the service's own limit applies otherwise.
    mode : {"sync", "async"}
        Synchronous request or UWS job (for long queries).
    uploads : dict, optional
        ``{name: Table}`` for ``TAP_UPLOAD.name`` in the query.
    on_overflow : {"raise", "warn"}
        What a truncated result does: raise
        `~stellar_ml_ages.TAPOverflowError`, or return the partial table with a
        `~stellar_ml_ages.TruncatedResultWarning` and ``meta["TRUNCATED"]``.
    cache : bool, optional
        Reuse results from the astropy cache (default: ``conf.cache``).

    Returns
    -------
    `~astropy.table.Table`
        With ``meta["TRUNCATED"]`` (bool), ``meta["SERVICE"]`` and ``meta["QUERY"]``.

    Raises
    ------
    TAPServiceError, TAPTimeoutError, TAPQueryError, TAPOverflowError

    Examples
    --------
    >>> from stellar_ml_ages.vo import run_query
    >>> table = run_query("https://dc.g-vo.org/tap",
    ...                   "SELECT TOP 5 table_name FROM tap_schema.tables")  # doctest: +REMOTE_DATA
    >>> len(table), table.meta["TRUNCATED"]  # doctest: +REMOTE_DATA
    (5, False)
    """
    if mode not in ("sync", "async"):
        raise ValueError(f"mode must be 'sync' or 'async', not {mode!r}")
    check_service_url(url, query)
    if on_overflow not in ("raise", "warn"):
        raise ValueError(f"on_overflow must be 'raise' or 'warn', not {on_overflow!r}")
    use_cache = conf.cache if cache is None else cache
    key = _cache_key(url, query, maxrec, mode, uploads) if use_cache else None
    if key is not None:
        from astropy.utils.data import CacheMissingWarning, download_file, is_url_in_cache

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", CacheMissingWarning)  # no cache yet: a miss
            cached = is_url_in_cache(key)
        if cached:
            table = _read_cached(download_file(key, cache=True))
            return _finish(table, "OK", url, query, on_overflow)

    service = get_service(url)
    delay = conf.retry_backoff
    for attempt in range(conf.max_retries + 1):
        try:
            table, status = _execute(service, query, maxrec, mode, uploads)
            break
        except Exception as error:  # pyvo raises many types; all are classified
            problem, transient = _classify(error, url, query)
            if not transient or attempt == conf.max_retries:
                if attempt:
                    problem.args = (f"{problem.args[0]} (after {attempt + 1} attempts)",)
                raise problem from error
            time.sleep(delay)
            delay *= 2
        finally:
            _session(url).close_streams()
    # Every column masked, as the VOTable parser gives them: the cached copy is the same.
    table = _finish(Table(table, masked=True, copy=False), status, url, query, on_overflow)
    if key is not None and not table.meta["TRUNCATED"]:
        _store(key, table)
    return table


def _finish(table, status, url, query, on_overflow):
    truncated = status == "OVERFLOW"
    table.meta.update({"TRUNCATED": truncated, "SERVICE": url, "QUERY": query})
    if truncated:
        message = (f"result truncated at {len(table)} rows (MAXREC); narrow the query or "
                   "raise maxrec")
        if on_overflow == "raise":
            raise TAPOverflowError(message, url, query)
        warnings.warn(f"{message} [service: {url}]", TruncatedResultWarning, stacklevel=3)
    return table


def _read_cached(path):
    """A result as `_store` kept it: the same names, units, masks and meta."""
    with warnings.catch_warnings():
        # Units the service wrote in CDS notation ([cm/s2]) come back unrecognized,
        # as they did from the service itself.
        warnings.simplefilter("ignore", u.UnitsWarning)
        table = Table.read(path, format="ascii.ecsv")
    # The VOTable parser gives every column a mask; ECSV only those with a missing value.
    return Table(table, masked=True, copy=False)


def _same_column(a, b):
    if (type(a) is not type(b) or a.dtype != b.dtype or a.shape != b.shape
            or str(a.unit) != str(b.unit) or a.description != b.description
            or dict(a.meta) != dict(b.meta)):
        return False
    mask = np.ma.getmaskarray(a)
    if not np.array_equal(mask, np.ma.getmaskarray(b)):
        return False
    values, again = np.asarray(a)[~mask], np.asarray(b)[~mask]
    if values.dtype.kind in "fc":
        return np.array_equal(values, again, equal_nan=True)
    return bool(np.all(values == again)) if values.dtype.kind == "O" else np.array_equal(
        values, again)


def _store(key, table):
    """Keep a complete result in the astropy cache, only if it reads back identical.

    ECSV keeps names such as ``[Fe/H]`` or ``M(cor)``, units, masks, descriptions and
    meta; a result it cannot hold exactly (a column type it does not write) is not
    kept, so a cached answer never differs from the service's.
    """
    import tempfile
    from pathlib import Path

    from astropy.utils.data import import_file_to_cache

    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "result.ecsv"
        try:
            table.write(path, format="ascii.ecsv")
            again = _read_cached(path)
        except (ValueError, TypeError, OSError, AttributeError):
            return
        if (again.colnames != table.colnames or dict(again.meta) != dict(table.meta)
                or not all(_same_column(table[name], again[name]) for name in table.colnames)):
            return
        import_file_to_cache(key, str(path))
