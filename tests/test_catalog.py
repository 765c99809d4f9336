"""Survey-scale catalogs against the real DaCHS server (issue "Survey-scale catalogs").

The mirror's ``smatest.survey`` table pages by ``obs_key``, which groups of one to
three rows share, so page boundaries fall inside groups.
"""

import json
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
        return MassAgeModel.from_parts(card, giants.forests, giants.domain)

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
    with pytest.raises(CatalogError, match="differs from the manifest"):
        build_catalog(tmp_path, query, page_rows=400)
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
