"""Run a headless SAMP hub (pyvo.samp) on 127.0.0.1 with a private lockfile.

usage: python run_hub.py LOCKFILE

Prints ``HUB_READY <xmlrpc url>`` once the hub answers; stops on SIGTERM/SIGINT.
"""
import signal
import sys
import time

from pyvo.samp import SAMPHubServer, conf

# Without this pyvo fetches an outside web page to decide which host name to use.
conf.use_internet = False


def main(lockfile):
    hub = SAMPHubServer(addr="127.0.0.1", lockfile=lockfile, web_profile=False,
                        label="stellar_ml_ages test hub")
    hub.start(wait=False)
    print("HUB_READY", hub.params["samp.hub.xmlrpc.url"], flush=True)

    def stop(*_):
        hub.stop()
        sys.exit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    while True:
        time.sleep(1)


if __name__ == "__main__":
    main(sys.argv[1])
