"""A loopback HTTP proxy in front of the local TAP server that injects faults.

Each request to a TAP ``sync`` endpoint takes the next fault from a script;
everything else (capabilities, async job polling) is passed through untouched.
Faults: ``"ok"``, ``"500"``, ``"503"`` (an HTTP error page instead of the
answer), ``"truncate"`` (the first half of the real VOTable, then the
connection closes), ``"slow"`` (hold the answer for ``delay`` seconds), and
``"drop"`` (close the connection without a response).
"""

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import requests

__all__ = ["FaultyTAPProxy"]

_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-encoding",
               "content-length", "host"}


class FaultyTAPProxy:
    """``with FaultyTAPProxy(upstream, ["503", "ok"]) as proxy: run_query(proxy.url, ...)``."""

    def __init__(self, upstream, faults, delay=3.0):
        self.upstream = upstream.rstrip("/")
        self.faults = list(faults)
        self.delay = delay
        self.seen = []  # faults applied to sync requests, in order
        self._lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _forward(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                fault = "ok"
                if self.path.split("?")[0].rstrip("/").endswith("/sync"):
                    with proxy._lock:
                        fault = proxy.faults.pop(0) if proxy.faults else "ok"
                        proxy.seen.append(fault)
                if fault in ("500", "503"):
                    message = b"<html><body>Service temporarily unavailable</body></html>"
                    self.send_response(int(fault))
                    self.send_header("Content-Type", "text/html")
                    self.send_header("Content-Length", str(len(message)))
                    self.end_headers()
                    self.wfile.write(message)
                    return
                if fault == "drop":
                    self.close_connection = True
                    return
                headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
                answer = requests.request(self.command, proxy.upstream + self.path[len(
                    proxy.prefix):], headers=headers, data=body, timeout=60,
                    allow_redirects=False)
                content = answer.content
                if fault == "slow":
                    time.sleep(proxy.delay)
                self.send_response(answer.status_code)
                for key, value in answer.headers.items():
                    if key.lower() not in _HOP_BY_HOP:
                        if key.lower() == "location":
                            value = value.replace(proxy.upstream, proxy.url)
                        self.send_header(key, value)
                if fault == "truncate":
                    # Announce the whole answer, send half, hang up.
                    self.send_header("Content-Length", str(len(content)))
                    self.end_headers()
                    self.wfile.write(content[: len(content) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.send_header("Content-Length", str(len(content)))
                self.end_headers()
                self.wfile.write(content)

            do_GET = do_POST = _forward

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        port = self._server.server_address[1]
        self.prefix = "/" + self.upstream.split("/", 3)[3] if self.upstream.count("/") >= 3 \
            else ""
        self.url = f"http://127.0.0.1:{port}{self.prefix}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()
