"""Pure-Python SAMP peers for the tests: a private hub and a recording receiver."""

import threading
import time
import urllib.parse
from pathlib import Path

from pyvo.samp import SAMPHubServer, SAMPIntegratedClient, conf

from stellar_ml_ages.votable import read_votable

conf.use_internet = False


def start_private_hub(lockfile):
    """A headless hub on 127.0.0.1 writing its lockfile where we say."""
    hub = SAMPHubServer(addr="127.0.0.1", lockfile=str(lockfile), web_profile=False,
                        label="stellar_ml_ages unit-test hub")
    hub.start(wait=False)
    return hub


class RecordingReceiver:
    """A SAMP client that records what it is sent and replies as told.

    Parameters
    ----------
    hub : SAMPHubServer
    name : str
        Its ``samp.name``.
    behaviour : {"ok", "error", "silent"}
        Reply ``samp.ok``, ``samp.error``, or never reply.
    mtypes : sequence of str
        MTypes it subscribes to.
    """

    def __init__(self, hub, name="py-receiver", behaviour="ok",
                 mtypes=("table.load.votable", "table.select.rowList", "coord.pointAt.sky")):
        self.behaviour = behaviour
        self.messages = []   # (mtype, params)
        self.tables = []     # tables read from table.load.votable URLs
        self.files_seen = []
        self.received = threading.Event()
        self.on_message = None
        self.client = SAMPIntegratedClient(name=name, addr="127.0.0.1")
        self.client.connect(hub_params=hub.params)
        for mtype in mtypes:
            self.client.bind_receive_call(mtype, self._receive)

    @property
    def id(self):
        return self.client.get_public_id()

    def _receive(self, private_key, sender_id, msg_id, mtype, params, extra):
        self.messages.append((mtype, params))
        if mtype == "table.load.votable":
            path = Path(urllib.parse.unquote(urllib.parse.urlparse(params["url"]).path))
            self.files_seen.append(path)
            self.tables.append(read_votable(path))
        if self.on_message is not None:
            self.on_message(mtype, params)
        self.received.set()
        if self.behaviour == "silent":
            return
        # Reply a moment later, from another thread, as a real client that does some
        # work would: the hub registers a synchronous call's message id only after
        # handing the message on, and a reply arriving before that is never seen by
        # call_and_wait (astropy/astropy#7985, "Occasional SAMPProxyError"; it timed a
        # CI run out once).
        threading.Timer(0.05, self._reply, args=(msg_id,)).start()

    def _reply(self, msg_id):
        if self.behaviour == "ok":
            self.client.ereply(msg_id, "samp.ok", result={})
        else:
            self.client.ereply(msg_id, "samp.error",
                               error={"samp.errortxt": "cannot load this (test receiver)"})

    def close(self):
        self.client.disconnect()


class FakeAladin(RecordingReceiver):
    """A stand-in for Aladin 12 desktop's SAMP side, as measured against the real one.

    Named ``Aladin`` and subscribed to Aladin's own ``script.aladin.send``. It answers
    ``table.select.rowList`` with samp.ok only for a table it holds, and the script
    ``sync`` once its loads are done. ``first_load`` says what it does with the first
    ``table.load.votable`` (the ``sync`` script, like Aladin's, returns only once
    that load is done):

    - ``"silent"``: loads the table and never replies (what the real Aladin does with
      the first table in an empty view, unless the load beats its SAMP handler: the
      reply is lost to a NullPointerException in ``PlanCatalog.setFirstLocation``);
      later tables are answered;
    - ``"drop"``: neither loads nor replies (a message lost on the way);
    - ``"late"``: loads it and replies only after ``late_seconds``;
    - ``"ok"``: replies at once, like every later table.
    """

    def __init__(self, hub, first_load="silent", late_seconds=1.5):
        self.first_load = first_load
        self.late_seconds = late_seconds
        self.loaded = []   # table-ids it holds
        self.scripts = []
        self._loads = 0
        self._busy_until = 0.0  # time.monotonic() at which its loads are done
        self._closed = False
        super().__init__(hub, name="Aladin", mtypes=(
            "table.load.votable", "table.select.rowList", "coord.pointAt.sky",
            "script.aladin.send"))

    def _receive(self, private_key, sender_id, msg_id, mtype, params, extra):
        self.messages.append((mtype, params))
        if mtype == "table.load.votable":
            self._loads += 1
            behaviour = self.first_load if self._loads == 1 else "ok"
            if behaviour == "drop":
                return
            path = Path(urllib.parse.unquote(urllib.parse.urlparse(params["url"]).path))
            self.files_seen.append(path)
            self.tables.append(read_votable(path))
            self.loaded.append(params.get("table-id"))
            if behaviour == "silent":
                return
            delay = self.late_seconds if behaviour == "late" else 0.05
            self._busy_until = max(self._busy_until, time.monotonic() + delay)
            threading.Timer(delay, self._answer, args=(msg_id, "samp.ok")).start()
            return
        delay = 0.05
        if mtype == "table.select.rowList":
            known = params.get("table-id") in self.loaded
            status = "samp.ok" if known else "samp.error"
        else:
            if mtype == "script.aladin.send":
                self.scripts.append(params.get("script"))
                delay = max(self._busy_until - time.monotonic(), 0) + 0.05
            status = "samp.ok"
        threading.Timer(delay, self._answer, args=(msg_id, status)).start()

    def close(self):
        self._closed = True
        super().close()

    def _answer(self, msg_id, status):
        if self._closed:
            return
        if status == "samp.ok":
            self.client.ereply(msg_id, "samp.ok", result={})
        else:
            self.client.ereply(msg_id, "samp.error",
                               error={"samp.errortxt": "Could not find sources to select"})


def registered_names(hub):
    """``samp.name`` of every other client registered with ``hub`` (asked as a client)."""
    lister = SAMPIntegratedClient(name="lister", addr="127.0.0.1", callable=False)
    lister.connect(hub_params=hub.params)
    try:
        return [lister.get_metadata(client_id).get("samp.name", client_id)
                for client_id in lister.get_registered_clients()]
    finally:
        # Not lister.disconnect(): pyvo's does nothing for a client that is not callable.
        lister.client.unregister()
        lister.hub.disconnect()
