"""Webhook receiver and SMTP sink for the sqlsynth lab.

Every POST, on any path, is stored as one JSON line in the store file:
{"received_at", "path", "headers" (without Authorization), "body" (parsed JSON, else text)}.
With --smtp-port, every e-mail is stored the same way with "path": "smtp", "mail_from", "rcpt_tos",
"login" (the AUTH user name, never the password) and "body" (the message as sent). AUTH PLAIN/LOGIN is
offered without TLS and any login accepted: the lab checks what the runbooks send, not who.
GET /messages lists the stored messages, DELETE /messages clears them, GET /health answers 200.
The HTTP side needs only the standard library; the SMTP side needs aiosmtpd (Debian: python3-aiosmtpd).
"""

import argparse
import json
import os
import threading
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

MAX_BODY = 10 * 1024 * 1024
DROPPED_HEADERS = {"authorization", "proxy-authorization", "cookie"}


class Store:
    def __init__(self, path):
        self.path = path
        self.lock = threading.Lock()
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)

    def append(self, message):
        line = json.dumps(message, ensure_ascii=False) + "\n"
        with self.lock, open(self.path, "a", encoding="utf-8") as handle:
            handle.write(line)

    def read(self):
        with self.lock:
            try:
                with open(self.path, encoding="utf-8") as handle:
                    lines = handle.readlines()
            except FileNotFoundError:
                return []
        messages = []
        for line in lines:
            try:
                messages.append(json.loads(line))
            except ValueError:
                continue  # a line cut short by a crash is skipped, not fatal
        return messages

    def clear(self):
        with self.lock, open(self.path, "w", encoding="utf-8"):
            pass


class Handler(BaseHTTPRequestHandler):
    server_version = "sqlsynth-lab-receiver/1.0"
    store = None  # set by make_server

    def _send(self, status, payload):
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):  # noqa: N802 (http.server naming)
        if self.path == "/health":
            self._send(200, {"status": "ok"})
        elif self.path == "/messages":
            self._send(200, self.store.read())
        else:
            self._send(404, {"error": "not found"})

    def do_DELETE(self):  # noqa: N802
        if self.path == "/messages":
            self.store.clear()
            self._send(200, {"status": "cleared"})
        else:
            self._send(404, {"error": "not found"})

    def do_POST(self):  # noqa: N802
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if length < 0 or length > MAX_BODY:
            self._send(413 if length > MAX_BODY else 400, {"error": "bad Content-Length"})
            return
        raw = self.rfile.read(length).decode("utf-8", errors="replace")
        try:
            body = json.loads(raw)
        except ValueError:
            body = raw
        self.store.append({
            "received_at": datetime.now(timezone.utc).isoformat(),
            "path": self.path,
            "headers": {k: v for k, v in self.headers.items() if k.lower() not in DROPPED_HEADERS},
            "body": body,
        })
        self._send(200, {"status": "stored"})


class MailHandler:
    """aiosmtpd handler: each message becomes one stored line with path "smtp"."""

    def __init__(self, store):
        self.store = store

    async def handle_DATA(self, server, session, envelope):  # noqa: N802 (aiosmtpd naming)  pylint: disable=unused-argument
        login = getattr(session.auth_data, "login", None)
        self.store.append({
            "received_at": datetime.now(timezone.utc).isoformat(),
            "path": "smtp",
            "mail_from": envelope.mail_from,
            "rcpt_tos": list(envelope.rcpt_tos),
            "login": login.decode("utf-8", "replace") if isinstance(login, bytes) else None,
            "body": envelope.content.decode("utf-8", "replace"),
        })
        return "250 OK"


def start_smtp(host, port, store):
    """Start the SMTP sink in its own thread, storing into store; returns the aiosmtpd controller (stop() it)."""
    from aiosmtpd.controller import Controller  # pylint: disable=import-outside-toplevel
    from aiosmtpd.smtp import AuthResult  # pylint: disable=import-outside-toplevel

    controller = Controller(MailHandler(store), hostname=host, port=port, auth_require_tls=False,
                            authenticator=lambda *args: AuthResult(success=True, auth_data=args[-1]))
    controller.start()
    return controller


def make_server(host, port, store_path):
    handler = type("BoundHandler", (Handler,), {"store": Store(store_path)})
    return ThreadingHTTPServer((host, port), handler)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9099)
    parser.add_argument("--store", default="/opt/sqlsynth-lab/receiver/messages.jsonl")
    parser.add_argument("--smtp-port", type=int, default=0, help="also accept e-mail on this port (0: no SMTP)")
    args = parser.parse_args(argv)
    server = make_server(args.host, args.port, args.store)
    smtp = None
    if args.smtp_port:
        try:
            smtp = start_smtp(args.host, args.smtp_port, server.RequestHandlerClass.store)
        except ImportError:
            parser.exit(2, "receiver: --smtp-port needs aiosmtpd (apt install python3-aiosmtpd)\n")
        except (OSError, TimeoutError) as exc:
            parser.exit(2, f"receiver: cannot listen for SMTP on {args.host}:{args.smtp_port}: {exc or 'not ready in time'}\n")
    print(f"receiver listening on {args.host}:{server.server_address[1]}"
          + (f", SMTP on {args.host}:{args.smtp_port}" if smtp else "") + f", store {args.store}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        if smtp:
            smtp.stop()


if __name__ == "__main__":
    main()
