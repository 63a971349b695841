"""The lab's injection_burst fault: an attacker sending SQL-injection questions through nginx.

Connects from a loopback alias (``--source``, 127.0.0.66 by default) to the lab's HTTPS
endpoint with the lab CA and SNI ``--server-name``, and POSTs injection questions with the
API key from the environment (SQLSYNTH_ATTACKER_API_KEY, never on the command line) at about
``--rate`` requests per second, forever. Every error (403 blocked, 401, 429, refused, TLS) is
counted and tolerated; counts by status are logged every ``--report`` seconds.

Run by supervisord as program ``attacker`` (autostart=false): lab_fault injection_burst on/off.
"""

import argparse
import http.client
import itertools
import json
import logging
import os
import signal
import socket
import ssl
import sys
import time
from collections import Counter
from urllib.parse import urlsplit

LOG = logging.getLogger("sqlsynth_lab_attacker")
API_KEY_VARIABLE = "SQLSYNTH_ATTACKER_API_KEY"
QUESTIONS = (
    "1; DROP TABLE users; --",
    "' OR 1=1 --",
    "users' UNION SELECT usename, passwd FROM pg_shadow --",
    "orders where id = 1 or 1=1",
    "'; DELETE FROM orders; --",
    "products /* */ where pg_sleep(10)",
)


class SourceBoundHTTPSConnection(http.client.HTTPSConnection):
    """HTTPS to ``address`` from ``source`` with SNI and verification against ``server_name``."""

    def __init__(self, address, port, server_name, source, context, timeout):
        super().__init__(server_name, port, timeout=timeout, context=context, source_address=(source, 0))
        self._address = address
        self._server_name = server_name
        self._ctx = context

    def connect(self):
        sock = socket.create_connection((self._address, self.port), self.timeout, self.source_address)
        self.sock = self._ctx.wrap_socket(sock, server_hostname=self._server_name)


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="https://127.0.0.1:8443/api/query")
    parser.add_argument("--server-name", default="sqlsynth.lab", help="SNI and certificate name")
    parser.add_argument("--cacert", default="/opt/sqlsynth-lab/ca/ca.crt")
    parser.add_argument("--source", default="127.0.0.66", help="source address to bind")
    parser.add_argument("--rate", type=float, default=4.0, help="requests per second")
    parser.add_argument("--report", type=float, default=10.0, help="seconds between count reports")
    parser.add_argument("--timeout", type=float, default=5.0)
    parser.add_argument("--count", type=int, default=0, help="stop after this many requests (0: forever)")
    args = parser.parse_args(argv)
    url = urlsplit(args.url)
    if url.scheme != "https" or not url.hostname:
        parser.error("--url must be an https:// URL")
    if args.rate <= 0:
        parser.error("--rate must be positive")
    return args


def make_context(cacert):
    """TLS verification on, against the lab CA."""
    context = ssl.create_default_context(cafile=cacert)
    context.check_hostname = True
    return context


def attack_once(args, context, question, api_key):
    """One POST; returns the HTTP status as a string, or ``error:<kind>``."""
    url = urlsplit(args.url)
    conn = SourceBoundHTTPSConnection(url.hostname, url.port or 443, args.server_name, args.source,
                                      context, args.timeout)
    headers = {"Content-Type": "application/json", "User-Agent": "sqlsynth-lab-attacker/1.0",
               "Host": "%s:%d" % (args.server_name, url.port or 443)}
    if api_key:
        headers["X-API-Key"] = api_key
    try:
        conn.request("POST", url.path or "/", body=json.dumps({"question": question}), headers=headers)
        response = conn.getresponse()
        response.read()
        return str(response.status)
    except ssl.SSLError as exc:
        return "error:tls(%s)" % (exc.reason or type(exc).__name__)
    except ConnectionRefusedError:
        return "error:refused"
    except (socket.timeout, TimeoutError):
        return "error:timeout"
    except (OSError, http.client.HTTPException) as exc:
        return "error:%s" % type(exc).__name__
    finally:
        conn.close()


def run(args, api_key, stop=lambda: False):
    """Attack until ``stop()`` or ``args.count`` requests; returns the counts by status."""
    context = make_context(args.cacert)
    counts = Counter()
    interval = 1.0 / args.rate
    next_report = time.monotonic() + args.report
    next_send = time.monotonic()
    for number, question in enumerate(itertools.cycle(QUESTIONS), 1):
        if stop():
            break
        try:
            status = attack_once(args, context, question, api_key)
        except Exception as exc:  # pylint: disable=broad-except  # tolerant of everything, by design
            status = "error:%s" % type(exc).__name__
        counts[status] += 1
        now = time.monotonic()
        if now >= next_report:
            LOG.info("sent %d requests from %s; by status: %s", sum(counts.values()), args.source,
                     json.dumps(dict(sorted(counts.items()))))
            next_report = now + args.report
        if args.count and number >= args.count:
            break
        next_send += interval
        time.sleep(max(0.0, next_send - time.monotonic()))
        next_send = max(next_send, time.monotonic() - interval)  # no catch-up burst after a stall
    return counts


def main(argv=None):
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = parse_args(sys.argv[1:] if argv is None else argv)
    api_key = os.environ.get(API_KEY_VARIABLE, "")
    if not api_key:
        LOG.warning("%s is not set: requests go without an API key", API_KEY_VARIABLE)
    stopping = []
    signal.signal(signal.SIGTERM, lambda signum, frame: stopping.append(signum))
    try:
        LOG.info("attacking %s (SNI %s) from %s at %.1f requests/s", args.url, args.server_name, args.source,
                 args.rate)
        counts = run(args, api_key, stop=lambda: bool(stopping))
    except KeyboardInterrupt:
        return 0
    except (OSError, ssl.SSLError) as exc:
        LOG.error("cannot start: %s", exc)
        return 1
    LOG.info("stopped after %d requests; by status: %s", sum(counts.values()), json.dumps(dict(sorted(counts.items()))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
