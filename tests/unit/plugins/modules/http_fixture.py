"""A local threaded HTTP server for the module tests that read a fake app or Prometheus (/metrics, /health, /api/...).

A test module subclasses FakeHandler with the do_GET/do_POST its routes need, answering with self.send(), and
serves it from a module-scoped fixture: `yield from serve(Handler)`. The server object carries .url and whatever
state the test puts on it (handlers reach it as self.server). serve(Handler, ssl_context) serves https instead.
"""
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

METRICS_CONTENT_TYPE = "text/plain; version=0.0.4"


class FakeHandler(BaseHTTPRequestHandler):
    """A handler that logs nothing and answers through send()."""

    def log_message(self, *args):
        pass

    def send(self, status, body, ctype="application/json", headers=None):
        """Answer status with body (a str as it is, anything else as JSON) and any extra headers."""
        data = body.encode() if isinstance(body, str) else json.dumps(body).encode()
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


def _ignore_error(request, client_address):
    pass


def serve(handler, ssl_context=None):
    """Yield a started server for handler on a free loopback port, with .url = http://127.0.0.1:PORT; stop it after.

    With an ssl.SSLContext the socket speaks TLS and .url is https://127.0.0.1:PORT.
    """
    srv = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    srv.daemon_threads = True
    scheme = "http"
    if ssl_context is not None:
        # Handshake in the handler thread, so a client that stalls cannot block accept().
        srv.socket = ssl_context.wrap_socket(srv.socket, server_side=True, do_handshake_on_connect=False)
        srv.handle_error = _ignore_error  # clients that reject the certificate are expected
        scheme = "https"
    srv.url = "%s://127.0.0.1:%d" % (scheme, srv.server_address[1])
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        yield srv
    finally:
        srv.shutdown()
        srv.server_close()
