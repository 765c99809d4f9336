"""Wait until a SAMP client is registered, subscribed to an MType, and answering.

usage: python wait_client.py LOCKFILE NAME MTYPE TIMEOUT

Registration is not readiness: TOPCAT subscribes before its window is up, and
Aladin drops messages sent just after it subscribes. So after the subscription
appears we keep sending ``samp.app.ping`` until the client replies.

The probe unregisters itself at the end: pyvo's ``disconnect()`` does nothing for
a client made with ``callable=False``, which would stay on the hub's list.
"""
import sys
import time

from pyvo.samp import SAMPIntegratedClient, SAMPProxyError, conf
from pyvo.samp.lockfile_helpers import read_lockfile

conf.use_internet = False


def find(client, name, mtype):
    for client_id in client.get_subscribed_clients(mtype):
        if client.get_metadata(client_id).get("samp.name", "").lower() == name:
            return client_id
    return None


def main(lockfile, name, mtype, timeout):
    start = time.monotonic()
    client = SAMPIntegratedClient(name="readiness-probe", addr="127.0.0.1", callable=False)
    client.connect(hub_params=read_lockfile(lockfile))
    try:
        client_id = None
        while client_id is None and time.monotonic() - start < timeout:
            client_id = find(client, name.lower(), mtype)
            time.sleep(0.2)
        if client_id is None:
            print(f"{name} did not subscribe to {mtype} within {timeout} s", file=sys.stderr)
            return 1
        print(f"{name}: subscribed as {client_id} after {time.monotonic() - start:.1f} s")
        while time.monotonic() - start < timeout:
            try:
                client.call_and_wait(client_id, {"samp.mtype": "samp.app.ping",
                                                 "samp.params": {}}, "5")
                print(f"{name}: answering after {time.monotonic() - start:.1f} s")
                return 0
            except SAMPProxyError:
                time.sleep(0.5)
        print(f"{name} never answered samp.app.ping", file=sys.stderr)
        return 1
    finally:
        client.client.unregister()
        client.hub.disconnect()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])))
