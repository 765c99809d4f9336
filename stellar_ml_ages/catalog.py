"""Survey-scale catalogs: a TAP table, paged by a key, annotated, written as Parquet parts.

A whole survey table (APOGEE DR17 allStar, 733,901 rows; LAMOST DR5, millions)
does not fit one synchronous TAP query, and a network fault an hour in must not
lose the hour. `build_catalog` therefore

1. pages the table by a stable key (keyset pagination:
   ``SELECT TOP n ... WHERE key > last ORDER BY key``), fetching every row that
   shares the key a full page ends on with one more query, so that rows sharing
   a key across a page boundary are neither lost nor repeated (a key value shared
   by more rows than the service returns for one query is refused, unless a
   second, tie-breaking column orders the rows: ``CatalogQuery(tiebreak=...)``,
   ``--tiebreak``);
2. annotates each page with `~stellar_ml_ages.add_mass_age` (locally, or on a
   Dask cluster);
3. writes each page as one Parquet part (``part-000000.parquet``, ...), by a
   temporary file and a rename, and then records it in ``_manifest.json``:
   the query, the service, the model (name, version, sha256s), the package
   version and the version of the parts' contents (``OUTPUT_VERSION``), the pages
   done with their first and last keys, rows, checksums and flag counts, and a
   checksum of the whole manifest.

Rerunning the same call continues after the last recorded page; the parts come
out byte for byte as an uninterrupted run writes them. A changed query, model,
page size or output version refuses to resume unless ``restart=True``, which
deletes only the parts the manifest lists whose bytes are the ones it records:
never a file the package did not write.
"""

import contextlib
import datetime
import hashlib
import json
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from astropy.table import Column, vstack

from . import __version__
from .diagnostics import RunSummary, count_reasons
from .exceptions import CatalogError, TAPOverflowError
from .registry import get_model
from .vo.adql import quote_identifier
from .vo.catalogs import CATALOGS
from .vo.tap import run_query

__all__ = ["PRESETS", "CatalogQuery", "CatalogSummary", "build_catalog", "read_manifest"]

#: Named with a leading underscore so that Parquet dataset readers (pandas, Dask,
#: pyarrow) skip it when reading the directory.
MANIFEST = "_manifest.json"
_PART = re.compile(r"^part-\d{6}\.parquet$")
_MANIFEST_FORMAT = 1
#: The version of what the parts hold. Bump it whenever add_mass_age's output for the
#: same input changes (columns, values, descriptions, meta): a resume across versions
#: would mix parts of both (an editable install's ``__version__`` does not change
#: between commits), so the manifest records it with the other settings and a changed
#: one refuses to resume. Manifests without it were written before it was recorded
#: (version 1: "84th percentile of prediction" descriptions, no record checksums).
OUTPUT_VERSION = 2

#: Named surveys: a catalog of ``stellar_ml_ages.vo.CATALOGS``, its paging key, whether
#: pages are read as the catalog's fetcher reads them (renames, units, label source,
#: its ``prepare`` step) and defaults of `~stellar_ml_ages.add_mass_age` options.
#: ``RAJ2000`` is a verified column of the DD-Payne table (ties are handled); SLAM's
#: right ascension is its table's own spelling, found by the service. (LASP has only
#: Teff, log g and [Fe/H], which no model runs on alone: no preset.)
PRESETS = {
    "lamost-dd-payne": {"catalog": "lamost", "key": "RAJ2000"},
    "lamost-slam": {"catalog": "slam", "key": "ra", "as_fetched": True,
                    # Trained for SLAM's noise; stars noisier than it was trained for
                    # get the rest propagated.
                    "model": "giants-slam",
                    "options": {"propagate_errors": True}},
}


@dataclass(frozen=True)
class CatalogQuery:
    """What to page through: a TAP service, a table, its key, columns and condition.

    Parameters
    ----------
    service : str
        TAP base URL.
    table : str
        ADQL table name (quoted if it needs to be, e.g. ``'"V/164/stellar5"'``).
    key : str
        A column with no nulls that orders the rows (unique or not).
    columns : tuple of str, or "*"
    where : str, optional
        ADQL condition, e.g. a region or a quality cut.
    catalog : str, optional
        A key of ``stellar_ml_ages.vo.CATALOGS`` whose renames, units, label source
        and ``prepare`` step are applied to every page (as its fetcher would).
    tiebreak : str, optional
        A second column with no nulls, unique among the rows that share a key value
        (an observation or star identifier): pages are then ordered by
        ``(key, tiebreak)``, so that a key value shared by more rows than one answer
        of the service may hold is paged through like any other.

    Examples
    --------
    >>> from stellar_ml_ages.catalog import CatalogQuery
    >>> query = CatalogQuery("http://127.0.0.1:8080/tap", "s.t", "k", ("k", "teff"), "logg < 3")
    >>> print(query.page_query(1200, 1000))
    SELECT TOP 1000 k, teff FROM s.t WHERE (logg < 3) AND k > 1200 ORDER BY k
    >>> print(query.tie_query(1500))
    SELECT k, teff FROM s.t WHERE (logg < 3) AND k = 1500

    With a tie-breaking column the pages follow the pair:

    >>> query = CatalogQuery("http://127.0.0.1:8080/tap", "s.t", "ra", tiebreak="obsid")
    >>> print(query.page_query((10.5, 7), 1000))
    SELECT TOP 1000 * FROM s.t WHERE (ra > 10.5 OR (ra = 10.5 AND obsid > 7)) ORDER BY ra, obsid
    """

    service: str
    table: str
    key: str
    columns: tuple | str = "*"
    where: str | None = None
    #: A key of ``stellar_ml_ages.vo.CATALOGS`` whose renames, units, label source
    #: and ``prepare`` step are applied to every page (as its fetcher would).
    catalog: str | None = None
    #: A second paging column for rows that share a key value (see above).
    tiebreak: str | None = None

    @property
    def paging_columns(self):
        """The columns pages are ordered by: ``(key,)`` or ``(key, tiebreak)``."""
        return (self.key,) if self.tiebreak is None else (self.key, self.tiebreak)

    def _select(self):
        if self.columns == "*":
            return "*"
        names = list(self.columns)
        for position, name in enumerate(self.paging_columns):
            # ADQL regular identifiers have no case: ``obsid`` is the column ``OBSID``.
            if not any(_same_identifier(name, other) for other in names):
                names.insert(position, name)
        return ", ".join(quote_identifier(name) for name in names)

    def _conditions(self, *more):
        parts = [f"({self.where})"] if self.where else []
        return " WHERE " + " AND ".join(parts + list(more)) if parts or more else ""

    def _pair(self, value):
        """``value`` as one value per paging column (a manifest keeps pairs as lists)."""
        if self.tiebreak is None:
            return (value,)
        if not isinstance(value, list | tuple) or len(value) != 2:
            raise CatalogError(f"a key value of ({self.key}, {self.tiebreak}) is a pair, "
                               f"not {value!r}")
        return tuple(value)

    def _equal(self, value):
        return " AND ".join(f"{quote_identifier(name)} = {_literal(part)}"
                            for name, part in zip(self.paging_columns, self._pair(value),
                                                  strict=True))

    def page_query(self, after, page_rows):
        """The next page: at most ``page_rows`` rows with key above ``after``.

        With a ``tiebreak``, ``after`` is a ``(key, tiebreak)`` pair and "above" is
        in the order of the pair.
        """
        key = quote_identifier(self.key)
        more = []
        if after is not None and self.tiebreak is None:
            more = [f"{key} > {_literal(after)}"]
        elif after is not None:
            first, second = self._pair(after)
            more = [f"({key} > {_literal(first)} OR ({key} = {_literal(first)} AND "
                    f"{quote_identifier(self.tiebreak)} > {_literal(second)}))"]
        order = ", ".join(quote_identifier(name) for name in self.paging_columns)
        return (f"SELECT TOP {int(page_rows)} {self._select()} FROM {self.table}"
                f"{self._conditions(*more)} ORDER BY {order}")

    def tie_query(self, value):
        """Every row whose key (with a ``tiebreak``: key and tiebreak) equals ``value``."""
        return f"SELECT {self._select()} FROM {self.table}{self._conditions(self._equal(value))}"

    def count_query(self, null_keys=False, equal=None):
        """``COUNT(*)`` of the rows, of those without a key, or of those whose key is ``equal``."""
        more = []
        if null_keys:
            nulls = [f"{quote_identifier(name)} IS NULL" for name in self.paging_columns]
            more.append(nulls[0] if len(nulls) == 1 else "(" + " OR ".join(nulls) + ")")
        if equal is not None:
            more.append(self._equal(equal))
        return f"SELECT COUNT(*) AS n FROM {self.table}{self._conditions(*more)}"

    def as_dict(self):
        settings = {"service": self.service, "table": self.table, "key": self.key,
                    "columns": self.columns if self.columns == "*" else list(self.columns),
                    "where": self.where}
        if self.catalog is not None:
            settings["read_as"] = self.catalog
        # Only when set, so that manifests of catalogs paged by the key alone read as
        # they did (and resume); a changed tiebreak changes the pages: no resume.
        if self.tiebreak is not None:
            settings["tiebreak"] = self.tiebreak
        return settings


def _same_identifier(a, b):
    """Whether two column names name one column in ADQL: regular identifiers compare
    without case (``obsid`` is ``OBSID``), delimited ones (``"[Fe/H]"``, a reserved
    word such as ``"Size"``: `quote_identifier` quotes them) exactly."""
    if quote_identifier(a) == a and quote_identifier(b) == b:
        return a.lower() == b.lower()
    return a == b


def _literal(value):
    """An ADQL literal that compares exactly equal to the key value it came from."""
    if isinstance(value, str | bytes | np.str_ | np.bytes_):
        text = value.decode() if isinstance(value, bytes | np.bytes_) else str(value)
        return "'" + text.replace("'", "''") + "'"
    if isinstance(value, bool | np.bool_):
        raise CatalogError(f"a boolean key ({value!r}) cannot order rows; choose another key")
    if isinstance(value, int | np.integer):
        return str(int(value))
    number = float(value)
    if not np.isfinite(number):
        raise CatalogError(f"key value {value!r} is not finite; choose a key without NaN")
    # repr of a double is the shortest decimal that reads back as the same double.
    return repr(number)


def _jsonable(value):
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, bytes):
        value = value.decode()
    return value


def _jsonable_key(value):
    """A key value (or a [key, tiebreak] pair) as JSON holds it."""
    if isinstance(value, list | tuple):
        return [_jsonable(part) for part in value]
    return _jsonable(value)


@dataclass
class CatalogSummary:
    """What `build_catalog` did.

    Attributes
    ----------
    directory : str
    n_rows, n_pages : int
        In the whole catalog (pages done before a resume included).
    n_predicted : int
        Rows with a prediction.
    reasons : dict
        Rows without prediction per `~stellar_ml_ages.MassAgeFlag` bit.
    resumed_pages : int
        Pages found done in the manifest when the call started.
    seconds, tap_seconds, annotate_seconds, write_seconds : float
        Wall time of this call, and the parts spent fetching, annotating, writing.
    """

    directory: str
    n_rows: int = 0
    n_pages: int = 0
    n_predicted: int = 0
    reasons: dict = field(default_factory=dict)
    resumed_pages: int = 0
    seconds: float = 0.0
    tap_seconds: float = 0.0
    annotate_seconds: float = 0.0
    write_seconds: float = 0.0

    def text(self):
        reasons = ", ".join(f"{n} {name}" for name, n in self.reasons.items()) or "none"
        rate = self.n_rows / self.seconds if self.seconds and not self.resumed_pages else None
        return (f"{self.directory}: {self.n_rows} rows in {self.n_pages} parts, "
                f"{self.n_predicted} with predictions; no prediction: {reasons}"
                + (f"; {rate:,.0f} rows/s" if rate else "")
                + (f" (resumed after {self.resumed_pages} pages)" if self.resumed_pages else ""))


class _DamagedManifest(CatalogError):
    """A manifest this package wrote (format 1) that no longer reads as one: its
    structure, a page record's checksum or the manifest's own checksum
    (``manifest_sha256``, over every other field) is not what was written.

    Unlike a file it did not write, ``restart=True`` may replace it: starting over
    then deletes only the parts whose bytes are still those it records (`_ours`).
    """

    def __init__(self, message, manifest):
        super().__init__(message)
        self.manifest = manifest


#: What every page record of a manifest holds.
_PAGE_FIELDS = {"part": str, "rows": int, "sha256": str, "predicted": int, "reasons": dict}


def read_manifest(directory):
    """The manifest of a catalog directory, or None when it has none.

    Raises
    ------
    CatalogError
        ``_manifest.json`` is not a manifest of this package (not JSON, not an
        object, no or another format: never overwritten, even with ``restart``),
        or one that was damaged or edited (no ``pages`` list, a page record that
        is not the one written, a field changed after the manifest's checksum was
        written: ``restart=True`` starts over).

    Examples
    --------
    >>> from stellar_ml_ages.catalog import read_manifest
    >>> read_manifest("no/such/catalog") is None
    True
    """
    path = Path(directory) / MANIFEST
    if not path.is_file():
        return None
    where = repr(str(path))
    foreign = ("stellar_ml_ages did not write it, and never overwrites it (not even with "
               "--restart): move it out of the directory, or build into another one")
    try:
        manifest = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise CatalogError(f"{where} is not a readable manifest ({error}): {foreign}") from None
    if not isinstance(manifest, dict):
        raise CatalogError(f"{where} is not a catalog manifest (a JSON "
                           f"{type(manifest).__name__}, not an object): {foreign}")
    if "format" not in manifest:
        raise CatalogError(f"{where} is not a catalog manifest (no 'format'): {foreign}")
    if manifest["format"] != _MANIFEST_FORMAT:
        raise CatalogError(f"{where} has manifest format {manifest['format']!r}; this "
                           f"stellar_ml_ages writes format {_MANIFEST_FORMAT}: build with the "
                           "version that wrote it, or into another directory")
    problem = _manifest_problem(manifest) or _checksum_problem(manifest)
    if problem:
        raise _DamagedManifest(
            f"{where} is damaged or was edited ({problem}): it no longer says which parts "
            "were written and where the next page starts. Pass restart=True (--restart) to "
            "start over (deleting only the parts whose bytes it records), or build into "
            "another directory", manifest)
    return manifest


def _json_sha256(content, own_field):
    """Checksum of a JSON object without ``own_field``, the field that holds it."""
    content = {name: value for name, value in content.items() if name != own_field}
    return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()


def _record_sha256(page):
    """Checksum of a page's record in the manifest, without itself.

    A resume starts after the last record's ``last_key``: an edited one would repeat
    or skip rows, so records are checked as parts are.
    """
    return _json_sha256(page, "record_sha256")


def _manifest_sha256(manifest):
    """Checksum of a whole manifest (as JSON holds it), without itself.

    Covers what a record's checksum does not: ``complete``, ``summary``, ``pending``,
    the settings and which records there are.
    """
    return _json_sha256(manifest, "manifest_sha256")


def _checksum_problem(manifest):
    """What the manifest's own checksum says is wrong with it, or None.

    Manifests of an output version (``OUTPUT_VERSION``) always carry it; earlier ones
    do not, and are refused for resume by their missing ``output_version``.
    """
    recorded = manifest.get("manifest_sha256")
    if recorded is None:
        return ("no manifest_sha256, which every manifest with an output_version has"
                if "output_version" in manifest else None)
    if recorded != _manifest_sha256(manifest):
        return ("its content is not the one its manifest_sha256 was written for: a field "
                "(complete, summary, a setting, a record) was changed")
    return None


def _manifest_problem(manifest):
    """What is wrong with a format-1 manifest's structure, or None."""
    pages = manifest.get("pages")
    if not isinstance(pages, list):
        return "no 'pages' list" if pages is None else f"'pages' is a {type(pages).__name__}"
    if not isinstance(manifest.get("complete"), bool):
        return "no 'complete' flag"
    for index, page in enumerate(pages):
        name = f"part-{index:06d}.parquet"
        if not isinstance(page, dict):
            return f"page {index} is a {type(page).__name__}, not a record"
        missing = [field for field, kind in _PAGE_FIELDS.items()
                   if not isinstance(page.get(field), kind) or isinstance(page.get(field), bool)]
        if missing or "last_key" not in page:
            return f"the record of page {index} has no valid {(missing or ['last_key'])[0]}"
        # Only names this package writes, in its order: a record can never make a
        # build delete or overwrite any other file.
        if page["part"] != name:
            return f"page {index} names {page['part']!r}, not {name!r}"
        # Records written before records had checksums are taken as they are (such a
        # manifest has no output_version, and is not resumed); later ones have them.
        if "record_sha256" not in page and "output_version" in manifest:
            return f"the record of page {index} has no record_sha256"
        if "record_sha256" in page and page["record_sha256"] != _record_sha256(page):
            return (f"the record of {name} is not the one written with it (first_key, "
                    "last_key, rows or sha256 changed)")
    pending = manifest.get("pending")
    if pending is not None and not (
            isinstance(pending, dict) and pending.get("part") == f"part-{len(pages):06d}.parquet"
            and isinstance(pending.get("sha256"), str)):
        return f"its 'pending' entry {pending!r} is not the next part"
    return None


def _write_manifest(directory, manifest):
    """Write ``manifest`` with its checksum (as JSON will read it back)."""
    manifest.pop("manifest_sha256", None)
    manifest["manifest_sha256"] = _manifest_sha256(json.loads(json.dumps(manifest)))
    _write_json(directory / MANIFEST, manifest)


def _write_json(path, content):
    temporary = path.with_name(f".{path.name}.part")
    temporary.write_text(json.dumps(content, indent=1) + "\n")
    os.replace(temporary, path)


def _sha256(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _settings(query, model, page_rows, options):
    # A model built in memory has no checksums until stamped: stamp it (as saving
    # would), so that a resume can tell it from any other model.
    model.to_payload()
    card = model.card
    return {
        "package_version": __version__,
        "output_version": OUTPUT_VERSION,
        "query": query.as_dict(),
        "page_rows": int(page_rows),
        "model": {"name": model.name, "version": card.get("model_version", ""),
                  "arrays_sha256": card.get("arrays", {}).get("sha256", ""),
                  "card_sha256": card.get("card_sha256", "")},
        "annotate_options": {key: _jsonable(value) for key, value in sorted(options.items())},
    }


def _differences(old, new, prefix=""):
    found = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            found += _differences(a, b, f"{prefix}{key}.")
        elif a != b:
            found.append(f"{prefix}{key} was {a!r}, now {b!r}")
    return found


def _plain_strings(page):
    """VOTable text comes as object arrays; Parquet (through astropy) needs numpy strings."""
    for name in page.colnames:
        column = page[name]
        if column.dtype.kind == "O" and column.ndim == 1:
            values = [value.decode() if isinstance(value, bytes) else value
                      for value in np.ma.getdata(column)]
            if all(isinstance(value, str) for value in values):
                mask = np.ma.getmaskarray(column)
                page[name] = np.ma.MaskedArray(np.array(values, dtype=str), mask=mask) \
                    if mask.any() else np.array(values, dtype=str)
    return page


def _sorted_ties(page, keys):
    """Rows in key order, and within a key in a fixed order (the service's is not).

    ``keys`` are the page's paging columns (key, and tiebreak if any). Rows sharing
    them are ordered by their other columns' values (vectorised: ``numpy.lexsort``),
    so that a resumed build writes the bytes of an uninterrupted one. A page whose
    key values strictly increase is already in that order; any other is sorted,
    also when no two values are equal: a service whose collation takes ``'b'`` and
    ``'B'`` for one value returns them in either order.
    """
    values = [np.asarray(page[name]) for name in keys]
    if len(page) < 2 or np.all(values[0][1:] > values[0][:-1]):
        return page
    columns = []
    for name in reversed(page.colnames):
        column = page[name]
        if name in keys or column.ndim != 1:
            continue
        data = np.ma.getdata(column)
        if data.dtype.kind == "O":
            data = data.astype(str)
        # Masked entries sort by a flag first, then by whatever value they hold.
        columns += [data, np.ma.getmaskarray(column)]
    order = np.lexsort([*columns, *(v.astype(str) if v.dtype.kind == "O" else v
                                    for v in reversed(values))])
    return page[order]


def _key_tuples(page, names):
    """The paging columns' values of every row, as tuples of plain Python values."""
    columns = [[_jsonable(value) for value in np.ma.getdata(page[name]).tolist()]
               for name in names]
    return list(zip(*columns, strict=True))


def _key_value(row):
    """A row's key as the manifest records it: the value, or a [key, tiebreak] pair."""
    return row[0] if len(row) == 1 else list(row)


def _ties(query, last, page_rows, full):
    """Every row whose key is ``last``, or a CatalogError when they do not fit an answer.

    The tie query asks for no ``MAXREC``: the service's own limit applies (the part
    holds the page's head and every tie, however many the service answers). An
    answer is cut when the service says so (OVERFLOW), or silently by a cap of its
    own: a cap the page query (``full`` rows long) did not meet is longer than
    ``full``, so only an answer at least that long is checked against ``COUNT(*)``,
    as `_check_complete` checks the whole table.
    """
    try:
        ties = run_query(query.service, query.tie_query(last))
    except TAPOverflowError:
        ties, flagged = None, True
    else:
        flagged = False
        if len(ties) < full:
            return ties
    total = int(run_query(query.service, query.count_query(equal=last))["n"][0])
    if not flagged and total <= len(ties):
        return ties
    names = ", ".join(query.paging_columns)
    value = " = ".join([names, repr(last if query.tiebreak is None else tuple(last))])
    got = ("the service cut its answer at its own row limit (MAXREC) and flagged it as "
           "truncated" if flagged else
           f"the service answered {len(ties)} of them, cut without a word by a row limit "
           "of its own")
    if query.tiebreak is None:
        remedy = (f"page on a second column unique among rows sharing a {query.key}: "
                  f"--tiebreak COLUMN (CatalogQuery(..., tiebreak=COLUMN))")
    else:
        remedy = (f"choose a --tiebreak column unique among rows sharing a {query.key} "
                  f"(not {query.tiebreak})")
    raise CatalogError(
        f"{total} rows of {query.table} share the key {value}, more than the service "
        f"returns for one query ({got}): paging on {names} would lose some of them. The "
        f"catalog is not marked complete and its parts are kept; {remedy}, and build "
        f"again with --restart")


def _overlap_error(query, repeated):
    return CatalogError(
        f"the service returned rows with {', '.join(query.paging_columns)} = "
        f"{repeated!r} again after the page that ended on them: its comparison ({query.key} "
        "> value) and its order or equality disagree, as a text key under some collations "
        "does, and paging would repeat or lose rows. Page on a numeric key (a row or "
        "observation number; --key), or on the text key with a unique numeric --tiebreak "
        "column")


def _key_column(page, key):
    """The page's name of the key column: ADQL names a regular identifier without case."""
    if key in page.colnames:
        return key
    matches = [name for name in page.colnames if name.lower() == key.lower()]
    if len(matches) == 1:
        return matches[0]
    what = (f"several columns {', '.join(matches)} for the key {key!r}" if matches else
            f"no column {key!r} to page on")
    raise CatalogError(f"the service's answer has {what} (columns: {', '.join(page.colnames)})")


def _pages(query, page_rows, after, timings):
    """(page, first key, last key) after key value ``after``: every row once, in key order.

    The keys recorded are the service's first and last of each page (its collation,
    not numpy's, orders text keys): the next page starts after the service's last.
    """
    # Exact key values of the previous page (its tie answer's included): a service
    # whose ``>`` agrees with its order and equality never returns one of them again.
    # (One that returns *fewer* rows is caught by the COUNT(*) at the end.)
    seen = set() if after is None else {query._pair(after)}
    while True:
        started = time.perf_counter()
        page = run_query(query.service, query.page_query(after, page_rows),
                         maxrec=page_rows + 1)
        if len(page) == 0:
            timings["tap"] += time.perf_counter() - started
            return
        keys = [_key_column(page, name) for name in query.paging_columns]
        rows = _key_tuples(page, keys)
        repeated = next((row for row in rows if row in seen), None)
        if repeated is not None:
            raise _overlap_error(query, _key_value(repeated))
        first_key, last = _key_value(rows[0]), None
        if len(page) >= page_rows:
            last = _key_value(rows[-1])
            # Every row sharing the key the page ends on, however many fit one answer:
            # none is cut off by TOP, none comes again on the next page (which starts
            # above it).
            ties = _ties(query, last, page_rows, len(page))
            tie_rows = set(_key_tuples(ties, [_key_column(ties, name)
                                              for name in query.paging_columns]))
            if rows[-1] not in tie_rows:
                raise CatalogError(
                    f"the service's answer to {query.tie_query(last)!r} lacks the rows "
                    f"with {', '.join(query.paging_columns)} = {last!r} it has just "
                    "returned, so paging would lose them: choose a --key (and --tiebreak) "
                    "whose values the service compares exactly (integers, identifiers)")
            # The rows the service takes for equal to the last one (under a
            # case-insensitive collation 'b' and 'B') are the tie answer's, wherever
            # they stand in the page: the head is the rest.
            head = page[np.array([row not in tie_rows for row in rows], dtype=bool)]
            page = vstack([head, ties], metadata_conflicts="silent") if len(head) else ties
            seen = set(rows) | tie_rows
        page = _sorted_ties(_plain_strings(page), keys)
        page.meta.pop("QUERY", None)  # one per page and per tie: provenance is the manifest
        last_key = last if last is not None else _key_value(rows[-1])
        if query.catalog is not None:
            from .vo.fetch import _finish

            page = _finish(page, CATALOGS[query.catalog])
        timings["tap"] += time.perf_counter() - started
        yield page, first_key, last_key
        if last is None:
            return
        after = last


def build_catalog(directory, query=None, *, preset=None, model=None, page_rows=100_000,
                  restart=False, dask=None, progress=False, **annotate_options):
    """Page a TAP table, annotate every page, write Parquet parts and a manifest.

    Parameters
    ----------
    directory : path-like
        Output directory: ``part-NNNNNN.parquet`` files and ``_manifest.json``.
    query : `CatalogQuery`, optional
        Service, table, key, columns and condition. Or ``preset``:
    preset : str, optional
        A name of ``PRESETS`` (``"lamost-dd-payne"``, ``"lamost-slam"``), from the VO
        defaults; ``query`` then may only narrow it (``where``). A preset may set
        defaults of the annotation options (``lamost-slam``: ``propagate_errors=True``,
        with SLAM's label errors); options given here win.
    model : str or `~stellar_ml_ages.model.MassAgeModel`, optional
        Default: the preset's model (``lamost-slam``: ``giants-slam``), else ``giants``.
    page_rows : int
        Rows per TAP query and per part; memory grows with it, not with the table.
    restart : bool
        Start over (deleting the parts its manifest lists, if their bytes are the
        ones it records) when the directory holds a catalog built with another
        query, model, page size or output version, or a damaged manifest; without it
        such a call refuses. A build that wrote no part yet binds nothing:
        the next call may change any setting without ``restart``. Files the manifest
        does not list are never deleted: a file named like a part
        (``part-999999.parquet``) is refused, named, for you to move.
    dask : str or ``distributed.Client``, optional
        Annotate the pages on this Dask cluster (scheduler address or client)
        while the next pages are fetched; the output is the same.
    progress : bool
        A progress bar with rows/s and ETA (the row count is asked first).
    **annotate_options
        Passed to `~stellar_ml_ages.add_mass_age` (``prefix``, ``allow_extrapolation``,
        ``propagate_errors``, ``survey_flags``, ...).

    Returns
    -------
    CatalogSummary

    Raises
    ------
    CatalogError
        The directory holds another catalog, or one written by an earlier version
        of the parts' contents (without ``restart``); a part, a page record or the
        manifest does not match its recorded checksum; a file named like a part
        that the manifest does not list (or lists with other bytes: not deleted even
        with ``restart``), or a manifest this package did not write; the key has
        nulls; more rows share one key value than the service returns for one
        query (give ``query.tiebreak``, ``--tiebreak COLUMN``); the service returns
        rows again after the page that ended on them (a text key under a collation
        whose comparison disagrees with its order); a page has other columns than
        the first.
    TAPServiceError, TAPTimeoutError, TAPQueryError
        From the service; the pages written so far stay, and the next call resumes.

    Examples
    --------
    >>> from stellar_ml_ages.catalog import CatalogQuery, build_catalog
    >>> query = CatalogQuery("http://127.0.0.1:8080/tap", "smatest.survey", "obs_key")
    >>> summary = build_catalog("survey_catalog", query,
    ...                         page_rows=50_000)  # doctest: +SKIP
    >>> import pandas as pd                        # doctest: +SKIP
    >>> stars = pd.read_parquet("survey_catalog")  # every part, one frame  # doctest: +SKIP
    """
    query = _resolve_query(query, preset)
    if query.tiebreak is not None and query.tiebreak.lower() == query.key.lower():
        raise CatalogError(f"the tiebreak (--tiebreak) must be another column than the key "
                           f"{query.key!r}")
    if preset is not None:
        annotate_options = {**PRESETS[preset].get("options", {}), **annotate_options}
    annotate_options = _not_default(annotate_options)
    if model is None:
        model = PRESETS.get(preset, {}).get("model", "giants")
    if isinstance(page_rows, bool) or not isinstance(page_rows, int | np.integer) \
            or page_rows < 2:
        raise CatalogError(f"page_rows (--page-rows) must be an integer of at least 2, got "
                           f"{page_rows!r}")
    model = get_model(model)
    if "intervals" in annotate_options:
        from .annotate import _interval_kind

        # The model's default kind spelled out is the same build (and may resume it).
        default = _interval_kind(model, None, annotate_options.get("quantiles", ()))
        if annotate_options["intervals"] == default:
            annotate_options = {key: value for key, value in annotate_options.items()
                                if key != "intervals"}
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    with _build_lock(directory):
        return _build(directory, query, model, page_rows, restart, dask, progress,
                      annotate_options)


#: Held (flock) by the build writing a directory; a dot file, so Parquet readers skip it.
LOCK_FILE = ".stellar_ml_ages.lock"


@contextlib.contextmanager
def _build_lock(directory):
    """One build per directory at a time: a second one is refused, not interleaved.

    An advisory ``flock`` on a file in the directory, released when the build ends or
    its process dies (so a killed build leaves nothing to clean up). The holder
    deletes the file before releasing it; a build that opened it before then locks a
    file no longer in the directory, which `_lock_file` tells by its inode and opens
    again (else it and the next build, on a new file, would both hold "the" lock).
    """
    path = Path(directory) / LOCK_FILE
    handle = _lock_file(path, directory)  # held for the whole build
    try:
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()} since {_now()}\n")
        handle.flush()
        yield
    finally:
        try:
            # Removed while still held: a build starting meanwhile makes a new lock file
            # (or finds this one gone by its inode), and this one has written everything.
            # Nothing of ours is left behind.
            path.unlink(missing_ok=True)
        finally:
            handle.close()


def _lock_file(path, directory, attempts=100):
    """The lock file, open and ``flock``-ed; a CatalogError when another build holds it."""
    import fcntl

    for _ in range(attempts):
        handle = open(path, "a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            handle.close()
            raise CatalogError(
                f"another build is writing to {str(directory)!r} ({holder}); wait for it to "
                "finish, or build into another directory") from None
        except BaseException:
            handle.close()
            raise
        if _is_current(handle, path):
            return handle
        # Deleted (by the build that held it) between our open and our flock: the
        # lock of a file no longer in the directory excludes no one. Open it again.
        handle.close()
    raise CatalogError(f"could not take the build lock {str(path)!r}: its file was replaced "
                       f"{attempts} times while being locked; build again")


def _is_current(handle, path):
    """Whether the open (locked) ``handle`` is the file now at ``path``."""
    try:
        now = os.stat(path)
    except FileNotFoundError:
        return False
    held = os.fstat(handle.fileno())
    return (held.st_dev, held.st_ino) == (now.st_dev, now.st_ino)


def _build(directory, query, model, page_rows, restart, dask, progress, annotate_options):
    settings = _settings(query, model, page_rows, annotate_options)
    manifest = _resume(directory, settings, restart)
    summary = CatalogSummary(str(directory), resumed_pages=len(manifest["pages"]))
    for page in manifest["pages"]:
        summary.n_rows += page["rows"]
        summary.n_predicted += page["predicted"]
        for name, n in page["reasons"].items():
            summary.reasons[name] = summary.reasons.get(name, 0) + n
    summary.n_pages = len(manifest["pages"])
    if manifest["complete"]:
        return summary

    null_keys = int(run_query(query.service, query.count_query(null_keys=True))["n"][0])
    if null_keys:
        raise CatalogError(f"{null_keys} rows of {query.table} have no "
                           f"{' or no '.join(query.paging_columns)}: keyset paging would "
                           "never reach them; choose a key (and tiebreak) without nulls")
    started = time.perf_counter()
    timings = {"tap": 0.0, "annotate": 0.0, "write": 0.0}
    after = manifest["pages"][-1]["last_key"] if manifest["pages"] else None
    bar = _progress_bar(query, summary.n_rows) if progress else None
    run = RunSummary(model)
    annotate = _local_annotator(model, annotate_options, run, query, summary.n_rows) \
        if dask is None else _dask_annotator(dask, model, annotate_options, run, query)
    try:
        for annotated, first_key, last_key in annotate(_pages(query, page_rows, after,
                                                              timings), timings):
            t0 = time.perf_counter()
            _write_part(directory, manifest, annotated, first_key, last_key, annotate_options)
            timings["write"] += time.perf_counter() - t0
            page = manifest["pages"][-1]
            summary.n_rows += page["rows"]
            summary.n_predicted += page["predicted"]
            summary.n_pages += 1
            for name, n in page["reasons"].items():
                summary.reasons[name] = summary.reasons.get(name, 0) + n
            if bar is not None:
                bar.update(page["rows"])
        _check_complete(query, summary.n_rows, manifest, page_rows)
        manifest["complete"] = True
        manifest["finished"] = _now()
        manifest["summary"] = {"rows": summary.n_rows, "predicted": summary.n_predicted,
                               "reasons": summary.reasons}
        _write_manifest(directory, manifest)
    finally:
        if bar is not None:
            bar.close()
    summary.seconds = time.perf_counter() - started
    summary.tap_seconds = timings["tap"]
    summary.annotate_seconds = timings["annotate"]
    summary.write_seconds = timings["write"]
    # With Dask only what the first page said about the table is in ``run``.
    run.warn(stacklevel=2)
    return summary


def _check_complete(query, n_rows, manifest, page_rows):
    """Refuse to call a catalog complete when the service's COUNT(*) disagrees.

    A service that caps every result at fewer rows than ``page_rows`` without
    saying so (no overflow status) returns a short page, which paging takes for the
    last one: the count is the only way to tell.
    """
    total = int(run_query(query.service, query.count_query())["n"][0])
    if total == n_rows:
        return
    last = manifest["pages"][-1]["rows"] if manifest["pages"] else 0
    if total > n_rows:
        key = manifest["pages"][-1]["last_key"] if manifest["pages"] else None
        # A service whose comparison of text (key > value) disagrees with its order
        # (a collation) skips rows without a trace in any one page.
        text = isinstance(key[0] if isinstance(key, list) else key, str)
        collation = (f"the service's comparison of the text key ({query.key} > value) "
                     "disagrees with its order (a collation): page on a numeric key (--key) "
                     "or with a unique numeric --tiebreak")
        if last < page_rows:
            raise CatalogError(
                f"{query.table} has {total} rows (COUNT(*)) but paging got {n_rows}: the "
                f"service seems to cap results at {last} rows without saying so (the last "
                f"page had {last}, fewer than page_rows {page_rows}). The catalog is not "
                f"marked complete; build it again with page_rows={max(last - 1, 2)} "
                f"(--page-rows {max(last - 1, 2)} --restart)"
                + (f"; or else {collation}" if text else ""))
        raise CatalogError(
            f"{query.table} has {total} rows (COUNT(*)) but paging got {n_rows}, though no "
            "page came short: " + (f"{collation}; or else " if text else "")
            + "rows were added during the build. The catalog is not marked complete; "
            "build it again (restart=True, --restart) once the table is stable")
    raise CatalogError(
        f"paging got {n_rows} rows but {query.table} now has {total} (COUNT(*)): the table "
        "changed during the build. The catalog is not marked complete; build it again "
        "(restart=True, --restart) once the table is stable")


def _not_default(options):
    """The options that differ from `~stellar_ml_ages.add_mass_age`'s defaults.

    So the manifest (and whether a run may resume) does not depend on whether a
    default was spelled out, from Python or the command line.
    """
    import inspect

    from .annotate import add_mass_age

    defaults = {name: parameter.default
                for name, parameter in inspect.signature(add_mass_age).parameters.items()}
    return {name: value for name, value in options.items()
            if name not in defaults or not _same(value, defaults[name])}


def _same(value, default):
    """Equal as the manifest would record them (numpy scalars as Python ones)."""
    value, default = _jsonable(value), _jsonable(default)
    return type(value) is type(default) and value == default


def _resolve_query(query, preset):
    if preset is None:
        if query is None:
            raise ValueError("give a CatalogQuery or a preset name")
        return query
    if preset not in PRESETS:
        raise CatalogError(f"unknown preset {preset!r}; known: {', '.join(PRESETS)}")
    entry = PRESETS[preset]
    catalog = CATALOGS[entry["catalog"]]
    from .vo.fetch import _choose_columns, position_columns, table_name

    columns = tuple(_choose_columns(catalog, catalog.columns)) if catalog.columns != "*" \
        else "*"
    key = position_columns(catalog)[0] if entry["key"] == "ra" else entry["key"]
    return CatalogQuery(catalog.url, table_name(catalog), key, columns,
                        None if query is None else query.where,
                        catalog=catalog.key if entry.get("as_fetched") else None,
                        tiebreak=None if query is None else query.tiebreak)


def _now():
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")


#: The temporary a part is written to before its rename: a name only this package uses
#: (a dot file, which Parquet readers skip), overwritten by the next write of that part.
_TEMPORARY = re.compile(r"^\.part-\d{6}\.parquet\.part$")


def _ours(directory, manifest, verified=False):
    """The part files this package provably wrote: listed, or pending with its checksum.

    A part is renamed into place before the manifest records it; ``pending`` (written
    just before the rename, with the part's sha256) recognises a part whose record a
    crash lost. To delete (``verified``: starting over, or a damaged manifest) only
    the parts whose bytes are still those it records count: its list alone proves
    nothing. Any other file named like a part is not the package's to delete.
    """
    if manifest is None:
        return set()

    def written(claim):  # the file holds the bytes the manifest records for it
        path = directory / claim["part"]
        return path.is_file() and _sha256(path) == claim["sha256"]

    def wellformed(claim):
        return (isinstance(claim, dict) and isinstance(claim.get("part"), str)
                and _PART.match(claim["part"]) is not None
                and isinstance(claim.get("sha256"), str))

    pages = manifest.get("pages") if isinstance(manifest.get("pages"), list) else []
    ours = {page["part"] for page in pages
            if wellformed(page) and (not verified or written(page))}
    pending = manifest.get("pending")
    if wellformed(pending) and written(pending):
        ours.add(pending["part"])
    return ours


def _refuse_foreign_parts(directory, ours, listed=frozenset()):
    """No file named like a part that the manifest does not account for.

    It would be overwritten by a later part, or read with the catalog by every
    Parquet dataset reader, and the package cannot tell it from the user's data:
    the user moves it, the package never deletes it. A part the manifest lists
    (``listed``) whose bytes are not those it records (``ours`` holds only the
    others) is no more the package's to delete.
    """
    def names(found):
        return ", ".join(found[:5]) + (f" and {len(found) - 5} more" if len(found) > 5 else "")

    parts = sorted(path.name for path in directory.iterdir() if _PART.match(path.name))
    altered = [name for name in parts if name not in ours and name in listed]
    foreign = [name for name in parts if name not in ours and name not in listed]
    if altered:
        raise CatalogError(
            f"{str(directory)!r} holds {names(altered)}, which its {MANIFEST} lists but "
            "whose bytes are not the ones it records (edited, replaced or damaged): "
            "stellar_ml_ages deletes only the parts it wrote, not even with --restart. Move "
            "it out of the directory (delete it if it is a damaged part of this build), "
            "then build again with --restart")
    if foreign:
        raise CatalogError(
            f"{str(directory)!r} holds {names(foreign)}, which its {MANIFEST} does not list: "
            "stellar_ml_ages did not write it (or lost its record) and deletes only parts "
            "a manifest lists, not even with --restart. Move it out of the directory "
            "(delete it if it is left from an interrupted build), then build again")


def _fresh(directory, settings, ours=frozenset(), listed=frozenset()):
    _refuse_foreign_parts(directory, ours, listed)
    _remove_parts(directory, ours)
    manifest = {"format": _MANIFEST_FORMAT, **settings,
                "pages": [], "complete": False, "started": _now(), "finished": None}
    _write_manifest(directory, manifest)  # at once: a crash now leaves a clean start
    return manifest


def _resume(directory, settings, restart):
    try:
        manifest = read_manifest(directory)
    except _DamagedManifest as damaged:
        if not restart:
            raise
        # Ours, but its list of parts cannot be trusted: only parts whose bytes it
        # records are deleted (any other file named like a part is refused, named).
        return _fresh(directory, settings, _ours(directory, damaged.manifest, verified=True),
                      _ours(directory, damaged.manifest))
    if manifest is None:
        foreign = [p.name for p in directory.iterdir()
                   if not (_PART.match(p.name) or p.name.startswith("."))]
        if foreign or any(_PART.match(p.name) for p in directory.iterdir()):
            raise CatalogError(
                f"{str(directory)!r} is not empty and holds no catalog manifest ("
                + ", ".join(sorted(p.name for p in directory.iterdir())[:5])
                + "): choose an empty or new directory")
        return _fresh(directory, settings)
    recorded = {key: manifest.get(key) for key in settings}
    changed = _differences(recorded, settings)
    listed = _ours(directory, manifest)
    # A build that failed before its first part (a service down, a key with nulls)
    # wrote nothing to keep: its settings do not bind the next call. Starting over
    # deletes only the listed parts whose bytes are still the ones recorded.
    if restart or (changed and not manifest["pages"]):
        return _fresh(directory, settings, _ours(directory, manifest, verified=True), listed)
    _refuse_foreign_parts(directory, listed)
    if "output_version" not in manifest:
        raise CatalogError(
            f"{str(directory)!r} holds a catalog written by an earlier stellar_ml_ages, "
            "before manifests recorded the version of their parts' contents "
            f"(output_version; this one writes {OUTPUT_VERSION}): its parts may differ from "
            "what this version writes for the same rows, and a resume would mix both. Pass "
            "restart=True (--restart) to delete its parts and start over, or choose another "
            "directory")
    if changed:
        raise CatalogError(
            f"{str(directory)!r} holds a catalog built differently ("
            + "; ".join(changed) + "): pass restart=True (--restart) to delete its parts "
            "and start over, or choose another directory")
    for page in manifest["pages"]:
        part = directory / page["part"]
        if not part.is_file():
            raise CatalogError(f"part {str(part)!r} of the manifest is missing; pass "
                               "restart=True (--restart) to rebuild")
        if _sha256(part) != page["sha256"]:
            raise CatalogError(
                f"part {str(part)!r} differs from the manifest (its bytes are not the ones "
                "written: edited, replaced or damaged); stellar_ml_ages never deletes such a "
                "file, not even with --restart: move it out of the directory (delete it if "
                "it is a damaged part of this build), then build again with restart=True "
                "(--restart)")
    # The pending part (a crash after its rename) is written again, as the same bytes.
    _remove_parts(directory, listed - {page["part"] for page in manifest["pages"]})
    return manifest


def _remove_parts(directory, names):
    """Delete the parts ``names`` (this package's, by `_ours`) and its temporaries."""
    for path in directory.iterdir():
        if path.name in names or _TEMPORARY.match(path.name):
            path.unlink()


def _for_parquet(table):
    """Missing values as NaN (floats) or "" (text) instead of astropy's ``.mask`` columns.

    astropy writes a ``<name>.mask`` column only into parts that have masked
    values, and stores 0 under a masked prediction; a dataset reader (pandas,
    Dask) takes its schema from the first part and would show those zeros.
    Integer columns with missing values keep their mask (and ``.mask`` column).
    """
    for name in table.colnames:
        column = table[name]
        if not hasattr(column, "mask") or column.ndim != 1:
            continue
        mask = np.ma.getmaskarray(column)
        kind = column.dtype.kind
        if kind == "f":
            values = np.array(np.ma.getdata(column), dtype=column.dtype)
            values[mask] = np.nan
        elif kind in "US" or not mask.any():
            values = np.ma.getdata(column).copy()
            if kind in "US":
                values[mask] = ""
        else:
            continue
        info = column.info
        plain = Column(values, name=name, unit=column.unit, description=info.description,
                       format=info.format, meta=info.meta)
        table.replace_column(name, plain)
    return table


def _write_part(directory, manifest, annotated, first_key, last_key, options):
    index = len(manifest["pages"])
    name = f"part-{index:06d}.parquet"
    temporary = directory / f".{name}.part"
    flag_name = f"{options.get('prefix', '')}mass_age_flag{options.get('suffix', '')}"
    flags = np.asarray(annotated[flag_name])
    withheld = np.ma.getmaskarray(annotated[
        f"{options.get('prefix', '')}mass{options.get('suffix', '')}"])
    reasons = count_reasons(flags[withheld])
    predicted = int(np.count_nonzero(~withheld))
    _for_parquet(annotated).write(temporary, format="parquet", overwrite=True)
    sha256 = _sha256(temporary)
    # Said before the rename: a crash between it and the record below leaves a part
    # the next call can tell from a file of the user's (by its checksum).
    manifest["pending"] = {"part": name, "sha256": sha256}
    _write_manifest(directory, manifest)
    os.replace(temporary, directory / name)
    page = {"part": name, "rows": len(annotated), "first_key": _jsonable_key(first_key),
            "last_key": _jsonable_key(last_key), "sha256": sha256, "predicted": predicted,
            "reasons": reasons}
    page["record_sha256"] = _record_sha256(page)
    manifest["pages"].append(page)
    del manifest["pending"]
    _write_manifest(directory, manifest)


class _PageHeader:
    """What `~stellar_ml_ages.reading.read_table` looks at (column names and meta), of a
    page and the query it came from."""

    def __init__(self, colnames, meta):
        self.colnames, self.meta = list(colnames), meta


def _provenance_query(query):
    """The ADQL of the whole paged table: the same for every page, fresh or resumed."""
    return f"SELECT {query._select()} FROM {query.table}{query._conditions()}"


def _first_reading(page, options, query):
    """What the table is, read from its first page: every page has its columns and meta.

    The pages lose their ``QUERY`` (one per page and tie query; the manifest records
    the query), so the reading is given the query's own: a VizieR table name
    (``"J/ApJS/245/34/catalog"``) says where the labels come from, as it does for a
    fetched table. The page itself is not changed (its part's bytes are not).
    """
    from .reading import read_table_for_call

    meta = {**page.meta, "QUERY": _provenance_query(query)}
    return read_table_for_call(_PageHeader(page.colnames, meta), options)


def _same_columns(page, reading, first_key):
    """Every page is annotated with the first page's reading: it must have its columns."""
    difference = reading.column_difference(page)
    if difference is None:
        return
    raise CatalogError(
        f"the service's page starting at key {first_key!r} has other columns than the "
        f"first page of this build ({difference}: "
        f"{', '.join(page.colnames)}; first page: {', '.join(reading.colnames)}), and every page "
        "is annotated as the first page was read. The table changed during the build, or "
        "the service answers with another column set: give --columns explicitly, or build "
        "again (--restart) once the table is stable")


def _local_annotator(model, options, run, query, rows_before=0):
    from .annotate import _annotate_call

    def annotate(pages, timings):
        reading = None
        for page, first_key, last_key in pages:
            t0 = time.perf_counter()
            first = reading is None
            if first:
                reading = _first_reading(page, options, query)
            else:
                _same_columns(page, reading, first_key)
            annotated = _annotate_call(page, model, summary=run, check_source=first,
                                       row_offset=rows_before + run.n_rows, reading=reading,
                                       **options).table
            timings["annotate"] += time.perf_counter() - t0
            yield annotated, first_key, last_key

    return annotate


def _annotate_remote(page, shipped, options, reading):
    """On a Dask worker: one page, with the model its card and arrays describe."""
    from .annotate import _annotate_call
    from .dataframes import _resolve

    # Its warnings are not issued (a worker has no user to see them, and warning
    # filters are not thread-safe): the client counts the flags itself.
    return _annotate_call(page, _resolve(shipped), check_source=False, reading=reading,
                          **options).table


def _dask_annotator(dask, model, options, run, query):
    from .annotate import _check_source
    from .dataframes import ShippedModel

    def annotate(pages, timings):
        from distributed import Client

        client = dask if isinstance(dask, Client) else Client(dask)
        try:
            shipped = client.scatter(ShippedModel.of(model), broadcast=True, hash=True)
            window = max(2 * len(client.scheduler_info().get("workers", {})), 2)
            pending = []
            reading = None
            # Pages are fetched while the cluster annotates the ones before; parts are
            # written in page order, so the output is the local run's.
            for page, first_key, last_key in pages:
                if reading is None:
                    # The workers' warnings reach no one: what the table *is* is read
                    # here, once, from the first page, as the local run does, and the
                    # workers get that reading.
                    reading = _first_reading(page, options, query)
                    _check_source(page, reading, model,
                                  options.get("propagate_errors", False), run,
                                  options.get("survey_flags", True))
                else:
                    _same_columns(page, reading, first_key)
                pending.append((client.submit(_annotate_remote, page, shipped, options,
                                              reading, pure=False), first_key, last_key))
                if len(pending) >= window:
                    yield _finished(*pending.pop(0), timings)
            while pending:
                yield _finished(*pending.pop(0), timings)
        finally:
            if client is not dask:
                with contextlib.suppress(Exception):
                    client.close()

    return annotate


def _finished(future, first_key, last_key, timings):
    t0 = time.perf_counter()
    annotated = future.result()
    timings["annotate"] += time.perf_counter() - t0  # time spent waiting for the cluster
    return annotated, first_key, last_key


def _progress_bar(query, done):
    from tqdm.auto import tqdm

    total = int(run_query(query.service, query.count_query())["n"][0])
    return tqdm(total=total, initial=done, unit="row", unit_scale=True, desc=query.table)

