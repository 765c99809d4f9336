"""Send annotated tables to TOPCAT, Aladin or any SAMP client, and annotate tables sent to us.

Everything here talks to a SAMP hub on this machine only: the hub is found through
its lockfile (``hub=`` argument, else ``$SAMP_HUB``, else ``~/.samp``), a hub that
advertises a non-loopback address is refused, our own client listens on
127.0.0.1, and pyvo's ``use_internet`` probe (which would contact an outside web
site to guess the host name) is switched off.

Tables travel as VOTable files written by `stellar_ml_ages.votable` (units, UCDs,
descriptions and provenance kept). A table sent to a named client uses
call-and-wait, so the file is only removed after the client has read it; a table
sent to no one in particular goes to every subscribed client in turn, the same
way.

Aladin (desktop, 12.x) seldom answers the first table loaded into an empty view:
its ``SAMPManager`` replies at once only if the plane has already finished
loading, and otherwise waits for the plane's load event, which
``PlanCatalog.waitForPlan`` fires after ``setFirstLocation()``; that throws a
NullPointerException while the view has no projection yet. The table is loaded
and shown; only the reply is lost. So a
table for Aladin goes out as an asynchronous call: Aladin's own reply is used
when it comes; when it does not come within ``ALADIN_REPLY_GRACE`` seconds, Aladin
is asked whether it holds a table with our ``table-id`` (``table.select.rowList``
with no rows) and to finish its loads (``script.aladin.send`` ``sync``), and the
`Delivery` says that the table was found loaded without a reply.

Every client this module registers is unregistered again, whatever fails
(pyvo's own ``disconnect()`` does nothing for a client that is not callable).
"""

import contextlib
import io
import os
import stat
import tempfile
import threading
import time
import urllib.parse
import urllib.request
import uuid
import warnings
import xmlrpc.client
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .exceptions import (
    ColumnValueError,
    SAMPClientError,
    SAMPError,
    SAMPHubError,
    SAMPNoReplyWarning,
    StellarMLAgesError,
)

__all__ = ["ALADIN_REPLY_GRACE", "AnnotationListener", "Delivery", "point_at", "select_rows",
           "send"]

LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
LOAD_VOTABLE = "table.load.votable"
_CLIENT_NAME = "stellar_ml_ages"

#: Prefix of the listener's new columns when a sent table has columns of their names.
COLLISION_PREFIX = "ml_"

#: Seconds to wait for Aladin's own reply to a table before asking Aladin whether
#: it holds the table (Aladin answers later tables in 0.03-0.3 s, the first never).
ALADIN_REPLY_GRACE = 1.0
# Aladin-only MTypes: a client subscribed to both is taken for Aladin desktop.
_ALADIN_SELECT = "table.select.rowList"
_ALADIN_SCRIPT = "script.aladin.send"
# Seconds to wait, after Aladin has finished its loads, for a reply still on its way.
_LATE_REPLY_WAIT = 0.5


@dataclass
class Delivery:
    """What `send` did.

    Attributes
    ----------
    table_id : str
        The ``table-id`` the receivers know the table by (use it with `select_rows`).
    url : str
        The URL the table was sent as (the file itself is gone); some clients,
        TOPCAT among them, identify the table by it.
    replies : dict
        Receiving client's public id to its SAMP response.
    clients : dict
        Receiving client's public id to its ``samp.name``.
    seconds : float
        Wall time from sending the message to the last reply (or confirmation).
    unanswered : dict
        Client id to how the table was found loaded in a client that sent no
        reply (Aladin's first table, see the module notes). Its entry in
        ``replies`` is then made by stellar_ml_ages, not by the client:
        ``samp.status`` is ``samp.warning``, ``samp.error`` says why, and
        ``x-stellar_ml_ages.reply`` is ``"none"``. Empty when every client replied.
    """

    table_id: str
    url: str = ""
    replies: dict = field(default_factory=dict)
    clients: dict = field(default_factory=dict)
    seconds: float = 0.0
    unanswered: dict = field(default_factory=dict)


# --------------------------------------------------------------------- the hub
def _lockfile_path(hub):
    location = str(hub) if hub is not None else os.environ.get("SAMP_HUB", "")
    if not location:
        location = str(Path.home() / ".samp")
    if location.startswith("std-lockurl:"):
        location = location[len("std-lockurl:"):]
    parsed = urllib.parse.urlparse(location)
    if parsed.scheme == "file":
        return Path(urllib.parse.unquote(parsed.path))
    if parsed.scheme and len(parsed.scheme) > 1:
        raise SAMPHubError(
            f"SAMP hub location {location!r} is a {parsed.scheme} URL; stellar_ml_ages reads "
            "only local lockfiles, so that it never contacts another machine")
    return Path(location)


def _hub_params(hub):
    path = _lockfile_path(hub)
    if not path.is_file():
        raise SAMPHubError(
            f"no SAMP hub is running: lockfile {str(path)!r} does not exist. Start TOPCAT or "
            "Aladin (each runs a hub), or pass hub=LOCKFILE / set SAMP_HUB=std-lockurl:file://LOCKFILE")
    params = {}
    for line in path.read_text(errors="replace").splitlines():
        if line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        params[key.strip()] = value.strip()
    url = params.get("samp.hub.xmlrpc.url", "").replace("\\", "")
    if not url or "samp.secret" not in params:
        raise SAMPHubError(f"{str(path)!r} is not a SAMP standard-profile lockfile")
    host = urllib.parse.urlparse(url).hostname
    if host not in LOOPBACK_HOSTS:
        raise SAMPHubError(
            f"the SAMP hub in {str(path)!r} is at {url}, not on a loopback address; "
            "stellar_ml_ages only talks to hubs on 127.0.0.1", service=url)
    params["samp.hub.xmlrpc.url"] = url
    return params


def _hub_failure(error, url):
    return SAMPHubError(f"the SAMP hub stopped answering: {error}", service=url)


@contextlib.contextmanager
def _connected_client(hub, callable=False, name=_CLIENT_NAME, description=None):
    """A registered pyvo SAMP client on 127.0.0.1; unregistered on exit."""
    from pyvo.samp import SAMPIntegratedClient, conf

    params = _hub_params(hub)
    url = params["samp.hub.xmlrpc.url"]
    with conf.set_temp("use_internet", False):
        client = SAMPIntegratedClient(
            name=name, description=description or "Machine-learned stellar masses and ages",
            addr="127.0.0.1", callable=callable)
        try:
            client.connect(hub_params=params)
            if callable:
                # pyvo answers client.env.get (our environment variables) by default.
                client.unbind_receive_call("client.env.get")
        except Exception as error:  # pyvo raises OSError, xmlrpc and its own errors here
            _release(client)  # registration may have got through before the failure
            raise SAMPHubError(
                f"the SAMP hub named by its lockfile is not answering ({error}); the lockfile "
                "may be left over from a hub that has stopped", service=url) from None
    try:
        yield client, url
    finally:
        _release(client)


def _release(client):
    """Unregister a pyvo client from the hub and stop it, whatever state it is in.

    ``SAMPIntegratedClient.disconnect()`` only acts when the client ``is_running``,
    which pyvo sets for callable clients alone: a client made with ``callable=False``
    stayed registered with the hub after every call (and every failure).
    """
    inner = getattr(client, "client", None)
    if inner is not None and getattr(inner, "_private_key", None) is not None:
        with contextlib.suppress(Exception):
            inner.unregister()
    if inner is not None and inner.is_running:
        with contextlib.suppress(Exception):
            inner.stop()
    with contextlib.suppress(Exception):
        client.hub.disconnect()


def _clients(client, url):
    """Public id -> samp.name of every other registered client."""
    try:
        names = {}
        for client_id in client.get_registered_clients():
            names[client_id] = client.get_metadata(client_id).get("samp.name", client_id)
        return names
    except (OSError, xmlrpc.client.Error) as error:
        raise _hub_failure(error, url) from None


def _recipients(client, url, to, mtype):
    """Client ids that should receive ``mtype``: the one named ``to``, or all subscribers."""
    names = _clients(client, url)
    try:
        subscribed = set(client.get_subscribed_clients(mtype))
    except (OSError, xmlrpc.client.Error) as error:
        raise _hub_failure(error, url) from None
    subscribed.discard(client.get_public_id())
    if to is None:
        # The package's own listener (stellar-ml-ages listen) would annotate the table
        # again and send it back to a sender that is about to unregister: a broadcast
        # is for the viewers. Name it with to= to send it a table all the same.
        ours = {cid for cid in subscribed if str(names.get(cid, "")).lower() == _CLIENT_NAME}
        subscribed -= ours
        if not subscribed:
            skipped = (f" (the package's own listener {', '.join(sorted(ours))} is not sent "
                       f"broadcasts: name it with to={_CLIENT_NAME!r})") if ours else ""
            raise SAMPClientError(
                f"no SAMP client accepts {mtype}; registered: {_listing(names)}{skipped}",
                service=url)
        return {client_id: names.get(client_id, client_id) for client_id in sorted(subscribed)}
    wanted = str(to).lower()
    matches = [cid for cid, name in names.items() if wanted in (cid.lower(), str(name).lower())]
    if not matches:
        matches = [cid for cid, name in names.items() if str(name).lower().startswith(wanted)]
    if not matches:
        raise SAMPClientError(
            f"no SAMP client named {to!r} is registered with the hub; registered: "
            f"{_listing(names)}", service=url)
    accepting = [cid for cid in matches if cid in subscribed]
    if not accepting:
        raise SAMPClientError(
            f"SAMP client {to!r} ({', '.join(matches)}) does not accept {mtype}",
            service=url, client=matches[0])
    return {accepting[0]: names[accepting[0]]}


def _listing(names):
    return ", ".join(f"{name} ({cid})" for cid, name in names.items()) or "none"


def _hub_seconds(timeout):
    """pyvo's hub takes whole seconds, at least one."""
    return str(max(int(np.ceil(timeout)), 1))


def _refused(error, url, client_id, client_name, message):
    text = getattr(error, "faultString", str(error))
    return SAMPClientError(
        f"the hub refused {message['samp.mtype']} to {client_name} ({client_id}): {text}",
        service=url, client=client_id)


def _ask(client, url, client_id, message, timeout, client_name="Aladin"):
    """call_and_wait: the reply, or None if none came within ``timeout``; a refusal or a
    hub that stops answering is a package error."""
    from pyvo.samp import SAMPProxyError

    try:
        return client.call_and_wait(client_id, message, _hub_seconds(timeout))
    except SAMPProxyError as error:
        if "timeout" in getattr(error, "faultString", str(error)).lower():
            return None
        raise _refused(error, url, client_id, client_name, message) from None
    except (OSError, xmlrpc.client.Error) as error:
        raise _hub_failure(error, url) from None


def _status(reply):
    return reply.get("samp.status") if isinstance(reply, dict) else None


def _call(client, url, client_id, client_name, message, timeout):
    """call_and_wait, with every failure turned into a package error."""
    reply = _ask(client, url, client_id, message, timeout, client_name)
    if reply is None:
        raise SAMPClientError(
            f"SAMP client {client_name} ({client_id}) did not answer "
            f"{message['samp.mtype']} within {timeout} s", service=url, client=client_id)
    return _checked(reply, url, client_id, client_name, message)


def _checked(reply, url, client_id, client_name, message):
    """The reply itself, or the package error its status calls for."""
    status = _status(reply)
    if status is None:
        # pyvo's hub returns an empty response when it stops while waiting.
        raise SAMPHubError(
            f"no reply from {client_name} ({client_id}) to {message['samp.mtype']}: the hub "
            "stopped while waiting", service=url)
    if status == "samp.error":
        error = reply.get("samp.error", {}) or {}
        raise SAMPClientError(
            f"SAMP client {client_name} ({client_id}) replied samp.error to "
            f"{message['samp.mtype']}: {error.get('samp.errortxt', 'no reason given')}",
            service=url, client=client_id, reply=reply)
    return reply


def _deliver(client, url, to, message, timeout):
    """Send ``message`` to ``to`` (or every subscriber): (replies, recipients, unanswered)."""
    recipients = _recipients(client, url, to, message["samp.mtype"])
    replies, unanswered, failures = {}, {}, []
    for client_id, client_name in recipients.items():
        try:
            if message["samp.mtype"] == LOAD_VOTABLE and _is_aladin(client, client_id,
                                                                    client_name):
                reply, note = _load_into_aladin(client, url, client_id, client_name, message,
                                                timeout)
                if note:
                    unanswered[client_id] = note
            else:
                reply = _call(client, url, client_id, client_name, message, timeout)
            replies[client_id] = reply
        except SAMPClientError as error:
            if to is not None:
                raise
            failures.append(error)
    if failures:
        raise SAMPClientError(
            "; ".join(error.message for error in failures), service=url,
            client=failures[0].client, reply=failures[0].reply)
    return replies, recipients, unanswered


# ------------------------------------------------------------------ Aladin
def _is_aladin(client, client_id, client_name):
    """Aladin desktop: named Aladin and subscribed to its own MTypes used to check a load."""
    if str(client_name).strip().lower() != "aladin":
        return False
    try:
        subscriptions = client.get_subscriptions(client_id)
    except (OSError, xmlrpc.client.Error):
        return False
    return _ALADIN_SELECT in subscriptions and _ALADIN_SCRIPT in subscriptions


def _aladin_holds(client, url, client_id, table_id, timeout):
    """Whether Aladin has a catalog plane for ``table_id``: Aladin answers
    ``table.select.rowList`` with samp.ok only for a table it holds. No rows are
    selected (Aladin clears its selection first, as for any selection)."""
    message = {"samp.mtype": _ALADIN_SELECT,
               "samp.params": {"table-id": table_id, "row-list": []}}
    return _status(_ask(client, url, client_id, message, min(timeout, 5))) == "samp.ok"


def _await_answering(client, url, client_id, client_name, deadline):
    """Ping until Aladin answers: one that has just subscribed drops its first message."""
    message = {"samp.mtype": "samp.app.ping", "samp.params": {}}
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise SAMPClientError(
                f"SAMP client {client_name} ({client_id}) did not answer samp.app.ping "
                "within the timeout, so the table was not sent", service=url, client=client_id)
        if _status(_ask(client, url, client_id, message, min(remaining, 2))) == "samp.ok":
            return


def _load_into_aladin(client, url, client_id, client_name, message, timeout):
    """``table.load.votable`` to Aladin: (reply, None) when Aladin replies, else
    (a reply made here, how the load was checked) when Aladin holds the table.

    Raises the same errors as `_call`: samp.error from Aladin, no reply and no
    table within ``timeout``, a hub that stops answering.
    """
    from pyvo.samp import SAMPProxyError

    start = time.monotonic()
    deadline = start + timeout
    _await_answering(client, url, client_id, client_name, deadline)
    answered, response = threading.Event(), {}

    def receive(private_key, responder_id, msg_tag, reply):
        response["reply"] = reply
        answered.set()

    def answer():
        return _checked(response["reply"], url, client_id, client_name, message)

    tag = f"stellar_ml_ages-{uuid.uuid4().hex[:12]}"
    client.bind_receive_response(tag, receive)
    try:
        try:
            client.call(client_id, tag, message)
        except SAMPProxyError as error:
            raise _refused(error, url, client_id, client_name, message) from None
        except (OSError, xmlrpc.client.Error) as error:
            raise _hub_failure(error, url) from None
        if answered.wait(max(min(ALADIN_REPLY_GRACE, deadline - time.monotonic()), 0)):
            return answer(), None
        table_id = message["samp.params"]["table-id"]
        while not answered.is_set() and time.monotonic() < deadline:
            if _aladin_holds(client, url, client_id, table_id, deadline - time.monotonic()):
                # "sync" returns once Aladin has finished loading every plane.
                sync = {"samp.mtype": _ALADIN_SCRIPT, "samp.params": {"script": "sync"}}
                if _ask(client, url, client_id, sync,
                        max(deadline - time.monotonic(), 1)) is None:
                    raise SAMPClientError(
                        f"SAMP client {client_name} ({client_id}) holds table {table_id} but "
                        f"was still loading it {timeout} s after it was sent, without a "
                        "reply", service=url, client=client_id)
                if answered.wait(_LATE_REPLY_WAIT):
                    return answer(), None
                if _aladin_holds(client, url, client_id, table_id,
                                 max(deadline - time.monotonic(), 1)):
                    note = (f"no reply to {LOAD_VOTABLE} within {time.monotonic() - start:.1f} "
                            f"s; Aladin holds table {table_id} and has finished loading it "
                            f"({_ALADIN_SELECT} and {_ALADIN_SCRIPT} 'sync' answered samp.ok)")
                    return {"samp.status": "samp.warning", "samp.result": {},
                            "samp.error": {"samp.errortxt": note},
                            "x-stellar_ml_ages.reply": "none"}, note
            answered.wait(max(min(0.5, deadline - time.monotonic()), 0))
        if answered.is_set():
            return answer(), None
        raise SAMPClientError(
            f"SAMP client {client_name} ({client_id}) did not answer {LOAD_VOTABLE} within "
            f"{timeout} s and holds no table with table-id {table_id}", service=url,
            client=client_id)
    finally:
        with contextlib.suppress(Exception):
            client.unbind_receive_response(tag)


# ---------------------------------------------------------------- sending
def send(table, to=None, *, name=None, table_id=None, hub=None, timeout=30):
    """Send a table to SAMP clients (TOPCAT, Aladin, ...) as a VOTable.

    Parameters
    ----------
    table : `~astropy.table.Table`
        Usually the output of `~stellar_ml_ages.add_mass_age`; units, UCDs,
        descriptions and the provenance in ``meta`` are sent along.
    to : str, optional
        A client's ``samp.name`` (case-insensitive, e.g. ``"topcat"``,
        ``"aladin"``) or public id. `None` sends to every client subscribed to
        ``table.load.votable``, one after the other, except the package's own
        listener (`AnnotationListener`), which only gets tables sent to it by name.
    name : str, optional
        Name the receiving application shows; defaults to ``table.meta["name"]``
        or ``"stellar_ml_ages"``.
    table_id : str, optional
        SAMP ``table-id``; a random one by default.
    hub : str or path-like, optional
        Lockfile of the hub (or ``std-lockurl:file://...``); default
        ``$SAMP_HUB``, then ``~/.samp``.
    timeout : float
        Seconds to wait for each client's reply.

    Returns
    -------
    Delivery
        The table id, each client's reply and the time to the last reply;
        ``unanswered`` names a client that loaded the table without replying.

    Raises
    ------
    SAMPError
        The table has a column a VOTable cannot hold (a `~astropy.coordinates.SkyCoord`
        or `~astropy.time.Time`); the message names it. Nothing is sent.
    SAMPHubError
        No hub is running, it is not on a loopback address, or it stops answering.
    SAMPClientError
        ``to`` is not registered or does not accept tables, no client accepts
        tables, or a client replied ``samp.error`` or not at all (for Aladin: not
        at all and it holds no table with our ``table-id``).

    Warns
    -----
    SAMPNoReplyWarning
        Aladin loaded the table but sent no reply (as a rule, the first table
        into an empty Aladin view); the table was checked in Aladin instead.

    Notes
    -----
    The VOTable is written to a temporary file whose ``file://`` URL is sent;
    the file is deleted once every client has answered (or, for Aladin, has
    been seen to hold the loaded table), or on failure. Our SAMP client is
    unregistered from the hub in every case.

    Examples
    --------
    >>> from stellar_ml_ages import add_mass_age, demo_table
    >>> from stellar_ml_ages.samp import send
    >>> delivery = send(add_mass_age(demo_table()), to="topcat")  # doctest: +SKIP
    >>> [reply["samp.status"] for reply in delivery.replies.values()]  # doctest: +SKIP
    ['samp.ok']
    """
    name = name or table.meta.get("name") or _CLIENT_NAME
    table_id = table_id or f"stellar_ml_ages-{uuid.uuid4().hex[:12]}"
    # Callable: Aladin's reply to a table is taken as an asynchronous response.
    with _temporary_votable(table, name) as file_url, \
            _connected_client(hub, callable=True) as (client, url):
        message = {"samp.mtype": LOAD_VOTABLE,
                   "samp.params": {"url": file_url, "table-id": table_id, "name": str(name)}}
        start = time.perf_counter()
        replies, recipients, unanswered = _deliver(client, url, to, message, timeout)
        seconds = time.perf_counter() - start
    for client_id, note in unanswered.items():
        warnings.warn(f"{recipients[client_id]} ({client_id}) loaded table {table_id} but sent "
                      f"no SAMP reply: {note}", SAMPNoReplyWarning, stacklevel=2)
    return Delivery(table_id=table_id, url=file_url, replies=replies, clients=recipients,
                    seconds=seconds, unanswered=unanswered)


def _check_can_send(to=None, hub=None):
    """Raise what `send` would for the hub and the recipients, before any work.

    The command line annotates and writes OUT first, then sends: a missing hub or
    client is found here, in a moment, instead of after the annotation.
    """
    with _connected_client(hub) as (client, url):
        _recipients(client, url, to, LOAD_VOTABLE)


def point_at(coord, to="aladin", *, hub=None, timeout=30):
    """Ask a sky viewer to centre on a position (``coord.pointAt.sky``).

    Parameters
    ----------
    coord : `~astropy.coordinates.SkyCoord`
        A single position; sent in ICRS degrees.
    to : str or None
        Client name or id; `None` asks every client that accepts the message.
    hub, timeout
        As in `send`.

    Returns
    -------
    dict
        Client id to reply.

    Examples
    --------
    >>> from astropy.coordinates import SkyCoord
    >>> from stellar_ml_ages.samp import point_at
    >>> point_at(SkyCoord(291.0, 42.5, unit="deg"), to="aladin")  # doctest: +SKIP
    """
    icrs = coord.icrs
    if not icrs.isscalar:
        raise ValueError("point_at takes a single position, not an array of them")
    message = {"samp.mtype": "coord.pointAt.sky",
               "samp.params": {"ra": repr(float(icrs.ra.deg)), "dec": repr(float(icrs.dec.deg))}}
    with _connected_client(hub) as (client, url):
        replies, _, _ = _deliver(client, url, to, message, timeout)
    return replies


def select_rows(delivery, rows, to="topcat", *, hub=None, timeout=30):
    """Highlight rows of a table sent with `send` (``table.select.rowList``).

    Parameters
    ----------
    delivery : Delivery or str
        What `send` returned, or the table id.
    rows : array-like of int or bool
        Row indices (0-based), or a boolean mask over the table's rows.
    to : str or None
        Client name or id; `None` for every client that accepts the message.

    Returns
    -------
    dict
        Client id to reply.

    Examples
    --------
    >>> from stellar_ml_ages.samp import send, select_rows
    >>> delivery = send(annotated, to="topcat")  # doctest: +SKIP
    >>> select_rows(delivery, annotated["mass"] > 1.5)  # doctest: +SKIP
    """
    if isinstance(delivery, Delivery):
        table_id, table_url = delivery.table_id, delivery.url
    else:
        table_id, table_url = str(delivery), None
    rows = np.asarray(rows)
    if rows.dtype == bool:
        rows = np.flatnonzero(rows)
    if rows.ndim != 1 or (rows.size and (rows.dtype.kind not in "iu" or rows.min() < 0)):
        raise ValueError("rows must be a boolean mask or non-negative integer row indices")
    message = {"samp.mtype": "table.select.rowList",
               "samp.params": {"table-id": table_id, "row-list": [str(int(i)) for i in rows]}}
    if table_url:
        message["samp.params"]["url"] = table_url
    with _connected_client(hub) as (client, url):
        replies, _, _ = _deliver(client, url, to, message, timeout)
    return replies


# -------------------------------------------------------------- receiving
class _LoopbackRedirects(urllib.request.HTTPRedirectHandler):
    """Follow a redirect only to another loopback URL."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        target = urllib.parse.urlparse(newurl)
        if target.scheme not in ("http", "https") or target.hostname not in LOOPBACK_HOSTS:
            raise SAMPClientError(f"refusing to follow a redirect from {req.full_url!r} to "
                                  f"{newurl!r}: only loopback URLs are read")
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def _read_file_url(parsed, url):
    if parsed.netloc not in ("", "localhost"):
        raise SAMPClientError(f"refusing to read {url!r}: a file URL on another host")
    path = urllib.parse.unquote(parsed.path)
    try:
        info = os.stat(path)
    except OSError as error:
        raise SAMPClientError(f"cannot read {url!r}: {error.strerror}") from None
    if not stat.S_ISREG(info.st_mode):
        # A FIFO or a device would block the worker (or never end).
        raise SAMPClientError(f"refusing to read {url!r}: not a regular file")
    return path


def _read_table_url(url, timeout):
    """Read a VOTable from a file:// URL or an http URL on a loopback host.

    Redirects are followed only to loopback URLs; ``timeout`` bounds the whole
    download, not each read, so a source that sends a byte at a time cannot hold
    the worker; file URLs must name regular files.
    """
    from .votable import read_votable

    parsed = urllib.parse.urlparse(url)
    if parsed.scheme == "file":
        return read_votable(_read_file_url(parsed, url))
    if parsed.scheme in ("http", "https") and parsed.hostname in LOOPBACK_HOSTS:
        deadline = time.monotonic() + timeout
        # No proxy: a loopback URL must not travel through an http_proxy of the environment.
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}),
                                             _LoopbackRedirects)
        chunks = []
        with opener.open(url, timeout=timeout) as response:
            while True:
                if time.monotonic() > deadline:
                    raise SAMPClientError(f"reading {url!r} took more than {timeout} s")
                chunk = response.read1(1 << 16)  # what has arrived, not a full buffer
                if not chunk:
                    break
                chunks.append(chunk)
        return read_votable(io.BytesIO(b"".join(chunks)))
    raise SAMPClientError(f"refusing to read {url!r}: only file:// and loopback http URLs")


class AnnotationListener:
    """A SAMP client that annotates every table sent to it and sends it back.

    In TOPCAT: *Interop* → *Send table to...* → ``stellar_ml_ages``; the
    annotated table appears as a new table in TOPCAT a moment later. The reply
    to TOPCAT's message is ``samp.ok``, or ``samp.error`` with the reason (for
    example a missing column) so TOPCAT shows it.

    The sender's columns are never replaced: when the table already has columns
    with the annotation's names (compared without case: a seismic ``MASS`` or an
    ``AGE`` column), the new columns get the prefix ``COLLISION_PREFIX``
    (``ml_mass``, ``ml_age``, ...), and the reply and ``MLWARN`` say so.

    Parameters
    ----------
    model : str, optional
        Model for `~stellar_ml_ages.add_mass_age`; `None` chooses per table.
    hub : str or path-like, optional
        Hub lockfile, as in `send`.
    timeout : float
        Seconds to wait for the sender to accept the annotated table.
    prefix : str, optional
        Prefix of the new columns. `None` (default): none, or ``COLLISION_PREFIX``
        when the table has columns of those names. A string is used as it is, and a
        table that has columns of the resulting names is refused with a
        ``samp.error`` naming them, unless ``overwrite``.
    suffix : str
        Suffix of the new columns.
    overwrite : bool
        Replace the table's columns of the annotation's names (as
        ``add_mass_age(overwrite=True)``) instead of keeping them.
    **annotate_options
        Passed to `~stellar_ml_ages.add_mass_age` (``allow_extrapolation``, ...).

    Attributes
    ----------
    handled : list of dict
        One entry per received table: sender, rows, status, error text, and the
        warnings of the annotation (label source, most rows without prediction, ...),
        which are also sent in the reply (``warnings``) and written to the returned
        table's ``MLWARN`` parameter, where TOPCAT shows them.

    Examples
    --------
    >>> from stellar_ml_ages.samp import AnnotationListener
    >>> with AnnotationListener(model="giants") as listener:  # doctest: +SKIP
    ...     listener.wait()  # until Ctrl-C
    """

    def __init__(self, model=None, *, hub=None, timeout=60, prefix=None, suffix="",
                 overwrite=False, **annotate_options):
        self.model = model
        self.hub = hub
        self.timeout = timeout
        self.prefix = prefix
        self.suffix = suffix
        self.overwrite = overwrite
        self.annotate_options = annotate_options
        self.handled = []
        self._context = None
        self._client = None
        self._url = None
        self._workers = []
        self._stopping = threading.Event()

    @property
    def client_id(self):
        """Our public id on the hub (None before `start`)."""
        return self._client.get_public_id() if self._client is not None else None

    def start(self):
        """Register with the hub and subscribe to ``table.load.votable``."""
        self._context = _connected_client(self.hub, callable=True,
                                          description="Annotates tables with ML mass and age")
        self._client, self._url = self._context.__enter__()
        self._client.bind_receive_call(LOAD_VOTABLE, self._receive)
        return self

    def stop(self):
        """Finish tables in progress, unregister and stop listening."""
        self._stopping.set()
        for worker in self._workers:
            worker.join(timeout=self.timeout)
        if self._context is not None:
            self._context.__exit__(None, None, None)
        self._context = self._client = None

    def wait(self, poll=0.5):
        """Block until interrupted (Ctrl-C) or `stop` is called from another thread."""
        with contextlib.suppress(KeyboardInterrupt):
            while not self._stopping.wait(poll):
                pass

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc_info):
        self.stop()

    def _receive(self, private_key, sender_id, msg_id, mtype, params, extra):
        # Annotating can take a while: answer the hub's XML-RPC call at once and
        # do the work (and the reply) in a thread of our own.
        worker = threading.Thread(target=self._handle, args=(sender_id, msg_id, params),
                                  daemon=True)
        self._workers = [w for w in self._workers if w.is_alive()] + [worker]
        worker.start()

    def _handle(self, sender_id, msg_id, params):
        record = {"sender": sender_id, "url": params.get("url"), "rows": None,
                  "status": "samp.ok", "error": None, "warnings": []}
        try:
            table = _read_table_url(params.get("url", ""), self.timeout)
            # The sender cannot see Python warnings (and warning filters are not
            # thread-safe): the call's warnings go into the record, the reply and meta.
            summary, renamed = self._annotate(table)
            annotated = summary.table
            record["warnings"] = renamed + [text for _, text in summary.messages()]
            if record["warnings"]:
                annotated.meta["MLWARN"] = " | ".join(record["warnings"])
            record["rows"] = len(annotated)
            # No slash: TOPCAT labels a table by the last path-like part of its name.
            name = f"{params.get('name') or 'table'}, with mass and age"
            sender_name = _clients(self._client, self._url).get(sender_id, sender_id)
            with _temporary_votable(annotated, name) as file_url:
                message = {"samp.mtype": LOAD_VOTABLE,
                           "samp.params": {"url": file_url, "name": name,
                                           "table-id": f"stellar_ml_ages-{uuid.uuid4().hex[:12]}"}}
                _call(self._client, self._url, sender_id, sender_name, message, self.timeout)
            result = {"rows": str(len(annotated))}
            if record["warnings"]:
                result["warnings"] = " | ".join(record["warnings"])
            self._client.ereply(msg_id, "samp.ok", result=result)
        except Exception as error:  # every failure is answered: the sender must not wait
            text = str(error) if isinstance(error, StellarMLAgesError | OSError | ValueError) \
                else f"{type(error).__name__}: {error}"
            record.update(status="samp.error", error=text)
            with contextlib.suppress(Exception):
                self._client.ereply(msg_id, "samp.error", error={"samp.errortxt": text})
        finally:
            self.handled.append(record)

    def _annotate(self, table):
        """The annotation's summary, and a note when the columns had to be prefixed."""
        from .annotate import _annotate_call
        from .exceptions import ExistingColumnError

        options = dict(self.annotate_options, suffix=self.suffix, overwrite=self.overwrite)
        if self.prefix is not None:
            return _annotate_call(table, self.model, prefix=self.prefix, **options), []
        try:
            return _annotate_call(table, self.model, prefix="", **options), []
        except ExistingColumnError as clash:
            # The sender's own mass or age (seismic, isochrone) is data, not an earlier
            # run of ours: the new columns go beside it under other names.
            summary = _annotate_call(table, self.model, prefix=COLLISION_PREFIX, **options)
            return summary, [f"{str(clash).split(' (names')[0]}: the new columns are named "
                             f"{COLLISION_PREFIX}mass, {COLLISION_PREFIX}age, ... and the "
                             "table's own are kept"]


@contextlib.contextmanager
def _temporary_votable(table, name):
    from .votable import write_votable

    handle, path = tempfile.mkstemp(prefix="stellar_ml_ages-", suffix=".vot")
    try:
        try:
            with os.fdopen(handle, "wb") as stream:
                write_votable(table, stream, name=name)
        except ColumnValueError as error:  # a mixin column: nothing was sent
            raise SAMPError(f"the table cannot be sent as a VOTable: {error}") from error
        yield Path(path).as_uri()
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
