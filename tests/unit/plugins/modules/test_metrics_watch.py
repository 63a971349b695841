"""metrics_watch against a local fake app: /metrics counters the test drives per scrape, and /api/query."""
import json
import os
import sys
import threading

import pytest
from ansible.module_utils.testing import patch_module_args

from ansible_collections.sqlsynth.runbooks.plugins.modules import metrics_watch

sys.path.insert(0, os.path.dirname(__file__))
from http_fixture import METRICS_CONTENT_TYPE, FakeHandler, serve  # noqa: E402  pylint: disable=wrong-import-position

API_KEY = "lab-key-9f8e7d6c5b4a"
BOUNDS = ("0.05", "0.1", "0.5", "+Inf")


class FakeApp(object):
    """Counters of the app's real metric names; `on_scrape(app, n)` changes them before scrape n (1-based)."""

    def __init__(self):
        self.lock = threading.Lock()
        self.queries = 0
        self.errors = 0
        self.buckets = dict((b, 0) for b in BOUNDS)
        self.scrapes = 0
        self.on_scrape = None
        self.posts = []
        self.count_posts = True
        self.post_status = 200

    def observe(self, n, seconds=0.02, errors=0):
        for dummy in range(n):
            for bound in BOUNDS:
                if bound == "+Inf" or seconds <= float(bound):
                    self.buckets[bound] += 1
        self.queries += n
        self.errors += errors

    def text(self):
        lines = ["# HELP queries_total Total queries", "# TYPE queries_total counter",
                 'queries_total{type="natural_language"} %d' % self.queries,
                 "# HELP query_errors_total Errors", "# TYPE query_errors_total counter",
                 'query_errors_total{error_type="query_execution_failed"} %d' % self.errors,
                 "# HELP query_duration_seconds Duration", "# TYPE query_duration_seconds histogram"]
        lines += ['query_duration_seconds_bucket{le="%s"} %d' % (b, self.buckets[b]) for b in BOUNDS]
        lines += ["query_duration_seconds_count %d" % self.buckets["+Inf"], "query_duration_seconds_sum 1.0", ""]
        return "\n".join(lines)


class Handler(FakeHandler):
    def do_GET(self):
        app = self.server.app
        if self.path != "/metrics":
            self.send(404, "not found", "text/plain")
            return
        with app.lock:
            app.scrapes += 1
            status = 200
            if app.on_scrape:
                status = app.on_scrape(app, app.scrapes) or 200
            text = app.text()
        self.send(status, text if status == 200 else "metrics broken", METRICS_CONTENT_TYPE)

    def do_POST(self):
        app = self.server.app
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        with app.lock:
            app.posts.append({"path": self.path, "key": self.headers.get("X-API-Key"), "body": json.loads(body)})
            if app.count_posts:
                app.observe(1, errors=0 if app.post_status == 200 else 1)
        self.send(app.post_status, {"sql": "SELECT 1", "data": [], "question": "q"})


@pytest.fixture(scope="module")
def running_server():
    yield from serve(Handler)


@pytest.fixture
def app(running_server):
    running_server.app = FakeApp()
    running_server.app.url = running_server.url
    return running_server.app


def run(capsys, **args):
    """(result, raw stdout) of the module with args."""
    args.setdefault("window_seconds", 0.1)
    with patch_module_args(args):
        with pytest.raises(SystemExit):
            metrics_watch.main()
    out = capsys.readouterr().out
    return json.loads(out), out


def test_passes_after_the_errors_stop_and_three_good_windows(capsys, app):
    def scenario(fake, n):
        if n > 1:  # scrape 1 is the baseline; windows 1 and 2 have errors, then the service is back
            fake.observe(10, errors=5 if n <= 3 else 0)
    app.on_scrape = scenario
    result, dummy = run(capsys, url=app.url + "/metrics", timeout=30)
    assert result["passed"] is True and result.get("failed") is not True and result["changed"] is False
    assert [s["ok"] for s in result["samples"]] == [False, False, True, True, True]
    first = result["samples"][0]
    assert first["requests"] == 10 and first["errors"] == 5 and first["error_ratio"] == 0.5
    assert first["failures"] == ["error ratio 50.0% above 1.0% (5 errors in 10 requests)"]
    assert result["samples"][-1]["error_ratio"] == 0 and result["samples"][-1]["failures"] == []
    assert result["consecutive_ok"] == 3 and result["traffic"] is None
    assert result["samples"][-1]["t"] >= result["samples"][0]["t"]
    assert "3 consecutive windows of 0.1 s passed" in result["msg"]


def test_fails_at_the_timeout_with_every_sample(capsys, app):
    app.on_scrape = lambda fake, n: fake.observe(10, errors=2)
    result, dummy = run(capsys, url=app.url + "/metrics", timeout=0.6, consecutive=2)
    assert result["failed"] is True and result["passed"] is False
    samples = result["samples"]
    assert len(samples) == app.scrapes - 1 and samples  # one sample per window after the baseline
    assert all(not s["ok"] and s["error_ratio"] == 0.2 for s in samples)
    assert result["msg"].startswith("the service did not recover within 0.6 s: 2 good windows of 0.1 s in a row needed, "
                                    "0 of %d windows passed" % len(samples))
    assert "last window: error ratio 20.0% above 1.0% (2 errors in 10 requests)" in result["msg"]


def test_a_good_window_between_bad_ones_does_not_count(capsys, app):
    pattern = {2: 0, 3: 1, 4: 0, 5: 0}  # windows: good, bad, good, good -> passes at window 4 with 2 in a row
    app.on_scrape = lambda fake, n: fake.observe(10, errors=pattern.get(n, 0))
    result, dummy = run(capsys, url=app.url + "/metrics", timeout=30, consecutive=2)
    assert [s["ok"] for s in result["samples"]] == [True, False, True, True]


def test_quiet_windows_pass_without_traffic(capsys, app):
    result, dummy = run(capsys, url=app.url + "/metrics", timeout=30)
    assert result["passed"] is True
    assert all(s["requests"] == 0 and s["error_ratio"] is None for s in result["samples"])


def test_traffic_is_sent_with_the_key_and_fills_the_windows(capsys, app):
    result, out = run(capsys, url=app.url + "/metrics", timeout=30, window_seconds=0.3, consecutive=2,
                      traffic={"url": app.url + "/api/query", "api_key": API_KEY, "per_second": 20,
                               "question": "how many orders are there"})
    assert result["passed"] is True
    assert app.posts and all(p["path"] == "/api/query" and p["key"] == API_KEY for p in app.posts)
    assert all(p["body"] == {"question": "how many orders are there"} for p in app.posts)
    assert any(s["requests"] for s in result["samples"])
    traffic = result["traffic"]
    assert traffic["sent"] == len(app.posts) and traffic["statuses"] == {"200": len(app.posts)}
    assert traffic["failures"] == {} and traffic["url"] == app.url + "/api/query"
    assert API_KEY not in out


def test_traffic_errors_fail_the_windows(capsys, app):
    app.post_status = 500
    result, out = run(capsys, url=app.url + "/metrics", timeout=0.9, window_seconds=0.3, consecutive=2,
                      traffic={"url": app.url + "/api/query", "api_key": API_KEY, "per_second": 20})
    assert result["failed"] is True
    assert any(s["error_ratio"] == 1.0 for s in result["samples"])
    assert result["traffic"]["statuses"] == {"500": result["traffic"]["sent"]}
    assert API_KEY not in out


def test_quiet_windows_fail_when_traffic_does_not_reach_the_app(capsys, app):
    app.count_posts = False
    result, out = run(capsys, url=app.url + "/metrics", timeout=0.6, consecutive=2,
                      traffic={"url": app.url + "/api/query", "api_key": API_KEY, "per_second": 10})
    assert result["failed"] is True and result["samples"]
    assert all(s["failures"] == ["no requests counted although synthetic traffic was sent"] for s in result["samples"])
    assert API_KEY not in out


def test_traffic_to_a_closed_port_is_counted_as_failures(capsys, app):
    app.on_scrape = lambda fake, n: fake.observe(5)
    result, dummy = run(capsys, url=app.url + "/metrics", timeout=30, consecutive=2,
                        traffic={"url": "http://127.0.0.1:9/api/query", "per_second": 10})
    assert result["passed"] is True
    assert result["traffic"]["statuses"] == {} and result["traffic"]["sent"] >= 1
    assert list(result["traffic"]["failures"]) == ["connection refused"]


def test_p95_limit_is_checked_only_when_set(capsys, app):
    app.on_scrape = lambda fake, n: fake.observe(10, seconds=0.3)
    result, dummy = run(capsys, url=app.url + "/metrics", timeout=30, consecutive=2)
    assert result["passed"] is True and result["samples"][0]["p95_seconds"] > 0.1
    app.scrapes = 0
    result, dummy = run(capsys, url=app.url + "/metrics", timeout=0.5, consecutive=2, p95_max_seconds=0.2)
    assert result["failed"] is True
    assert result["samples"][0]["failures"] == ["p95 latency %.3f s above 0.200 s" % result["samples"][0]["p95_seconds"]]


def test_app_restart_counts_from_zero_not_negative(capsys, app):
    def scenario(fake, n):
        if n == 3:  # the app restarted: every counter starts again
            fake.queries, fake.errors, fake.buckets = 0, 0, dict((b, 0) for b in BOUNDS)
        fake.observe(4)
    app.on_scrape = scenario
    result, dummy = run(capsys, url=app.url + "/metrics", timeout=30, consecutive=3)
    assert result["passed"] is True
    assert [s["requests"] for s in result["samples"]] == [4, 4, 4]


def test_unreadable_metrics_fail_windows_until_they_come_back(capsys, app):
    app.on_scrape = lambda fake, n: 500 if n in (2, 3) else fake.observe(3)
    result, dummy = run(capsys, url=app.url + "/metrics", timeout=30, consecutive=2)
    assert result["passed"] is True
    failures = [s["failures"] for s in result["samples"]]
    assert failures[0] == ["HTTP 500 from %s/metrics" % app.url]
    assert failures[1] == ["HTTP 500 from %s/metrics" % app.url]
    assert failures[2] == ["no window yet: the scrape before failed (HTTP 500 from %s/metrics)" % app.url]
    assert failures[3:] == [[], []]
    assert result["samples"][2]["requests"] is None


def test_unreachable_metrics_fail_with_a_message(capsys):
    result, dummy = run(capsys, url="http://127.0.0.1:9/metrics", timeout=0.3, consecutive=1)
    assert result["failed"] is True and result["samples"]
    assert result["samples"][0]["failures"] == ["cannot read http://127.0.0.1:9/metrics: connection refused"]


def test_check_mode_watches_the_same(capsys, app):
    app.on_scrape = lambda fake, n: fake.observe(2)
    result, dummy = run(capsys, url=app.url + "/metrics", timeout=30, consecutive=1, _ansible_check_mode=True)
    assert result["passed"] is True and result["changed"] is False


@pytest.mark.parametrize("args, message", [
    ({"url": "ftp://x/metrics"}, "url: url 'ftp://x/metrics' must start with http:// or https://"),
    ({"window_seconds": 0}, "window_seconds must be greater than 0, got 0"),
    ({"consecutive": 0}, "consecutive must be at least 1, got 0"),
    ({"error_ratio_max": 1.5}, "error_ratio_max must be between 0 and 1, got 1.5"),
    ({"p95_max_seconds": 0}, "p95_max_seconds must be greater than 0"),
    ({"timeout": 5, "window_seconds": 3, "consecutive": 3},
     "timeout 5 s is shorter than consecutive x window_seconds = 9 s: the watch could never pass"),
    ({"traffic": {"url": "http://127.0.0.1:5000/api/query", "per_second": 0}},
     "traffic.per_second must be greater than 0 and at most 50, got 0"),
    ({"traffic": {"url": "nope"}}, "traffic.url: url 'nope' must start with http:// or https://"),
    ({"traffic": {"url": "http://127.0.0.1:5000/api/query", "question": " "}}, "traffic.question must not be empty"),
    ({"requests_metric": "bad name"}, "requests_metric 'bad name' is not a valid Prometheus metric name"),
    ({"ca_path": "/nonexistent/ca.pem"}, "cannot load ca_path /nonexistent/ca.pem"),
])
def test_bad_options_fail_clearly(capsys, args, message):
    base = {"url": "http://127.0.0.1:9/metrics", "window_seconds": 1, "timeout": 10}
    base.update(args)
    result, dummy = run(capsys, **base)
    assert result["failed"] is True and message in result["msg"]
    assert "Traceback" not in result["msg"]
