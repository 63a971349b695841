"""Webhook receiver for the sqlsynth lab (standard library only).

Every POST, on any path, is stored as one JSON line in the store file:
{"received_at", "path", "headers" (without Authorization), "body" (parsed JSON, else text)}.
GET /messages lists the stored messages, DELETE /messages clears them, GET /health answers 200.
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


def make_server(host, port, store_path):
    handler = type("BoundHandler", (Handler,), {"store": Store(store_path)})
    return ThreadingHTTPServer((host, port), handler)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9099)
    parser.add_argument("--store", default="/opt/sqlsynth-lab/receiver/messages.jsonl")
    args = parser.parse_args(argv)
    server = make_server(args.host, args.port, args.store)
    print(f"receiver listening on {args.host}:{server.server_address[1]}, store {args.store}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
