"""SAMP: sending to, and receiving from, real SAMP peers on a private loopback hub.

The hub (pyvo.samp) and the receiving clients are real SAMP peers speaking
XML-RPC over 127.0.0.1; only the application behind the receiver is a test
stand-in. TOPCAT itself is tested in test_samp_topcat.py.
"""

import io
import os
import shutil
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import astropy.units as u
import numpy as np
import pytest
from astropy.coordinates import SkyCoord

from stellar_ml_ages import add_mass_age
from stellar_ml_ages.exceptions import SAMPClientError, SAMPHubError
from stellar_ml_ages.samp import AnnotationListener, point_at, select_rows, send
from stellar_ml_ages.votable import read_votable, write_votable

from .samp_peers import RecordingReceiver, registered_names, start_private_hub


@pytest.fixture
def receiver(hub):
    peer = RecordingReceiver(hub[0])
    yield peer
    peer.close()


@pytest.fixture
def annotated(stars):
    return add_mass_age(stars, model="red-clump")


def test_send_to_named_client_keeps_units_ucds_and_provenance(hub, receiver, annotated):
    delivery = send(annotated, to="py-receiver", hub=hub[1], name="demo stars")
    assert delivery.replies[receiver.id]["samp.status"] == "samp.ok"
    assert delivery.clients == {receiver.id: "py-receiver"}
    assert delivery.seconds > 0
    (received,) = receiver.tables
    assert len(received) == len(annotated)
    assert received["mass"].unit == u.solMass and received["age_p84"].unit == u.Gyr
    assert received["mass"].meta.get("ucd", received["mass"].info.meta.get("ucd")) == "phys.mass"
    assert "16th percentile" in received["mass_p16"].description
    assert received.meta["MLMODEL"] == annotated.meta["MLMODEL"]
    assert received.meta["MLSHA256"] == annotated.meta["MLSHA256"]
    # Masked predictions stay masked, predicted values survive the trip.
    np.testing.assert_array_equal(received["mass"].mask, annotated["mass"].mask)
    np.testing.assert_allclose(received["mass"].compressed(), annotated["mass"].compressed())
    # The file was kept until the reply, then removed.
    assert not receiver.files_seen[0].exists()


def test_unsigned_64_bit_flag_columns_travel_bit_for_bit(hub, receiver, annotated):
    """Item 5 of #26: uint64 survey flag words (no VOTable type) no longer stop a send
    or a VOTable file; small values stay as they are, large ones keep their bits."""
    from stellar_ml_ages.votable import read_votable, votable_bytes

    table = annotated.copy()
    small = np.arange(len(table), dtype=np.uint64)
    large = small | np.uint64(2**63)
    table["STARFLAG"] = small
    table["ASPCAPFLAG"] = large
    send(table, to="py-receiver", hub=hub[1])
    (received,) = receiver.tables
    np.testing.assert_array_equal(np.asarray(received["STARFLAG"]), small.astype(np.int64))
    np.testing.assert_array_equal(np.asarray(received["ASPCAPFLAG"]).view(np.uint64), large)
    again = read_votable(io.BytesIO(votable_bytes(table)))
    assert "same bits" in again["ASPCAPFLAG"].description
    assert table["ASPCAPFLAG"].dtype == np.uint64  # the caller's table is untouched


def test_sent_table_is_accepted_by_add_mass_age_again(hub, receiver, annotated):
    """CDS log units ([cm.s-2], [-]) written for VOTable are read back as features."""
    send(annotated, to="py-receiver", hub=hub[1])
    again = add_mass_age(receiver.tables[0], model="red-clump", overwrite=True)
    np.testing.assert_allclose(again["mass"].compressed(), annotated["mass"].compressed())


def test_broadcast_reaches_every_subscribed_client(hub, receiver, annotated):
    other = RecordingReceiver(hub[0], name="second-receiver")
    try:
        delivery = send(annotated, hub=hub[1])
        assert set(delivery.replies) == {receiver.id, other.id}
    finally:
        other.close()
    assert len(receiver.tables) == len(other.tables) == 1


def test_client_error_reply_is_raised_and_file_removed(hub, annotated):
    refusing = RecordingReceiver(hub[0], name="refuser", behaviour="error")
    try:
        with pytest.raises(SAMPClientError, match=r"refuser.*samp.error.*cannot load this") as info:
            send(annotated, to="refuser", hub=hub[1])
    finally:
        refusing.close()
    assert info.value.reply["samp.status"] == "samp.error"
    assert not refusing.files_seen[0].exists()


def test_broadcast_failure_names_the_failing_client_once(hub, receiver, annotated):
    refusing = RecordingReceiver(hub[0], name="refuser", behaviour="error")
    try:
        with pytest.raises(SAMPClientError, match="refuser") as info:
            send(annotated, hub=hub[1])
    finally:
        refusing.close()
    assert str(info.value).count("[service:") == 1
    assert len(receiver.tables) == 1  # the willing client still got the table


def test_unknown_client_lists_the_registered_ones(hub, receiver, annotated):
    with pytest.raises(SAMPClientError, match=r"no SAMP client named 'topcat'.*py-receiver"):
        send(annotated, to="topcat", hub=hub[1])


def test_client_that_does_not_accept_tables(hub, annotated):
    viewer = RecordingReceiver(hub[0], name="sky-viewer", mtypes=("coord.pointAt.sky",))
    try:
        with pytest.raises(SAMPClientError, match=r"does not accept table.load.votable"):
            send(annotated, to="sky-viewer", hub=hub[1])
    finally:
        viewer.close()


def test_broadcast_with_no_subscriber(hub, annotated):
    with pytest.raises(SAMPClientError, match=r"no SAMP client accepts table.load.votable"):
        send(annotated, hub=hub[1])


def test_silent_client_times_out_and_file_removed(hub, annotated):
    silent = RecordingReceiver(hub[0], name="silent", behaviour="silent")
    try:
        with pytest.raises(SAMPClientError, match=r"did not answer table.load.votable within 1"):
            send(annotated, to="silent", hub=hub[1], timeout=1)
    finally:
        silent.close()
    assert not silent.files_seen[0].exists()


def test_no_client_of_ours_stays_registered(hub, receiver, annotated):
    """Item 11 of #26: pyvo's disconnect() is a no-op for a client that is not
    callable, so every send, point_at and select_rows (and every failure) left a
    `stellar_ml_ages` client registered with the hub."""
    silent = RecordingReceiver(hub[0], name="silent", behaviour="silent")
    try:
        with pytest.raises(SAMPClientError, match="did not answer"):
            send(annotated, to="silent", hub=hub[1], timeout=1)
    finally:
        silent.close()
    with pytest.raises(SAMPClientError, match="no SAMP client named"):
        send(annotated, to="nobody", hub=hub[1])
    delivery = send(annotated, to="py-receiver", hub=hub[1])
    select_rows(delivery, [0, 1], to="py-receiver", hub=hub[1])
    point_at(SkyCoord(291.0 * u.deg, 42.5 * u.deg), to="py-receiver", hub=hub[1])
    with AnnotationListener(model="giants", hub=hub[1]):
        assert "stellar_ml_ages" in registered_names(hub[0])
    assert "stellar_ml_ages" not in registered_names(hub[0])
    assert "py-receiver" in registered_names(hub[0])


def test_broadcast_skips_the_packages_own_listener(hub, receiver, annotated):
    """A listener given a broadcast annotated it again and sent it back to a sender that
    had left: the send failed although the viewers had the table."""
    with AnnotationListener(model="giants", hub=hub[1]) as listener:
        delivery = send(annotated, hub=hub[1])
        assert list(delivery.clients.values()) == ["py-receiver"]
        assert listener.handled == []
        receiver.close()
        with pytest.raises(SAMPClientError, match=r"own listener .* is not sent broadcasts"):
            send(annotated, hub=hub[1])
    assert len(receiver.tables) == 1


def test_cli_broadcast_with_a_listener_running_succeeds(hub, receiver, tmp_path, capsys):
    from stellar_ml_ages.cli import EXIT_OK, main

    with AnnotationListener(model="giants", hub=hub[1]) as listener:
        assert main(["demo", str(tmp_path / "demo.vot"), "--no-progress", "--samp",
                     "--hub", str(hub[1])]) == EXIT_OK
    assert "sent to py-receiver" in capsys.readouterr().out
    assert listener.handled == [] and len(receiver.tables) == 1


def test_listen_stopped_by_sigterm_leaves_the_hub(hub, tmp_path):
    import signal
    import sys

    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(Path(__file__).resolve().parents[1]), os.environ.get("PYTHONPATH", "")]))
    process = subprocess.Popen(
        [sys.executable, "-m", "stellar_ml_ages.cli", "listen", "--model", "giants", "--hub",
         str(hub[1])], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        deadline = time.monotonic() + 60
        while "stellar_ml_ages" not in registered_names(hub[0]):
            assert process.poll() is None, process.communicate()
            assert time.monotonic() < deadline, "the listener never registered"
            time.sleep(0.2)
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0, err
    assert "annotated 0 table(s)" in out
    assert "stellar_ml_ages" not in registered_names(hub[0])


def test_registration_failing_half_way_leaves_no_client(hub, annotated, monkeypatch):
    from pyvo.samp.client import SAMPClient

    def broken(self, metadata=None):
        raise OSError("connection reset while declaring metadata")

    before = registered_names(hub[0])
    monkeypatch.setattr(SAMPClient, "declare_metadata", broken)
    with pytest.raises(SAMPHubError, match=r"not answering.*connection reset"):
        send(annotated, hub=hub[1])  # a callable client
    with pytest.raises(SAMPHubError, match=r"not answering.*connection reset"):
        point_at(SkyCoord(291.0 * u.deg, 42.5 * u.deg), hub=hub[1])  # not callable
    monkeypatch.undo()
    # Registered but never named: it would show as its public id.
    assert registered_names(hub[0]) == before


def test_no_hub(tmp_path, annotated):
    with pytest.raises(SAMPHubError, match=r"no SAMP hub is running.*does not exist"):
        send(annotated, hub=tmp_path / "no-such-lock")


def test_stale_lockfile(tmp_path, annotated):
    lockfile = tmp_path / "lock"
    server = start_private_hub(lockfile)
    stale = lockfile.read_text()
    server.stop()
    lockfile.write_text(stale)
    with pytest.raises(SAMPHubError, match="not answering"):
        send(annotated, hub=lockfile)


def test_hub_on_another_host_is_refused_without_contacting_it(tmp_path, annotated):
    lockfile = tmp_path / "lock"
    lockfile.write_text("samp.secret=x\nsamp.hub.xmlrpc.url=http://192.0.2.7:21012/\n"
                        "samp.profile.version=1.3\n")
    with pytest.raises(SAMPHubError, match="not on a loopback address"):
        send(annotated, hub=lockfile)
    with pytest.raises(SAMPHubError, match="only local lockfiles"):
        send(annotated, hub="std-lockurl:http://192.0.2.7/lock")


def test_hub_stopping_mid_send(hub, annotated):
    stopping = RecordingReceiver(hub[0], name="stopper", behaviour="silent")
    stopping.on_message = lambda mtype, params: threading.Thread(target=hub[0].stop).start()
    try:
        with pytest.raises(SAMPHubError, match="hub"):
            send(annotated, to="stopper", hub=hub[1], timeout=20)
    finally:
        stopping.client.client.stop()
    assert not stopping.files_seen[0].exists()


def test_select_rows_and_point_at(hub, receiver, annotated):
    delivery = send(annotated, to="py-receiver", hub=hub[1])
    heavy = annotated["mass"].filled(0) > 1.3
    select_rows(delivery, heavy, to="py-receiver", hub=hub[1])
    mtype, params = receiver.messages[-1]
    assert mtype == "table.select.rowList"
    assert params["table-id"] == delivery.table_id
    assert [int(i) for i in params["row-list"]] == list(np.flatnonzero(heavy))
    point_at(SkyCoord(291.0 * u.deg, 42.5 * u.deg), to="py-receiver", hub=hub[1])
    mtype, params = receiver.messages[-1]
    assert mtype == "coord.pointAt.sky"
    assert float(params["ra"]) == pytest.approx(291.0) and float(params["dec"]) == 42.5
    with pytest.raises(ValueError, match="boolean mask or non-negative"):
        select_rows(delivery, [-1, 2], to="py-receiver", hub=hub[1])


def _ask(receiver, listener, url, timeout="60", name=None):
    """Send ``table.load.votable`` to the listener and wait for its reply."""
    params = {"url": url} if name is None else {"url": url, "name": name}
    return receiver.client.call_and_wait(
        listener.client_id, {"samp.mtype": "table.load.votable", "samp.params": params}, timeout)


def test_listener_annotates_and_sends_back(hub, receiver, stars, tmp_path):
    path = tmp_path / "in.vot"
    write_votable(stars, path)
    with AnnotationListener(model="giants", hub=hub[1]) as listener:
        reply = _ask(receiver, listener, path.as_uri(), name="mine")
    assert reply["samp.status"] == "samp.ok"
    assert reply["samp.result"]["rows"] == str(len(stars))
    (back,) = receiver.tables
    assert len(back) == len(stars) and list(back["ID"]) == list(stars["ID"])
    expected = add_mass_age(stars, model="giants")
    np.testing.assert_allclose(back["mass"].compressed(), expected["mass"].compressed())
    assert "with mass and age" in receiver.messages[0][1]["name"]
    assert listener.handled[0]["status"] == "samp.ok"
    assert not receiver.files_seen[0].exists()


def test_listener_sends_the_warnings_back(hub, receiver, stars, tmp_path):
    """A sender cannot see Python warnings: they come back in the reply and the table."""
    table = stars.copy()
    table["LOGG"] = 10 ** np.asarray(table["LOGG"].value) * table["LOGG"].unit  # linear
    path = tmp_path / "in.vot"
    write_votable(table, path)
    with AnnotationListener(model="giants", hub=hub[1]) as listener:
        reply = _ask(receiver, listener, path.as_uri(), name="mine")
    assert reply["samp.status"] == "samp.ok"
    assert "log g values look linear" in reply["samp.result"]["warnings"]
    (back,) = receiver.tables
    assert "200 of 200 rows" in back.meta["MLWARN"]
    assert listener.handled[0]["warnings"] and listener.handled[0]["status"] == "samp.ok"


def test_listener_keeps_the_senders_own_mass_and_age(hub, receiver, stars, tmp_path):
    """Seismic masses sent from TOPCAT are data: the annotation goes beside them."""
    table = stars.copy()
    table["MASS"] = np.linspace(0.9, 2.1, len(table)) * u.solMass  # e.g. asteroseismic
    table["AGE"] = np.full(len(table), 4.5) * u.Gyr
    path = tmp_path / "in.vot"
    write_votable(table, path)
    with AnnotationListener(model="giants", hub=hub[1]) as listener:
        reply = _ask(receiver, listener, path.as_uri(), name="seismic")
    assert reply["samp.status"] == "samp.ok"
    (back,) = receiver.tables
    np.testing.assert_allclose(back["MASS"], table["MASS"])
    np.testing.assert_allclose(back["AGE"], table["AGE"])
    expected = add_mass_age(stars, model="giants")
    np.testing.assert_allclose(back["ml_mass"].compressed(), expected["mass"].compressed())
    assert "MASS, AGE" in reply["samp.result"]["warnings"]
    assert "ml_mass" in back.meta["MLWARN"]


def test_listener_with_a_chosen_prefix_refuses_to_replace_columns(hub, receiver, stars,
                                                                   tmp_path):
    table = stars.copy()
    table["MASS"] = np.full(len(table), 1.2) * u.solMass
    path = tmp_path / "in.vot"
    write_votable(table, path)
    with AnnotationListener(model="giants", hub=hub[1], prefix="") as listener:
        reply = _ask(receiver, listener, path.as_uri())
    assert reply["samp.status"] == "samp.error"
    assert "already has column(s) MASS" in reply["samp.error"]["samp.errortxt"]
    assert receiver.tables == []
    with AnnotationListener(model="giants", hub=hub[1], overwrite=True) as listener:
        reply = _ask(receiver, listener, path.as_uri())
    assert reply["samp.status"] == "samp.ok"  # asked for: the column is replaced
    (back,) = receiver.tables
    assert "MASS" not in back.colnames and back["mass"].unit == u.solMass


def test_listener_reports_missing_columns_as_samp_error(hub, receiver, stars, tmp_path):
    path = tmp_path / "in.vot"
    write_votable(stars[["ID", "TEFF"]], path)
    with AnnotationListener(model="giants", hub=hub[1]) as listener:
        reply = receiver.client.call_and_wait(
            listener.client_id, {"samp.mtype": "table.load.votable",
                                 "samp.params": {"url": path.as_uri()}}, "60")
    assert reply["samp.status"] == "samp.error"
    assert "logg" in reply["samp.error"]["samp.errortxt"].lower()
    assert receiver.tables == []


def test_listener_refuses_remote_urls(hub, receiver):
    with AnnotationListener(model="giants", hub=hub[1]) as listener:
        reply = receiver.client.call_and_wait(
            listener.client_id, {"samp.mtype": "table.load.votable",
                                 "samp.params": {"url": "http://192.0.2.7/t.vot"}}, "30")
    assert reply["samp.status"] == "samp.error"
    assert "only file:// and loopback" in reply["samp.error"]["samp.errortxt"]


@pytest.mark.skipif(shutil.which("stilts") is None and not os.environ.get(
    "STELLAR_ML_AGES_REQUIRE_SAMP"), reason="stilts (Debian package) not installed")
def test_sent_votable_passes_votlint(annotated, tmp_path):
    path = tmp_path / "annotated.vot"
    write_votable(annotated, path, name="demo")
    result = subprocess.run(["stilts", "votlint", f"votable={path}"], capture_output=True,
                            text=True, timeout=120, check=False)
    # votlint exits 0 even when it finds errors: read what it says.
    lines = (result.stdout + result.stderr).splitlines()
    assert [line for line in lines if line.startswith("ERROR")] == []


def _votlint_errors(path):
    result = subprocess.run(["stilts", "votlint", f"votable={path}"], capture_output=True,
                            text=True, timeout=120, check=False)
    # votlint exits 0 even when it finds errors: read what it says.
    return [line for line in (result.stdout + result.stderr).splitlines()
            if line.startswith("ERROR")]


@pytest.mark.skipif(shutil.which("stilts") is None and not os.environ.get(
    "STELLAR_ML_AGES_REQUIRE_SAMP"), reason="stilts (Debian package) not installed")
def test_service_tables_with_missing_values_pass_votlint(annotated, tmp_path):
    """A table as DaCHS or VizieR return it (meta ID, an ID column) with missing flags
    and missing text: valid VOTable, and missing stays missing."""
    from astropy.table import MaskedColumn

    table = annotated[:3].copy()
    table.meta["ID"] = "ddpayne"
    table["ID"] = [7, 8, 9]
    table["giant"] = MaskedColumn([True, False, True], mask=[False, True, False])
    table["note"] = np.array(["ok", None, "binary?"], dtype=object)
    path = tmp_path / "service.vot"
    write_votable(table, path)
    assert _votlint_errors(path) == []
    back = read_votable(path)
    assert list(np.ma.getmaskarray(back["giant"])) == [False, True, False]
    assert back["giant"][0] and back["giant"][2]
    # VOTable text has no null but the empty cell, which TOPCAT shows as blank.
    assert list(back["note"].filled("")) == ["ok", "", "binary?"]
    assert b"None" not in path.read_bytes()
    assert list(back["ID"]) == [7, 8, 9] and back.meta["ID"] == "ddpayne"
    assert table["note"][1] is None  # the caller's table is as it was


@pytest.mark.skipif(shutil.which("stilts") is None and not os.environ.get(
    "STELLAR_ML_AGES_REQUIRE_SAMP"), reason="stilts (Debian package) not installed")
def test_topcat_reads_missing_values_as_missing(tmp_path):
    """stilts reads VOTables with STIL, TOPCAT's own library: what it prints is what a
    TOPCAT user sees in the table."""
    from astropy.table import MaskedColumn, Table

    table = Table({"ID": [1, 2, 3], "giant": MaskedColumn([True, False, False], mask=[0, 1, 0]),
                   "note": np.array(["a", None, "b"], dtype=object)}, meta={"ID": "ddpayne"})
    path = tmp_path / "service.vot"
    write_votable(table, path)
    result = subprocess.run(["stilts", "tpipe", f"in={path}", "ofmt=csv"], capture_output=True,
                            text=True, timeout=120, check=True)
    assert result.stdout.splitlines() == ["ID,giant,note", "1,true,a", "2,,", "3,false,b"]
    assert "Multiple elements with ID" not in result.stderr


def test_mixin_columns_are_refused_by_name(hub, receiver, annotated, tmp_path):
    from astropy.time import Time

    from stellar_ml_ages.exceptions import ColumnValueError, SAMPError

    table = annotated[:3].copy()
    table["position"] = SkyCoord([290, 291, 292] * u.deg, [44, 43, 42] * u.deg)
    with pytest.raises(ColumnValueError, match=r"column 'position' is a SkyCoord.*"
                                               r"table\['position_ra'\]"):
        write_votable(table, tmp_path / "x.vot")
    assert not (tmp_path / "x.vot").exists() or (tmp_path / "x.vot").stat().st_size == 0
    assert "position" in table.colnames
    observed = annotated[:3].copy()
    observed["observed"] = Time([59000, 59001, 59002], format="mjd")
    with pytest.raises(SAMPError, match=r"cannot be sent.*column 'observed' is a Time"):
        send(observed, to="py-receiver", hub=hub[1])
    assert receiver.tables == []
    assert "stellar_ml_ages" not in registered_names(hub[0])


def test_cli_annotate_sends_over_samp(hub, receiver, stars, tmp_path, capsys):
    from stellar_ml_ages.cli import EXIT_OK, EXIT_SERVICE, main

    source = tmp_path / "stars.vot"
    write_votable(stars, source)
    output = tmp_path / "annotated.vot"
    assert main(["annotate", str(source), str(output), "--model", "giants", "--no-progress",
                 "--samp", "py-receiver", "--hub", str(hub[1])]) == EXIT_OK
    assert "sent to py-receiver" in capsys.readouterr().out
    (received,) = receiver.tables
    assert received.meta["MLMODEL"] == "giants-apogee-dr17"
    assert output.is_file()
    # No hub, or no such client: found before the annotation, so no OUT is left behind
    # for the rerun to refuse ("output file exists").
    assert main(["annotate", str(source), str(tmp_path / "b.vot"), "--model", "giants",
                 "--no-progress", "--samp", "--hub", str(tmp_path / "none")]) == EXIT_SERVICE
    assert "no SAMP hub is running" in capsys.readouterr().err
    assert not (tmp_path / "b.vot").exists()
    assert main(["annotate", str(source), str(tmp_path / "c.vot"), "--model", "giants",
                 "--no-progress", "--samp", "topcat", "--hub", str(hub[1])]) == EXIT_SERVICE
    assert "no SAMP client named 'topcat'" in capsys.readouterr().err
    assert not (tmp_path / "c.vot").exists()
    assert main(["annotate", str(source), str(tmp_path / "c.vot"), "--model", "giants",
                 "--no-progress", "--samp", "py-receiver", "--hub", str(hub[1])]) == EXIT_OK


def test_cli_says_out_was_written_when_the_client_refuses_it(hub, stars, tmp_path, capsys):
    from stellar_ml_ages.cli import EXIT_SERVICE, main

    source = tmp_path / "stars.vot"
    write_votable(stars, source)
    output = tmp_path / "annotated.vot"
    refusing = RecordingReceiver(hub[0], name="refuser", behaviour="error")
    try:
        assert main(["annotate", str(source), str(output), "--model", "giants",
                     "--no-progress", "--samp", "refuser", "--hub", str(hub[1])]) \
            == EXIT_SERVICE
    finally:
        refusing.close()
    err = capsys.readouterr().err
    assert "cannot load this" in err and f"{output} was written all the same" in err
    assert len(read_votable(output)) == len(stars)


class _HostileHandler(BaseHTTPRequestHandler):
    """Loopback HTTP source: a redirect off the machine, or a table a byte at a time."""

    def do_GET(self):
        if self.path == "/redirect":
            self.send_response(302)
            self.send_header("Location", "http://192.0.2.1/stars.vot")  # TEST-NET-1
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/x-votable+xml")
        self.end_headers()
        try:
            for _ in range(600):  # 1 byte every 0.05 s: 30 s in all
                self.wfile.write(b" ")
                self.wfile.flush()
                time.sleep(0.05)
        except OSError:
            pass

    def log_message(self, *args):
        pass


@pytest.fixture
def hostile_source():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _HostileHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_listener_refuses_redirects_off_the_machine(hub, receiver, hostile_source):
    with AnnotationListener(model="giants", hub=hub[1]) as listener:
        reply = _ask(receiver, listener, f"{hostile_source}/redirect")
    assert reply["samp.status"] == "samp.error"
    assert "192.0.2.1" in reply["samp.error"]["samp.errortxt"]
    assert listener.handled[0]["status"] == "samp.error"


def test_listener_gives_up_on_a_slow_drip_within_its_deadline(hub, receiver, hostile_source):
    with AnnotationListener(model="giants", hub=hub[1], timeout=1.5) as listener:
        started = time.monotonic()
        reply = _ask(receiver, listener, f"{hostile_source}/drip", timeout="20")
        elapsed = time.monotonic() - started
    assert reply["samp.status"] == "samp.error"
    assert "more than 1.5 s" in reply["samp.error"]["samp.errortxt"]
    assert elapsed < 10


def test_listener_refuses_a_fifo(hub, receiver, tmp_path):
    fifo = tmp_path / "table.vot"
    os.mkfifo(fifo)
    with AnnotationListener(model="giants", hub=hub[1]) as listener:
        reply = _ask(receiver, listener, fifo.as_uri(), timeout="20")
    assert reply["samp.status"] == "samp.error"
    assert "not a regular file" in reply["samp.error"]["samp.errortxt"]


def test_every_worker_error_is_answered_and_counted_as_an_error(hub, receiver):
    with AnnotationListener(model="giants", hub=hub[1]) as listener:
        reply = _ask(receiver, listener, ["not", "a", "url"], timeout="20")
    assert reply["samp.status"] == "samp.error"
    assert [record["status"] for record in listener.handled] == ["samp.error"]
