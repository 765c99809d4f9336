"""Pure-Python SAMP peers for the tests: a private hub and a recording receiver."""

import threading
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
