"""Survey-scale catalogs against the real DaCHS server (issue "Survey-scale catalogs").

The mirror's ``smatest.survey`` table pages by ``obs_key``, which groups of one to
three rows share, so page boundaries fall inside groups.
"""

import itertools
import json
import re
import warnings

import numpy as np
import pytest
from astropy.table import Table, vstack

from stellar_ml_ages import CatalogError, TAPServiceError, __version__, get_model
from stellar_ml_ages.catalog import (
    MANIFEST,
    CatalogQuery,
    _key_column,
    _not_default,
    build_catalog,
    read_manifest,
)
from stellar_ml_ages.cli import main
from stellar_ml_ages.slam import slam_error
from stellar_ml_ages.vo import run_query

TABLE = "smatest.survey"
COLUMNS = ("obs_key", "apogee_id", "teff", "logg", "fe_h", "alpha_m", "c_fe", "n_fe",
           "aspcapflag")


@pytest.fixture(scope="module")
def survey(tap_url):
    """The mirror's survey table: every (obs_key, apogee_id), straight from the server."""
    rows = run_query(tap_url, f"SELECT obs_key, apogee_id FROM {TABLE}", maxrec=10**7)
    return tap_url, rows


def _query(tap_url, where=None):
    return CatalogQuery(tap_url, TABLE, "obs_key", COLUMNS, where)


def _parts(directory):
    return [Table.read(path) for path in sorted(directory.glob("part-*.parquet"))]


def test_a_second_build_in_the_same_directory_is_refused_while_one_runs(tmp_path):
    """M3 (#26): two builds in one directory would interleave their parts; the second
    is refused (before any query) while the first holds the directory's lock."""
    import fcntl

    from stellar_ml_ages.catalog import LOCK_FILE

    query = CatalogQuery("http://127.0.0.1:1/tap", "smatest.survey", "obs_key")
    with open(tmp_path / LOCK_FILE, "a+") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        held.write("pid 4242 since today\n")
        held.flush()
        with pytest.raises(CatalogError, match=r"another build is writing to .*pid 4242"):
            build_catalog(tmp_path, query, page_rows=100)
    # Released: the next build gets past the lock (to the service, absent here).
    with pytest.raises(TAPServiceError):
        build_catalog(tmp_path, query, page_rows=100)


def test_page_rows_below_two_is_a_catalog_error(tmp_path):
    query = CatalogQuery("http://127.0.0.1:1/tap", "smatest.survey", "obs_key")
    with pytest.raises(CatalogError, match="--page-rows"):
        build_catalog(tmp_path, query, page_rows=1)


def test_a_dask_build_says_what_the_table_is_as_a_local_one_does(tmp_path, monkeypatch):
    """M2 (#26): with --dask the label-source check runs on the client, on the first page,
    instead of vanishing on a worker."""
    distributed = pytest.importorskip("distributed")
    from stellar_ml_ages import LabelSourceWarning, demo_table
    from stellar_ml_ages import catalog as catalog_module

    page = demo_table()[:60]
    page["obs_key"] = np.arange(len(page))
    page.meta["LABELSRC"] = "LAMOST DR5 DD-Payne"
    # COUNT(*): no rows without a key, 60 in all.
    monkeypatch.setattr(catalog_module, "run_query", lambda service, adql, **kwargs: Table(
        {"n": [0 if "IS NULL" in adql else len(page)]}))
    monkeypatch.setattr(catalog_module, "_pages",
                        lambda query, page_rows, after, timings: iter([(page, 0, 59)]))
    query = CatalogQuery("http://127.0.0.1:1/tap", "lamost.dr5", "obs_key")
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=True,
                                  host="127.0.0.1", dashboard_address="127.0.0.1:0",
                                  worker_dashboard_address="127.0.0.1:0") as cluster, \
            distributed.Client(cluster) as client:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            build_catalog(tmp_path, query, page_rows=100, dask=client)
    messages = [str(w.message) for w in caught if issubclass(w.category, LabelSourceWarning)]
    assert len(messages) == 1 and "LAMOST DR5 DD-Payne" in messages[0]


class _CappedService:
    """An in-memory TAP service that answers the catalog builder's three kinds of query
    and, like some real ones, cuts every result at ``cap`` rows without saying so."""

    def __init__(self, table, cap):
        self.table, self.cap = table, cap

    def __call__(self, service, adql, **kwargs):
        import re

        key = np.asarray(self.table["obs_key"])
        if adql.startswith("SELECT COUNT(*)"):
            return Table({"n": [0 if "IS NULL" in adql else len(self.table)]})
        equal = re.search(r"obs_key\"? = (\d+)", adql)
        above = re.search(r"obs_key\"? > (\d+)", adql)
        top = re.search(r"TOP (\d+)", adql)
        rows = (key == int(equal.group(1))) if equal else (
            key > int(above.group(1)) if above else np.ones(len(key), bool))
        found = self.table[rows]
        if top:
            found = found[:int(top.group(1))]
        return found[:self.cap]


def test_a_service_that_caps_results_silently_does_not_give_a_complete_catalog(
        tmp_path, monkeypatch):
    """L1 (#26): a short page equal to a silent cap is not taken for the end: COUNT(*)
    says rows are missing, the manifest stays incomplete, and the error says how to
    rebuild; with page_rows below the cap the same service gives every row."""
    from stellar_ml_ages import catalog as catalog_module
    from stellar_ml_ages import demo_table

    stars = demo_table()[:150]
    stars["obs_key"] = np.arange(len(stars))
    monkeypatch.setattr(catalog_module, "run_query", _CappedService(stars, cap=40))
    query = CatalogQuery("http://127.0.0.1:1/tap", "demo.stars", "obs_key")
    with pytest.raises(CatalogError, match=r"150 rows \(COUNT\(\*\)\) but paging got 40.*"
                                           r"--page-rows 39 --restart"):
        build_catalog(tmp_path / "capped", query, page_rows=100, model="giants")
    assert read_manifest(tmp_path / "capped")["complete"] is False
    summary = build_catalog(tmp_path / "paged", query, page_rows=39, model="giants")
    assert summary.n_rows == 150 and read_manifest(tmp_path / "paged")["complete"] is True


def test_exact_adql_of_the_keyset_pages():
    query = CatalogQuery("http://127.0.0.1:1/tap", '"V/164/stellar5"', "ObsID",
                         ("Teff", "[Fe/H]"), "snrg > 50")
    assert query.page_query(None, 500) == (
        'SELECT TOP 500 ObsID, Teff, "[Fe/H]" FROM "V/164/stellar5" WHERE (snrg > 50) '
        "ORDER BY ObsID")
    assert query.page_query(290.25, 500).endswith("AND ObsID > 290.25 ORDER BY ObsID")
    assert query.tie_query("O'Brien").endswith("AND ObsID = 'O''Brien'")
    # A double key's literal reads back as the same double.
    value = np.float64(0.1) + np.float64(0.2)
    assert float(query.tie_query(value).rsplit("= ", 1)[1]) == value
    with pytest.raises(CatalogError, match="not finite"):
        query.tie_query(float("nan"))


def test_manifest_options_do_not_depend_on_spelling_out_defaults():
    # The command line's --no-propagate-errors and a Python call without it build the
    # same catalog, so either may resume the other.
    assert _not_default({"propagate_errors": False, "prefix": "", "survey_flags": True}) == {}
    assert _not_default({"propagate_errors": True, "prefix": "ml_"}) == {
        "propagate_errors": True, "prefix": "ml_"}
    assert _not_default({"mapping": None, "state_column": None, "n_draws": np.int64(32),
                         "allow_extrapolation": np.bool_(False)}) == {}
    assert _not_default({"mapping": {"teff": "T"}, "n_draws": 64}) == {
        "mapping": {"teff": "T"}, "n_draws": 64}
    assert _not_default({"quantiles": ()}) == {}
    assert _not_default({"quantiles": (0.025, 0.975)}) == {"quantiles": (0.025, 0.975)}


def test_the_key_column_is_found_without_case():
    page = Table({"RAdeg": [1.0], "x": [2.0]})
    assert _key_column(page, "radeg") == "RAdeg" and _key_column(page, "RAdeg") == "RAdeg"
    with pytest.raises(CatalogError, match="no column 'ObsID'"):
        _key_column(page, "ObsID")


def test_every_row_exactly_once_across_tied_page_boundaries(survey, tmp_path):
    tap_url, truth = survey
    keys = np.sort(np.asarray(truth["obs_key"]))
    page_rows = 997
    # Boundaries of fixed-size pages fall inside groups that share a key: the case
    # plain keyset paging gets wrong.
    assert np.any(keys[page_rows - 1::page_rows][:-1] == keys[page_rows::page_rows][:len(
        keys[page_rows - 1::page_rows][:-1])])
    summary = build_catalog(tmp_path, _query(tap_url), page_rows=page_rows)
    catalog = vstack(_parts(tmp_path))
    assert len(catalog) == len(truth) == summary.n_rows
    ids = np.asarray(catalog["apogee_id"])
    assert len(np.unique(ids)) == len(ids)  # no row twice
    assert set(ids) == set(np.asarray(truth["apogee_id"]))  # no row missing
    assert np.all(np.diff(np.asarray(catalog["obs_key"])) >= 0)  # key order kept
    manifest = read_manifest(tmp_path)
    assert manifest["complete"] and len(manifest["pages"]) == summary.n_pages > 20
    # Pages end where a key ends: no key is split between two parts.
    for before, after in zip(manifest["pages"], manifest["pages"][1:], strict=False):
        assert before["last_key"] < after["first_key"]
    assert "mass" in catalog.colnames and "mass_age_flag" in catalog.colnames
    # No prediction is NaN (never 0) and no part has extra columns: the directory reads
    # as one data set with pandas, whose reader skips the _manifest.json.
    assert summary.n_predicted == int(np.sum(np.isfinite(np.asarray(catalog["mass"]))))
    pd = pytest.importorskip("pandas")
    frame = pd.read_parquet(tmp_path)
    assert len(frame) == len(truth) and not any(c.endswith(".mask") for c in frame.columns)
    assert frame["mass"].notna().sum() == summary.n_predicted
    assert (frame["mass"].dropna() > 0.3).all()
    assert summary.reasons.get("SURVEY_FLAGGED", 0) == int(np.sum(
        (np.asarray(catalog["aspcapflag"]) >> 23) & 1))
    assert sum(summary.reasons.values()) >= summary.n_rows - summary.n_predicted


def test_resume_after_a_fault_gives_byte_identical_parts(survey, tmp_path, monkeypatch):
    tap_url, _ = survey
    query = _query(tap_url, "obs_key < 20000")
    clean = tmp_path / "clean"
    build_catalog(clean, query, page_rows=500)

    from stellar_ml_ages import catalog as catalog_module

    real = catalog_module.run_query
    calls = []

    def failing(*args, **kwargs):
        calls.append(args[1])
        if len(calls) == 7:
            raise TAPServiceError("connection reset (injected)", tap_url)
        return real(*args, **kwargs)

    monkeypatch.setattr(catalog_module, "run_query", failing)
    broken = tmp_path / "broken"
    with pytest.raises(TAPServiceError, match="injected"):
        build_catalog(broken, query, page_rows=500)
    done = read_manifest(broken)
    assert 0 < len(done["pages"]) and not done["complete"]
    monkeypatch.setattr(catalog_module, "run_query", real)
    summary = build_catalog(broken, query, page_rows=500)
    assert summary.resumed_pages == len(done["pages"])
    names = sorted(p.name for p in clean.glob("part-*.parquet"))
    assert names == sorted(p.name for p in broken.glob("part-*.parquet"))
    for name in names:
        assert (clean / name).read_bytes() == (broken / name).read_bytes(), name
    # A complete catalog is not rebuilt.
    again = build_catalog(broken, query, page_rows=500)
    assert again.resumed_pages == again.n_pages == summary.n_pages


def test_a_changed_query_or_model_refuses_to_resume(survey, tmp_path):
    tap_url, _ = survey
    build_catalog(tmp_path, _query(tap_url, "obs_key < 3000"), page_rows=400)
    with pytest.raises(CatalogError, match=r"query\.where was 'obs_key < 3000', now"):
        build_catalog(tmp_path, _query(tap_url, "obs_key < 4000"), page_rows=400)
    with pytest.raises(CatalogError, match=r"model\.name"):
        build_catalog(tmp_path, _query(tap_url, "obs_key < 3000"), page_rows=400,
                      model="red-clump")
    with pytest.raises(CatalogError, match="page_rows"):
        build_catalog(tmp_path, _query(tap_url, "obs_key < 3000"), page_rows=300)
    summary = build_catalog(tmp_path, _query(tap_url, "obs_key < 4000"), page_rows=400,
                            restart=True)
    assert summary.resumed_pages == 0
    assert read_manifest(tmp_path)["query"]["where"] == "obs_key < 4000"


def test_another_in_memory_model_of_the_same_name_refuses_to_resume(survey, tmp_path):
    """M4 (#26): a model built in memory gets its checksums before the manifest records
    it, so a resume with a different one (same name) is refused like a file model."""
    from stellar_ml_ages.model import MassAgeModel

    tap_url, _ = survey
    giants = get_model("giants")

    def rebuilt(shift):
        card = json.loads(json.dumps(giants.card))
        for key in ("arrays", "card_sha256"):
            card.pop(key, None)
        card["targets"][0]["calibration"]["z"] = [
            z * (1 + shift) for z in card["targets"][0]["calibration"]["z"]]
        return MassAgeModel.from_parts(card, giants.forests, giants.domain, giants.networks)

    query = _query(tap_url, "obs_key < 3000")
    build_catalog(tmp_path, query, page_rows=400, model=rebuilt(0.0))
    recorded = read_manifest(tmp_path)["model"]
    assert len(recorded["card_sha256"]) == 64 and len(recorded["arrays_sha256"]) == 64
    # The same in-memory model again resumes; a different one does not.
    assert build_catalog(tmp_path, query, page_rows=400, model=rebuilt(0.0)).n_pages
    with pytest.raises(CatalogError, match=r"model\.card_sha256"):
        build_catalog(tmp_path, query, page_rows=400, model=rebuilt(0.5))


def test_a_damaged_part_is_not_resumed_over_and_restart_recovers(survey, tmp_path):
    tap_url, _ = survey
    query = _query(tap_url, "obs_key < 3000")
    first = build_catalog(tmp_path, query, page_rows=400)
    part = sorted(tmp_path.glob("part-*.parquet"))[0]
    part.write_bytes(part.read_bytes()[:-10])
    with pytest.raises(CatalogError, match=r"differs from the manifest.*move it out"):
        build_catalog(tmp_path, query, page_rows=400)
    # Its bytes are not the package's: even --restart does not delete them.
    with pytest.raises(CatalogError, match=rf"{part.name}, which its _manifest\.json lists "
                                           "but whose bytes"):
        build_catalog(tmp_path, query, page_rows=400, restart=True)
    part.unlink()
    again = build_catalog(tmp_path, query, page_rows=400, restart=True)
    assert again.resumed_pages == 0 and again.n_rows == first.n_rows


def test_a_directory_of_other_files_is_never_emptied(survey, tmp_path):
    tap_url, _ = survey
    (tmp_path / "part-0.parquet").write_bytes(b"a pyarrow file of the user's")
    (tmp_path / "notes.txt").write_text("mine")
    for restart in (False, True):
        with pytest.raises(CatalogError, match="not empty and holds no catalog manifest"):
            build_catalog(tmp_path, _query(tap_url, "obs_key < 100"), restart=restart)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt", "part-0.parquet"]


def test_manifest_records_provenance(survey, tmp_path):
    tap_url, _ = survey
    summary = build_catalog(tmp_path, _query(tap_url, "obs_key < 5000"), page_rows=600,
                            prefix="ml_")
    manifest = json.loads((tmp_path / MANIFEST).read_text())
    giants = get_model("giants")
    assert manifest["query"] == {"service": tap_url, "table": TABLE, "key": "obs_key",
                                 "columns": list(COLUMNS), "where": "obs_key < 5000"}
    assert manifest["model"] == {"name": giants.name,
                                 "version": giants.card["model_version"],
                                 "arrays_sha256": giants.card["arrays"]["sha256"],
                                 "card_sha256": giants.card["card_sha256"]}
    assert manifest["package_version"] == __version__
    assert manifest["annotate_options"] == {"prefix": "ml_"}
    assert sum(page["rows"] for page in manifest["pages"]) == summary.n_rows
    assert manifest["summary"]["rows"] == summary.n_rows
    first = Table.read(tmp_path / manifest["pages"][0]["part"])
    assert first.meta["MLMODEL"] == giants.name and "ml_mass" in first.colnames


def test_catalog_parts_carry_the_whole_predictive_distribution(survey, tmp_path):
    """--quantiles all: each part rebuilds its stars' distributions without the model's
    inputs, for population studies of the whole catalog."""
    from stellar_ml_ages.distributions import predictive_distribution

    tap_url, _ = survey
    build_catalog(tmp_path, _query(tap_url, "obs_key < 3000"), page_rows=600, quantiles="all")
    manifest = json.loads((tmp_path / MANIFEST).read_text())
    assert manifest["annotate_options"] == {"quantiles": "all"}
    part = Table.read(tmp_path / manifest["pages"][0]["part"])
    assert {"age_p0_5", "age_p99_5", "mass_p2_5"} <= set(part.colnames)
    dist = predictive_distribution(part, "age")
    assert dist.meta["source"] == "quantile columns"
    assert np.array_equal(dist.predicted, np.isfinite(np.ma.filled(part["age"], np.nan)))


def test_a_key_with_nulls_or_a_page_of_one_is_refused(survey, tmp_path):
    tap_url, _ = survey
    # APOKASC-2 has stars without a seismic mass: paging by it would never reach them.
    query = CatalogQuery(tap_url, "smatest.apokasc2", "Mcor", ("KIC", "Mcor"))
    with pytest.raises(CatalogError, match="have no Mcor"):
        build_catalog(tmp_path, query)
    with pytest.raises(CatalogError, match="page_rows"):
        build_catalog(tmp_path, _query(tap_url), page_rows=1)


def test_the_command_line_builds_and_resumes(survey, tmp_path, capsys):
    tap_url, _ = survey
    arguments = ["catalog", str(tmp_path), "--service", tap_url, "--table", TABLE,
                 "--key", "obs_key", "--columns", ",".join(COLUMNS), "--where",
                 "obs_key < 4000", "--page-rows", "500", "--no-progress"]
    assert main(arguments) == 0
    out = capsys.readouterr().out
    assert "parts" in out and "with predictions" in out
    assert main(arguments) == 0
    assert "resumed after" in capsys.readouterr().out
    assert main([*arguments[:-5], "--where", "obs_key < 10", "--page-rows", "500"]) == 1
    assert "--restart" in capsys.readouterr().err


def test_dask_annotation_writes_the_same_parts(survey, tmp_path):
    distributed = pytest.importorskip("distributed")
    tap_url, _ = survey
    query = _query(tap_url, "obs_key < 6000")
    build_catalog(tmp_path / "local", query, page_rows=700)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  host="127.0.0.1", dashboard_address="127.0.0.1:0",
                                  worker_dashboard_address="127.0.0.1:0") as cluster, \
            distributed.Client(cluster) as client:
        build_catalog(tmp_path / "dask", query, page_rows=700, dask=client)
    names = sorted(p.name for p in (tmp_path / "local").glob("part-*.parquet"))
    assert names and names == sorted(p.name for p in (tmp_path / "dask").glob("part-*"))
    for name in names:
        assert (tmp_path / "local" / name).read_bytes() == (tmp_path / "dask" / name).read_bytes()


# --- the LAMOST SLAM preset (issue "LAMOST giants with the packaged models") -----------------

def test_lamost_slam_preset_builds_the_giant_catalog_with_slam_errors(local_vizier, tmp_path):
    truth = run_query(local_vizier, "SELECT ObsID FROM smatest.slam_giants", maxrec=10**6)
    summary = build_catalog(tmp_path / "slam", preset="lamost-slam", page_rows=700)
    parts = vstack(_parts(tmp_path / "slam"))
    assert len(parts) == len(truth) == summary.n_rows
    assert sorted(parts["OBSID"]) == sorted(truth["ObsID"])  # every star once
    manifest = read_manifest(tmp_path / "slam")
    query = manifest["query"]
    # The table found under the prefix, its own spellings, pages read as fetched.
    assert query["table"] == "smatest.slam_giants" and query["key"] == "RAdeg"
    assert "[a/M]" in query["columns"] and query["read_as"] == "slam"
    assert manifest["annotate_options"]["propagate_errors"] is True
    assert manifest["model"]["name"] == "giants-slam-apogee-dr17"
    # Portable names; every label has an error at least SLAM's scatter at the star's S/N.
    for name in ("TEFF_ERR", "LOGG_ERR", "M_H_ERR", "ALPHA_M_ERR", "C_M_ERR", "N_M_ERR"):
        assert not np.any(np.isnan(np.asarray(parts[name], dtype=float))), name
    floor = slam_error("teff", np.asarray(parts["SNRG"], dtype=float))
    assert np.all(np.asarray(parts["TEFF_ERR"]) >= floor - 1e-3)
    predicted = np.isfinite(np.asarray(parts["mass"], dtype=float))
    assert predicted.mean() > 0.8
    mass = np.asarray(parts["mass"], dtype=float)[predicted]
    low = np.asarray(parts["mass_p16"], dtype=float)[predicted]
    high = np.asarray(parts["mass_p84"], dtype=float)[predicted]
    assert np.all((low <= mass) & (mass <= high)) and 0.5 < np.median(mass) < 2.5


def test_a_preset_can_be_pointed_at_a_local_copy_from_the_command_line(tap_url, tmp_path):
    """Item 6 of #26: --service/--table with --preset, no configuration file needed."""
    out = tmp_path / "dd-payne"
    assert main(["catalog", str(out), "--preset", "lamost-dd-payne", "--service", tap_url,
                 "--table", "smatest.ddpayne", "--page-rows", "5000", "--no-progress"]) == 0
    query = read_manifest(out)["query"]
    assert query["service"] == tap_url and query["table"] == "smatest.ddpayne"


def test_a_preset_fixes_its_key(tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        main(["catalog", str(tmp_path / "x"), "--preset", "lamost-dd-payne", "--key", "ra"])
    assert info.value.code == 2
    assert "--preset fixes --key" in capsys.readouterr().err


def test_lamost_slam_preset_from_the_command_line(local_vizier, tmp_path, capsys):
    out = tmp_path / "slam-cli"
    assert main(["catalog", str(out), "--preset", "lamost-slam", "--page-rows", "5000",
                 "--no-propagate-errors", "--no-progress"]) == 0
    manifest = read_manifest(out)
    # Said over the preset's default, and recorded as add_mass_age's own default.
    assert "propagate_errors" not in manifest["annotate_options"]
    assert manifest["model"]["name"] == "giants-slam-apogee-dr17"
    assert "rows" in capsys.readouterr().out


# --- adversarial findings M7, L2, L4 of #26, against in-memory services ---------------------

class _FakeTAP:
    """An in-memory TAP service for the catalog builder's queries: ``TOP``, ``WHERE``
    of comparisons joined by AND/OR, ``IS NULL``, ``ORDER BY``, ``COUNT(*)``.

    MAXREC (``maxrec``, else the service's ``default_maxrec``) is honoured as
    `run_query` does: a longer answer raises ``TAPOverflowError`` when the service
    flags it (``flag``), or is cut silently. ``fold`` makes text compare as a
    collation does (``str.lower``: case-insensitive, so ``'b' = 'B'``); ``order_fold``
    and ``equal_fold`` override it for ORDER BY and ``=`` (a service whose order,
    equality and ``>`` disagree). Rows equal in the order come in a random order.
    """

    _TERM = re.compile(r"(\"?\w+\"?) (>|=|<) ('(?:[^']|'')*'|-?[\d.e+-]+)|(\"?\w+\"?) IS NULL"
                       r"|\bAND\b|\bOR\b")

    def __init__(self, table, *, fold=None, order_fold="fold", equal_fold="fold",
                 default_maxrec=None, flag=True, seed=0, fail_at=None):
        self.table, self.flag, self.default_maxrec = table, flag, default_maxrec
        self.fold = fold or (lambda text: text)
        self.order_fold = self.fold if order_fold == "fold" else (order_fold or (lambda t: t))
        self.equal_fold = self.fold if equal_fold == "fold" else (equal_fold or (lambda t: t))
        self.rng = np.random.default_rng(seed)
        self.queries, self.fail_at = [], fail_at
        self.maxrecs = []  # the MAXREC each query asked for (None: the service's own)

    def _compare(self, op, value, literal):
        value = value.item() if isinstance(value, np.generic) else value
        if isinstance(value, str):
            fold = self.equal_fold if op == "=" else self.fold
            value, literal = fold(value), fold(literal)
        return {">": value > literal, "<": value < literal, "=": value == literal}[op]

    def _condition(self, where):
        def term(match):
            if match.group(1):
                literal = match.group(3)
                literal = (literal[1:-1].replace("''", "'") if literal.startswith("'") else
                           float(literal) if any(c in literal for c in ".e") else int(literal))
                return f"_cmp({match.group(2)!r}, r[{match.group(1).strip(chr(34))!r}], " \
                       f"{literal!r})"
            if match.group(4):
                return f"(r[{match.group(4).strip(chr(34))!r}] is None)"
            return match.group(0).lower()

        code = self._TERM.sub(term, where)
        return eval(f"lambda r: {code}", {"_cmp": self._compare})

    def __call__(self, service, adql, maxrec=None, **kwargs):
        from stellar_ml_ages import TAPOverflowError

        self.queries.append(adql)
        self.maxrecs.append(maxrec)
        if self.fail_at is not None and len(self.queries) == self.fail_at:
            raise TAPServiceError("connection reset (injected)", service)
        parsed = re.fullmatch(r"SELECT (?:TOP (\d+) )?(.+?) FROM (\S+)(?: WHERE (.+?))?"
                              r"(?: ORDER BY (.+))?", adql)
        top, select, _, where, order = parsed.groups()
        rows = [dict(zip(self.table.colnames, row, strict=True))
                for row in self.table.iterrows()]
        if where:
            keep = self._condition(where)
            rows = [index for index, row in enumerate(rows) if keep(row)]
        else:
            rows = list(range(len(rows)))
        if select.startswith("COUNT(*)"):
            return Table({"n": [len(rows)]})
        rows = list(self.rng.permutation(rows))
        if order:
            names = [name.strip().strip('"') for name in order.split(",")]

            def rank(index):
                values = [self.table[name][index] for name in names]
                return tuple(self.order_fold(str(v)) if isinstance(v, str) else v
                             for v in values)

            rows.sort(key=rank)  # stable: equal values stay in the random order
        if top:
            rows = rows[:int(top)]
        limit = maxrec if maxrec is not None else self.default_maxrec
        if limit is not None and len(rows) > limit:
            if self.flag:
                raise TAPOverflowError(f"result truncated at {limit} rows (MAXREC)",
                                       service, adql)
            rows = rows[:limit]
        found = self.table[np.array(rows, dtype=int)]
        for name in found.colnames:  # text as VOTable gives it: objects
            if found[name].dtype.kind == "U":
                found[name] = np.array(list(found[name]), dtype=object)
        return found


def _stars(keys, **columns):
    """Demo stars with a paging key, a unique ``obs_id`` and further columns."""
    from stellar_ml_ages import demo_table

    stars = demo_table()[:len(keys)]
    stars["obs_key"] = keys
    stars["obs_id"] = np.arange(len(keys)) * 7 % len(keys)  # unique, not in key order
    for name, values in columns.items():
        stars[name] = values
    return stars


def _fake_query(key="obs_key", tiebreak=None):
    return CatalogQuery("http://127.0.0.1:1/tap", "demo.stars", key, tiebreak=tiebreak)


def _all_rows(directory):
    return vstack(_parts(directory))


def _files(directory):
    return {path.name: path.read_bytes() for path in directory.iterdir()
            if path.name != MANIFEST}


def test_exact_adql_of_paging_with_a_tiebreak():
    """M7 (#26): (key, tiebreak) pages: key above, or equal with the tiebreak above."""
    query = CatalogQuery("http://127.0.0.1:1/tap", '"V/164/stellar5"', "RAJ2000",
                         ("Teff",), "snrg > 50", tiebreak="ObsID")
    assert query.page_query(None, 500) == (
        'SELECT TOP 500 RAJ2000, ObsID, Teff FROM "V/164/stellar5" WHERE (snrg > 50) '
        "ORDER BY RAJ2000, ObsID")
    assert query.page_query([10.5, 7], 500) == (
        'SELECT TOP 500 RAJ2000, ObsID, Teff FROM "V/164/stellar5" WHERE (snrg > 50) AND '
        "(RAJ2000 > 10.5 OR (RAJ2000 = 10.5 AND ObsID > 7)) ORDER BY RAJ2000, ObsID")
    assert query.tie_query((10.5, "a'b")).endswith(
        "WHERE (snrg > 50) AND RAJ2000 = 10.5 AND ObsID = 'a''b'")
    assert query.count_query(null_keys=True) == (
        'SELECT COUNT(*) AS n FROM "V/164/stellar5" WHERE (snrg > 50) AND '
        "(RAJ2000 IS NULL OR ObsID IS NULL)")
    assert query.count_query(equal=(10.5, 7)).endswith("AND RAJ2000 = 10.5 AND ObsID = 7")
    # Without a tiebreak nothing changes.
    assert "tiebreak" not in _fake_query().as_dict()
    assert query.as_dict()["tiebreak"] == "ObsID"
    with pytest.raises(CatalogError, match="pair"):
        query.page_query(10.5, 500)


@pytest.mark.parametrize("flag", [True, False], ids=["overflow-flagged", "silently-capped"])
def test_more_ties_than_an_answer_holds_are_refused_naming_the_tiebreak(
        tmp_path, monkeypatch, flag):
    """M7 (#26): 60 rows share obs_key 40; a service whose own limit (MAXREC 50) cannot
    hold them in one answer (it flags the cut, or cuts silently): a CatalogError names
    the key, the value, the rows, the limit and --tiebreak; the manifest stays
    incomplete, the part kept. With --tiebreak the same service gives every row once."""
    from stellar_ml_ages import catalog as catalog_module

    keys = np.arange(150)
    keys[40:100] = 40
    stars = _stars(keys)
    service = _FakeTAP(stars, default_maxrec=50, flag=flag)
    monkeypatch.setattr(catalog_module, "run_query", service)
    out = tmp_path / "ties"
    with pytest.raises(CatalogError, match=r"60 rows of demo\.stars share the key obs_key = "
                                           r"40.*--tiebreak COLUMN.*--restart") as info:
        build_catalog(out, _fake_query(), page_rows=30)
    if flag:
        assert "cut its answer at its own row limit (MAXREC) and flagged it" in str(info.value)
    else:
        assert "answered 50 of them, cut without a word by a row limit of its own" in str(
            info.value)
    # The tie query asked for no MAXREC of the package's: the service's own limit cut it.
    ties = [i for i, q in enumerate(service.queries) if q.endswith("obs_key = 40")]
    assert ties and all(service.maxrecs[i] is None for i in ties)
    manifest = read_manifest(out)
    assert manifest["complete"] is False and len(manifest["pages"]) == 1
    assert (out / "part-000000.parquet").is_file()
    summary = build_catalog(out, _fake_query(tiebreak="obs_id"), page_rows=30, restart=True)
    rows = _all_rows(out)
    assert summary.n_rows == len(rows) == 150
    assert sorted(rows["obs_id"]) == list(range(150))  # every row exactly once
    manifest = read_manifest(out)
    assert manifest["complete"] and manifest["query"]["tiebreak"] == "obs_id"
    assert all(isinstance(page["last_key"], list) for page in manifest["pages"])
    assert any("(obs_key > 40 OR (obs_key = 40 AND obs_id > " in q for q in service.queries)


def test_a_tiebreak_build_resumes_byte_identically_and_pins_its_tiebreak(tmp_path, monkeypatch):
    """M7 (#26): the (key, tiebreak) pair a resume starts after comes from the manifest;
    a resume with another tiebreak (or none) is refused like any changed setting."""
    from stellar_ml_ages import catalog as catalog_module

    keys = np.repeat(np.arange(30), 5)  # every key five times
    stars = _stars(keys)
    query = _fake_query(tiebreak="obs_id")
    monkeypatch.setattr(catalog_module, "run_query", _FakeTAP(stars))
    build_catalog(tmp_path / "clean", query, page_rows=12)
    monkeypatch.setattr(catalog_module, "run_query", _FakeTAP(stars, seed=1, fail_at=9))
    with pytest.raises(TAPServiceError, match="injected"):
        build_catalog(tmp_path / "broken", query, page_rows=12)
    assert 0 < len(read_manifest(tmp_path / "broken")["pages"])
    monkeypatch.setattr(catalog_module, "run_query", _FakeTAP(stars, seed=2))
    summary = build_catalog(tmp_path / "broken", query, page_rows=12)
    assert summary.resumed_pages and summary.n_rows == 150
    assert _files(tmp_path / "clean") == _files(tmp_path / "broken")
    for other in (None, "ID"):
        with pytest.raises(CatalogError, match=r"query\.tiebreak was 'obs_id', now"):
            build_catalog(tmp_path / "broken", _fake_query(tiebreak=other), page_rows=12)


def test_the_command_line_pages_with_a_tiebreak(tmp_path, monkeypatch, capsys):
    """M7 (#26): ``--tiebreak COLUMN``; without it the refusal names it."""
    from stellar_ml_ages import catalog as catalog_module

    keys = np.zeros(80, dtype=int)  # one key value for all, more than the service answers
    monkeypatch.setattr(catalog_module, "run_query", _FakeTAP(_stars(keys), default_maxrec=50))
    arguments = ["catalog", str(tmp_path), "--service", "http://127.0.0.1:1/tap", "--table",
                 "demo.stars", "--key", "obs_key", "--page-rows", "30", "--no-progress"]
    assert main(arguments) == 1
    assert "--tiebreak COLUMN" in capsys.readouterr().err
    assert main([*arguments, "--tiebreak", "obs_id", "--restart"]) == 0
    assert read_manifest(tmp_path)["query"]["tiebreak"] == "obs_id"
    assert sorted(_all_rows(tmp_path)["obs_id"]) == list(range(80))
    assert main([*arguments, "--tiebreak", "obs_key"]) == 1
    assert "another column than the key" in capsys.readouterr().err


def _mixed_case_names(n, seed=0):
    """Names in groups of three, each written in either case: 's007', 'S007', ..."""
    rng = np.random.default_rng(seed)
    names = [f"s{i // 3:03d}" for i in range(n)]
    return np.array([name.upper() if rng.random() < 0.5 else name for name in names])


def test_a_case_insensitive_text_key_gives_every_row_once(tmp_path, monkeypatch):
    """L2 (#26): a service that orders and compares text without case takes 's007' and
    'S007' for one key value; a page ending on one of them must not keep the other
    as well as fetch it with the ties. Every row exactly once, and the parts are the
    same bytes whatever order the service returns equal values in."""
    from stellar_ml_ages import catalog as catalog_module

    names = _mixed_case_names(150)
    stars = _stars(np.arange(150), name=names)
    for seed, out in ((0, "first"), (1, "second")):
        monkeypatch.setattr(catalog_module, "run_query",
                            _FakeTAP(stars, fold=str.lower, seed=seed))
        summary = build_catalog(tmp_path / out, _fake_query("name"), page_rows=20)
        rows = _all_rows(tmp_path / out)
        assert summary.n_rows == len(rows) == 150
        assert sorted(rows["obs_id"]) == list(range(150))
        pages = read_manifest(tmp_path / out)["pages"]
        # The next page started after the service's last key, in its order.
        assert all(a["last_key"].lower() < b["first_key"].lower()
                   for a, b in itertools.pairwise(pages))
    assert _files(tmp_path / "first") == _files(tmp_path / "second")


@pytest.mark.parametrize("repeats", [True, False], ids=["rows-again", "rows-skipped"])
def test_a_service_whose_comparison_disagrees_with_its_order_is_refused(
        tmp_path, monkeypatch, repeats):
    """L2 (#26): order and equality without case, ``>`` with case (binary). After a page
    ending on 'S006', ``name > 'S006'`` returns the lowercase 's000' of the first page
    again: refused at once, naming the key and the remedies. After 's006' it skips the
    uppercase names: no page shows it, the COUNT(*) at the end refuses to call the
    catalog complete and names the collation and the same remedies."""
    from stellar_ml_ages import catalog as catalog_module

    names = np.array([f"S{i // 3:03d}" for i in range(150)])
    if repeats:
        names[:2] = "s000"
    else:
        names = np.char.lower(names)
        names[60:63] = "S020"
    stars = _stars(np.arange(150), name=names)
    monkeypatch.setattr(catalog_module, "run_query",
                        _FakeTAP(stars, order_fold=str.lower, equal_fold=str.lower))
    message = (r"rows with name = 's000' again.*numeric key.*--tiebreak" if repeats else
               r"150 rows \(COUNT\(\*\)\) but paging got 147, though no page came short: "
               r"the service's comparison of the text key \(name > value\) disagrees with "
               r"its order.*numeric key")
    with pytest.raises(CatalogError, match=message):
        build_catalog(tmp_path, _fake_query("name"), page_rows=20)
    assert read_manifest(tmp_path)["complete"] is False


def _built(tmp_path, monkeypatch, name="catalog", fail_at=None, n=100):
    """A catalog of n demo stars in pages of 20 (incomplete if ``fail_at``)."""
    from stellar_ml_ages import catalog as catalog_module

    stars = _stars(np.arange(n))
    monkeypatch.setattr(catalog_module, "run_query", _FakeTAP(stars, fail_at=fail_at))
    out = tmp_path / name
    if fail_at is None:
        build_catalog(out, _fake_query(), page_rows=20)
    else:
        with pytest.raises(TAPServiceError, match="injected"):
            build_catalog(out, _fake_query(), page_rows=20)
    monkeypatch.setattr(catalog_module, "run_query", _FakeTAP(stars))
    return out


def _edit_manifest(directory, edit, sign=False):
    """Edit the manifest as a user would (its checksum then no longer matches), or, with
    ``sign``, as the package writes it (a state it passes through: a crash)."""
    from stellar_ml_ages.catalog import _manifest_sha256

    manifest = json.loads((directory / MANIFEST).read_text())
    edit(manifest)
    if sign:
        manifest["manifest_sha256"] = _manifest_sha256(manifest)
    (directory / MANIFEST).write_text(json.dumps(manifest))


def test_a_manifest_that_is_not_an_object_is_refused_and_never_overwritten(tmp_path):
    """L4 (#26): a list in _manifest.json is no manifest of this package's: refused, even
    with --restart, with the reason; nothing in the directory changes."""
    (tmp_path / MANIFEST).write_text("[1, 2]\n")
    (tmp_path / "part-000000.parquet").write_bytes(b"the user's")
    before = {path.name: path.read_bytes() for path in tmp_path.iterdir()}
    for restart in (False, True):
        with pytest.raises(CatalogError, match=r"not a catalog manifest \(a JSON list, not "
                                               r"an object\).*not even with --restart"):
            build_catalog(tmp_path, _fake_query(), page_rows=20, restart=restart)
    assert {path.name: path.read_bytes() for path in tmp_path.iterdir()} == before
    with pytest.raises(CatalogError, match="not a catalog manifest"):
        read_manifest(tmp_path)


def test_a_manifest_without_pages_is_refused_and_restart_deletes_no_unlisted_part(
        tmp_path, monkeypatch):
    """L4 (#26): a format-1 manifest without its 'pages' is damaged: refused with
    --restart as the remedy; --restart then refuses the parts no manifest lists
    (naming them) instead of deleting them, and builds once they are moved."""
    out = _built(tmp_path, monkeypatch)
    _edit_manifest(out, lambda manifest: manifest.pop("pages"))
    parts = _files(out)
    with pytest.raises(CatalogError, match=r"damaged or was edited \(no 'pages' list\).*"
                                           r"--restart"):
        build_catalog(out, _fake_query(), page_rows=20)
    with pytest.raises(CatalogError, match=r"part-000000\.parquet, .*does not list.*Move it"):
        build_catalog(out, _fake_query(), page_rows=20, restart=True)
    assert _files(out) == parts
    for name in parts:
        if name.startswith("part-"):
            (out / name).rename(tmp_path / name)
    assert build_catalog(out, _fake_query(), page_rows=20, restart=True).n_rows == 100


def test_an_edited_last_key_is_refused_and_restart_recovers(tmp_path, monkeypatch):
    """L4 (#26): a resume starts after the last record's last_key; an edited one would
    repeat rows. The record's checksum refuses it; --restart rebuilds every row once."""
    out = _built(tmp_path, monkeypatch, fail_at=5)
    pages = read_manifest(out)["pages"]
    assert pages and not read_manifest(out)["complete"]
    last = pages[-1]["part"]

    def edit(manifest):
        manifest["pages"][-1]["last_key"] = 3

    _edit_manifest(out, edit)
    with pytest.raises(CatalogError, match=rf"record of {last} is not the one written.*"
                                           r"--restart"):
        build_catalog(out, _fake_query(), page_rows=20)
    summary = build_catalog(out, _fake_query(), page_rows=20, restart=True)
    assert summary.n_rows == 100 and sorted(_all_rows(out)["obs_id"]) == list(range(100))


def test_a_file_named_like_a_part_that_the_manifest_does_not_list_is_never_deleted(
        tmp_path, monkeypatch):
    """L4 (#26): part-999999.parquet of the user's used to be deleted on resume as an
    orphan; now resume and --restart refuse, naming it, and leave it as it was."""
    out = _built(tmp_path, monkeypatch, fail_at=5)
    (out / "part-999999.parquet").write_bytes(b"the user's own")
    for restart in (False, True):
        with pytest.raises(CatalogError, match=r"part-999999\.parquet, which its "
                                               r"_manifest\.json does not list"):
            build_catalog(out, _fake_query(), page_rows=20, restart=restart)
    assert (out / "part-999999.parquet").read_bytes() == b"the user's own"
    (out / "part-999999.parquet").unlink()
    assert build_catalog(out, _fake_query(), page_rows=20).n_rows == 100


def test_a_part_whose_record_a_crash_lost_is_recognised_by_its_checksum(tmp_path, monkeypatch):
    """L4 (#26): the manifest names the part it is about to rename ('pending', with its
    sha256): after a crash between the rename and the record, a resume writes it
    again; a file of the same name with other bytes is not the package's."""
    clean = _built(tmp_path, monkeypatch, name="clean")
    out = _built(tmp_path, monkeypatch, name="crashed")

    def crash(manifest):
        page = manifest["pages"].pop()
        manifest["pending"] = {"part": page["part"], "sha256": page["sha256"]}
        manifest["complete"] = False

    _edit_manifest(out, crash, sign=True)
    summary = build_catalog(out, _fake_query(), page_rows=20)
    assert summary.n_rows == 100 and _files(out) == _files(clean)
    _edit_manifest(out, crash, sign=True)
    (out / "part-000004.parquet").write_bytes(b"not the part")
    with pytest.raises(CatalogError, match=r"part-000004\.parquet, which"):
        build_catalog(out, _fake_query(), page_rows=20)
    assert (out / "part-000004.parquet").read_bytes() == b"not the part"


def test_a_build_that_failed_before_its_first_part_does_not_pin_its_options(
        tmp_path, monkeypatch):
    """L4 (#26): a service down at the first page left a manifest with no pages whose
    settings refused every other call without --restart; now they bind nothing."""
    out = _built(tmp_path, monkeypatch, fail_at=2)  # the COUNT of null keys, then down
    assert read_manifest(out)["pages"] == []
    summary = build_catalog(out, _fake_query(), page_rows=25, prefix="ml_")
    manifest = read_manifest(out)
    assert summary.n_rows == 100 and manifest["page_rows"] == 25
    assert manifest["annotate_options"] == {"prefix": "ml_"}
    # Once a part exists, settings bind again.
    with pytest.raises(CatalogError, match="page_rows was 25, now 20"):
        build_catalog(out, _fake_query(), page_rows=20)


def test_pages_share_the_first_pages_reading_and_keep_the_scale_note(tmp_path, monkeypatch):
    """#26: what the table is (label source, columns, state, flags) is read once, from
    the first page; every part still records what is known of its zero points."""
    from stellar_ml_ages import LabelNoiseWarning, reading
    from stellar_ml_ages import catalog as catalog_module

    stars = _stars(np.arange(60))
    stars.rename_columns(["C_FE", "N_FE", "FE_H", "ALPHA_M"],
                         ["[C/M]", "[N/M]", "[M/H]", "[alpha/M]"])
    stars["obsid"] = np.arange(60) + 10**9  # LAMOST SLAM, by its column set
    monkeypatch.setattr(catalog_module, "run_query", _FakeTAP(stars))
    readings = []
    read_table = reading.read_table
    monkeypatch.setattr(reading, "read_table",
                        lambda *args: readings.append(args) or read_table(*args))
    with pytest.warns(LabelNoiseWarning, match="LAMOST DR5 SLAM") as caught:
        build_catalog(tmp_path / "slam", _fake_query(), page_rows=20)
    assert len([w for w in caught if w.category is LabelNoiseWarning]) == 1
    assert len(readings) == 1
    parts = _parts(tmp_path / "slam")
    assert len(parts) >= 3
    for part in parts:
        assert part.meta["MLSCALE"].startswith("SLAM labels are on the APOGEE DR15")
        assert "[C/M] - [N/M]" in part.meta["MLINPUTS"]


def test_the_default_interval_kind_spelled_out_is_the_same_build(tmp_path, monkeypatch):
    """A build with intervals="robust" (the packaged models' default) resumes a build
    without it, into the parts an uninterrupted default build writes; the posterior's
    intervals are another build."""
    clean = _built(tmp_path, monkeypatch, name="clean")
    out = _built(tmp_path, monkeypatch, name="broken", fail_at=5)
    done = read_manifest(out)
    assert 0 < len(done["pages"]) < 5 and not done["complete"]
    assert "intervals" not in done["annotate_options"]
    summary = build_catalog(out, _fake_query(), page_rows=20, intervals="robust")
    assert summary.resumed_pages == len(done["pages"]) and summary.n_rows == 100
    assert _files(out) == _files(clean)
    assert "intervals" not in read_manifest(out)["annotate_options"]
    with pytest.raises(CatalogError, match="intervals"):
        build_catalog(out, _fake_query(), page_rows=20, intervals="posterior")


# --- review of the catalog builder (#26): provenance, ties, versions, checksums, lock -------

def test_a_vizier_table_name_in_the_query_says_where_the_labels_come_from(
        tmp_path, monkeypatch):
    """The pages lose their QUERY (the manifest records it); the reading of the table is
    given the query's own, so a query on J/ApJS/245/34 (DD-Payne) warns a DR17 model's
    user once. A resumed build reads the same and writes the fresh build's bytes."""
    from stellar_ml_ages import LabelSourceWarning
    from stellar_ml_ages import catalog as catalog_module

    stars = _stars(np.arange(60))
    query = CatalogQuery("http://127.0.0.1:1/tap", '"J/ApJS/245/34/catalog"', "obs_key")
    monkeypatch.setattr(catalog_module, "run_query", _FakeTAP(stars))
    with pytest.warns(LabelSourceWarning, match="LAMOST DR5 DD-Payne") as caught:
        build_catalog(tmp_path / "fresh", query, page_rows=20, model="giants")
    assert len([w for w in caught if issubclass(w.category, LabelSourceWarning)]) == 1
    assert all("QUERY" not in part.meta for part in _parts(tmp_path / "fresh"))
    monkeypatch.setattr(catalog_module, "run_query", _FakeTAP(stars, fail_at=5))
    with pytest.raises(TAPServiceError, match="injected"):  # its warnings go with it
        build_catalog(tmp_path / "resumed", query, page_rows=20, model="giants")
    monkeypatch.setattr(catalog_module, "run_query", _FakeTAP(stars, seed=3))
    with pytest.warns(LabelSourceWarning, match="LAMOST DR5 DD-Payne"):
        summary = build_catalog(tmp_path / "resumed", query, page_rows=20, model="giants")
    assert summary.resumed_pages and summary.n_rows == 60
    assert _files(tmp_path / "resumed") == _files(tmp_path / "fresh")


def test_ties_beyond_a_page_with_no_service_limit_build_every_row_once(tmp_path, monkeypatch):
    """60 rows share obs_key 40, page_rows 30, a service without a MAXREC of its own: the
    tie query fetches them all (no limit of the package's), every row once."""
    from stellar_ml_ages import catalog as catalog_module

    keys = np.arange(150)
    keys[40:100] = 40
    service = _FakeTAP(_stars(keys), default_maxrec=None)
    monkeypatch.setattr(catalog_module, "run_query", service)
    summary = build_catalog(tmp_path, _fake_query(), page_rows=30)
    rows = _all_rows(tmp_path)
    assert summary.n_rows == len(rows) == 150
    assert sorted(rows["obs_id"]) == list(range(150))
    assert read_manifest(tmp_path)["complete"] is True
    assert any(len(part) > 60 for part in _parts(tmp_path))  # the page head and all 60 ties


def test_a_resume_across_output_versions_is_refused(tmp_path, monkeypatch):
    """The parts' contents change between versions of the annotation while the package
    version of an editable install does not: the manifest's output_version pins them."""
    from stellar_ml_ages.catalog import OUTPUT_VERSION

    out = _built(tmp_path, monkeypatch, fail_at=5)
    assert read_manifest(out)["output_version"] == OUTPUT_VERSION

    def older(manifest):
        manifest["output_version"] = OUTPUT_VERSION - 1

    _edit_manifest(out, older, sign=True)
    with pytest.raises(CatalogError, match=rf"output_version was {OUTPUT_VERSION - 1}, now "
                                           rf"{OUTPUT_VERSION}.*--restart"):
        build_catalog(out, _fake_query(), page_rows=20)
    summary = build_catalog(out, _fake_query(), page_rows=20, restart=True)
    assert summary.resumed_pages == 0 and summary.n_rows == 100


def test_a_manifest_written_before_output_versions_and_record_checksums_is_not_resumed(
        tmp_path, monkeypatch):
    """A manifest without output_version (nor record or manifest checksums) was written
    by the earlier annotation ("84th percentile of prediction"): its parts would mix
    with this version's, so a resume is refused, saying so and naming --restart, which
    then deletes its parts (their bytes are the ones it records) and starts over."""
    clean = _built(tmp_path, monkeypatch, name="clean")
    out = _built(tmp_path, monkeypatch, fail_at=5)

    def earlier(manifest):
        for name in ("output_version", "manifest_sha256"):
            del manifest[name]
        for page in manifest["pages"]:
            del page["record_sha256"]

    _edit_manifest(out, earlier)
    assert read_manifest(out)["pages"]  # it reads, as the earlier format
    with pytest.raises(CatalogError, match=r"written by an earlier stellar_ml_ages.*"
                                           r"output_version.*--restart"):
        build_catalog(out, _fake_query(), page_rows=20)
    summary = build_catalog(out, _fake_query(), page_rows=20, restart=True)
    assert summary.resumed_pages == 0 and _files(out) == _files(clean)


@pytest.mark.parametrize("edit", ["complete", "record_sha256", "manifest_sha256"])
def test_an_edited_manifest_is_refused_by_its_own_checksum(tmp_path, monkeypatch, edit):
    """'complete': true on an incomplete manifest, or an edited last_key with its record's
    checksum deleted, or the manifest's checksum deleted: each is damaged (restart is
    the remedy), never a catalog that skips or repeats rows."""
    out = _built(tmp_path, monkeypatch, fail_at=5)

    def change(manifest):
        if edit == "complete":
            manifest["complete"] = True
        elif edit == "record_sha256":
            manifest["pages"][-1]["last_key"] = 3
            del manifest["pages"][-1]["record_sha256"]
        else:
            del manifest["manifest_sha256"]

    _edit_manifest(out, change)
    problem = {"complete": "manifest_sha256 was written for",
               "record_sha256": "has no record_sha256",
               "manifest_sha256": "no manifest_sha256"}[edit]
    with pytest.raises(CatalogError, match=rf"damaged or was edited \(.*{problem}.*--restart"):
        build_catalog(out, _fake_query(), page_rows=20)
    summary = build_catalog(out, _fake_query(), page_rows=20, restart=True)
    assert summary.n_rows == 100 and sorted(_all_rows(out)["obs_id"]) == list(range(100))


def test_restart_never_deletes_a_listed_part_whose_bytes_are_not_the_packages(
        tmp_path, monkeypatch):
    """--restart deletes a listed part only if its bytes are the ones the manifest
    records: a file of the user's under that name is refused, named, and kept."""
    out = _built(tmp_path, monkeypatch, fail_at=7)
    assert len(read_manifest(out)["pages"]) >= 2
    (out / "part-000000.parquet").write_bytes(b"user bytes, not the package's part")
    with pytest.raises(CatalogError, match="differs from the manifest"):
        build_catalog(out, _fake_query(), page_rows=20)
    with pytest.raises(CatalogError, match=r"part-000000\.parquet, which its _manifest\.json "
                                           r"lists but whose bytes are not the ones"):
        build_catalog(out, _fake_query(), page_rows=20, restart=True)
    assert (out / "part-000000.parquet").read_bytes().startswith(b"user bytes")
    assert (out / "part-000001.parquet").is_file()  # nothing deleted before the refusal
    (out / "part-000000.parquet").rename(tmp_path / "mine.parquet")
    assert build_catalog(out, _fake_query(), page_rows=20, restart=True).n_rows == 100


def test_paging_columns_are_not_selected_twice_in_another_case():
    """ADQL regular identifiers have no case: OBSID is the tiebreak obsid."""
    query = CatalogQuery("http://127.0.0.1:1/tap", "t", "ra", ("OBSID",), tiebreak="obsid")
    assert query._select() == "ra, OBSID"
    query = CatalogQuery("http://127.0.0.1:1/tap", "t", "RA", ("ra", "teff"))
    assert query._select() == "ra, teff"
    # Delimited names (here a reserved word) keep their case.
    query = CatalogQuery("http://127.0.0.1:1/tap", "t", "size", ("Size",))
    assert query._select() == '"size", "Size"'


def test_a_lock_file_deleted_between_open_and_flock_is_not_taken_for_the_lock(
        tmp_path, monkeypatch):
    """A build opens the lock file; the build holding it finishes and deletes it; the
    first then locks a file no longer in the directory. It must open the lock again
    (by the inode), so that a third build is refused while it runs."""
    import fcntl

    from stellar_ml_ages.catalog import LOCK_FILE, _build_lock

    real, calls = fcntl.flock, []

    def flock(handle, operation):
        calls.append(operation)
        if len(calls) == 1:  # the holder finishes between this build's open and flock
            (tmp_path / LOCK_FILE).unlink()
        return real(handle, operation)

    monkeypatch.setattr(fcntl, "flock", flock)
    with _build_lock(tmp_path):
        assert len(calls) == 2  # locked again, on the file in the directory
        assert "pid" in (tmp_path / LOCK_FILE).read_text()
        with pytest.raises(CatalogError, match="another build is writing"), \
                _build_lock(tmp_path):
            pass
    assert not (tmp_path / LOCK_FILE).exists()


@pytest.mark.parametrize("change", ["dropped", "reordered"])
def test_a_page_with_other_columns_than_the_first_is_a_catalog_error(
        tmp_path, monkeypatch, change):
    """Every page is annotated with the first page's reading: a page with other columns
    (the table changed, a service's other column set) is refused, naming them."""
    from stellar_ml_ages import catalog as catalog_module

    fake = _FakeTAP(_stars(np.arange(100)))

    def service(*args, **kwargs):
        answer = fake(*args, **kwargs)
        if len(fake.queries) >= 4 and "COUNT" not in args[1]:  # from the second page on
            if change == "dropped":
                answer.remove_column("DNU")
            else:
                answer = answer[[*answer.colnames[1:], answer.colnames[0]]]
        return answer

    monkeypatch.setattr(catalog_module, "run_query", service)
    message = r"without DNU" if change == "dropped" else r"in another order"
    with pytest.raises(CatalogError, match=rf"page starting at key 20 has other columns "
                                           rf"than the first page.*{message}"):
        build_catalog(tmp_path, _fake_query(), page_rows=20)
    assert len(read_manifest(tmp_path)["pages"]) == 1
