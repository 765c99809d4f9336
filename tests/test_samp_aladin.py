"""SAMP with Aladin: a stand-in on an in-process hub (always), and the real Aladin 12.

The real tier runs when STELLAR_ML_AGES_ALADIN_LOCK names the lockfile of a hub that
``ci/samp/start_samp_peers.sh RUNDIR PYTHON --aladin`` started (Aladin registered,
offline with ``-local``); CI sets STELLAR_ML_AGES_REQUIRE_ALADIN so that a missing
Aladin fails instead of skipping.

Aladin often does not answer the first table loaded into an empty view (unless the
load wins a race with its SAMP handler, the reply is lost to a NullPointerException in
``PlanCatalog.setFirstLocation``; the table is loaded all the same) and answers the
ones after it. `send` must report either case truthfully, fast, and without leaving
its own SAMP client on the hub.
"""

import os
import time
import warnings

import astropy.units as u
import numpy as np
import pytest
from astropy.coordinates import SkyCoord

from stellar_ml_ages import SAMPNoReplyWarning, add_mass_age, samp
from stellar_ml_ages.exceptions import SAMPClientError
from stellar_ml_ages.samp import point_at, select_rows, send

from .samp_peers import FakeAladin, registered_names


def _with_positions(table):
    rng = np.random.default_rng(5)  # demo stars get positions in the Kepler field
    table["RA"] = (290.5 + rng.normal(0, 0.5, len(table))) * u.deg
    table["DEC"] = (43.5 + rng.normal(0, 0.5, len(table))) * u.deg
    table["RA"].meta["ucd"] = "pos.eq.ra;meta.main"
    table["DEC"].meta["ucd"] = "pos.eq.dec;meta.main"
    return table


@pytest.fixture
def annotated(stars):
    return _with_positions(add_mass_age(stars, model="giants"))


# ------------------------------------------------- the stand-in, in-process hub
@pytest.fixture
def fast_grace(monkeypatch):
    monkeypatch.setattr(samp, "ALADIN_REPLY_GRACE", 0.3)


def _fake(hub, first_load, **options):
    aladin = FakeAladin(hub[0], first_load=first_load, **options)
    return aladin


def test_first_table_without_reply_is_reported_as_loaded(hub, annotated, fast_grace):
    aladin = _fake(hub, "silent")
    try:
        started = time.monotonic()
        with pytest.warns(SAMPNoReplyWarning, match=r"Aladin \(cli#\d+\) loaded table .* no SAMP"):
            first = send(annotated, to="aladin", hub=hub[1], timeout=20)
        elapsed = time.monotonic() - started
        (reply,) = first.replies.values()
        assert reply["samp.status"] == "samp.warning"
        assert reply["x-stellar_ml_ages.reply"] == "none"
        assert first.unanswered.keys() == {aladin.id}
        assert "finished loading" in first.unanswered[aladin.id]
        assert elapsed < 5 and first.seconds < 5  # not the 20 s timeout
        assert aladin.loaded == [first.table_id] and "sync" in aladin.scripts
        assert not aladin.files_seen[0].exists()
        # Later tables get Aladin's own reply, and no warning.
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            second = send(annotated, to="aladin", hub=hub[1], timeout=20)
        assert [r["samp.status"] for r in second.replies.values()] == ["samp.ok"]
        assert second.unanswered == {}
    finally:
        aladin.close()
    assert "stellar_ml_ages" not in registered_names(hub[0])


def test_a_reply_after_the_grace_is_still_taken(hub, annotated, fast_grace):
    aladin = _fake(hub, "late", late_seconds=1.5)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            delivery = send(annotated, to="aladin", hub=hub[1], timeout=20)
    finally:
        aladin.close()
    assert [r["samp.status"] for r in delivery.replies.values()] == ["samp.ok"]
    assert delivery.unanswered == {}
    assert 1.4 < delivery.seconds < 10


def test_a_table_that_never_arrived_is_an_error(hub, annotated, fast_grace):
    aladin = _fake(hub, "drop")
    try:
        started = time.monotonic()
        with pytest.raises(SAMPClientError, match=r"did not answer table.load.votable within 2 s "
                                                  r"and holds no table with table-id"):
            send(annotated, to="aladin", hub=hub[1], timeout=2)
        assert time.monotonic() - started < 8
    finally:
        aladin.close()
    assert aladin.loaded == []
    assert "stellar_ml_ages" not in registered_names(hub[0])


def test_cli_annotate_samp_aladin_says_there_was_no_reply(hub, stars, tmp_path, capsys,
                                                         fast_grace):
    from stellar_ml_ages.cli import EXIT_OK, main
    from stellar_ml_ages.votable import write_votable

    source = tmp_path / "stars.vot"
    write_votable(_with_positions(stars), source)
    aladin = _fake(hub, "silent")
    try:
        assert main(["annotate", str(source), str(tmp_path / "annotated.vot"), "--model",
                     "giants", "--no-progress", "--samp", "aladin", "--hub",
                     str(hub[1])]) == EXIT_OK
    finally:
        aladin.close()
    out, err = capsys.readouterr()
    assert "sent to Aladin" in out and "samp.warning (the table arrived" in out
    assert "sent no SAMP reply" in err and "finished loading" in err
    assert len(aladin.tables) == 1


# ------------------------------------------------------------- the real Aladin
@pytest.fixture(scope="module")
def aladin_hub():
    lock = os.environ.get("STELLAR_ML_AGES_ALADIN_LOCK")
    if not lock:
        if os.environ.get("STELLAR_ML_AGES_REQUIRE_ALADIN"):
            pytest.fail("STELLAR_ML_AGES_REQUIRE_ALADIN is set but "
                        "STELLAR_ML_AGES_ALADIN_LOCK is not")
        pytest.skip("STELLAR_ML_AGES_ALADIN_LOCK is not set (start_samp_peers.sh --aladin)")
    return lock


@pytest.fixture(scope="module")
def kepler_giants(aladin_hub):
    """The first table this test run sends to Aladin (first contact in CI), and how."""
    from stellar_ml_ages import demo_table

    table = _with_positions(add_mass_age(demo_table(), model="giants"))
    started = time.monotonic()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        delivery = send(table, to="aladin", hub=aladin_hub, name="kepler giants")
    return table, delivery, time.monotonic() - started, caught


def _truthful(delivery, caught):
    """Aladin's own samp.ok, or a load it did not answer, said so in a warning."""
    ((client_id, reply),) = delivery.replies.items()
    no_reply = [w for w in caught if issubclass(w.category, SAMPNoReplyWarning)]
    if client_id in delivery.unanswered:
        assert reply["samp.status"] == "samp.warning"
        assert len(no_reply) == 1 and delivery.table_id in str(no_reply[0].message)
    else:
        assert reply["samp.status"] == "samp.ok" and no_reply == []


def test_aladin_loads_an_annotated_table_with_positions(aladin_hub, kepler_giants):
    _, delivery, elapsed, caught = kepler_giants
    assert [name.lower() for name in delivery.clients.values()] == ["aladin"]
    _truthful(delivery, caught)
    assert elapsed < 15  # first contact: no 30 s wait for a reply that never comes
    # Aladin knows the table by our id (samp.error "Could not find sources" otherwise).
    replies = select_rows(delivery, [], to="aladin", hub=aladin_hub)
    assert [r["samp.status"] for r in replies.values()] == ["samp.ok"]


def test_aladin_reports_the_next_table_truthfully(aladin_hub, kepler_giants):
    table = kepler_giants[0]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        delivery = send(table[:50], to="aladin", hub=aladin_hub, name="kepler giants, 50")
    _truthful(delivery, caught)
    assert delivery.seconds < 15


def test_aladin_points_at_a_star(aladin_hub, kepler_giants):
    from stellar_ml_ages.samp import _call, _connected_client, _recipients

    replies = point_at(SkyCoord(291.0 * u.deg, 42.5 * u.deg), to="aladin", hub=aladin_hub)
    assert [r["samp.status"] for r in replies.values()] == ["samp.ok"]
    # Aladin's own coord.get.sky says where it is looking now.
    message = {"samp.mtype": "coord.get.sky", "samp.params": {}}
    with _connected_client(aladin_hub) as (client, url):
        ((aladin_id, name),) = _recipients(client, url, "aladin", "coord.get.sky").items()
        where = _call(client, url, aladin_id, name, message, timeout=30)["samp.result"]
    assert float(where["ra"]) == pytest.approx(291.0, abs=1e-6)
    assert float(where["dec"]) == pytest.approx(42.5, abs=1e-6)


def test_aladin_highlights_rows(aladin_hub, kepler_giants):
    table, delivery = kepler_giants[:2]
    heavy = table["mass"].filled(0) > 1.3
    assert 0 < heavy.sum() < len(table)
    replies = select_rows(delivery, heavy, to="aladin", hub=aladin_hub)
    assert [r["samp.status"] for r in replies.values()] == ["samp.ok"]
    with pytest.raises(SAMPClientError, match=r"samp.error.*Could not find sources"):
        select_rows("no-such-table-id", [0, 1], to="aladin", hub=aladin_hub)


def test_no_client_of_ours_is_left_on_the_hub(aladin_hub, kepler_giants):
    from pyvo.samp import SAMPIntegratedClient, conf
    from pyvo.samp.lockfile_helpers import read_lockfile

    with conf.set_temp("use_internet", False):
        lister = SAMPIntegratedClient(name="lister", addr="127.0.0.1", callable=False)
        lister.connect(hub_params=read_lockfile(aladin_hub))
    try:
        names = [lister.get_metadata(cid).get("samp.name", cid)
                 for cid in lister.get_registered_clients()]
    finally:
        lister.client.unregister()
        lister.hub.disconnect()
    assert "Aladin" in names
    assert "stellar_ml_ages" not in names
