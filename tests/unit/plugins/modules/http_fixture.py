"""A local threaded HTTP server for the module tests that read a fake app or Prometheus (/metrics, /health, /api/...).

A test module subclasses FakeHandler with the do_GET/do_POST its routes need, answering with self.send(), and
serves it from a module-scoped fixture: `yield from serve(Handler)`. The server object carries .url and whatever
state the test puts on it (handlers reach it as self.server).
"""
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

METRICS_CONTENT_TYPE = "text/plain; version=0.0.4"


class FakeHandler(BaseHTTPRequestHandler):
    """A handler that logs nothing and answers through send()."""

    def log_message(self, *args):
        pass

    def send(self, status, body, ctype="application/json"):
        """Answer status with body: a str as it is, anything else as JSON."""
        data = body.encode() if isinstance(body, str) else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


def serve(handler):
    """Yield a started server for handler on a free loopback port, with .url = http://127.0.0.1:PORT; stop it after."""
    srv = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    srv.daemon_threads = True
    srv.url = "http://127.0.0.1:%d" % srv.server_address[1]
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        yield srv
    finally:
        srv.shutdown()
        srv.server_close()
