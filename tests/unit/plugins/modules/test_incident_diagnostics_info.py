# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""incident_diagnostics_info against a fake app (/metrics, /health, /api/query) and unreachable servers."""
import datetime
import json
import os
import socket
import sys
import threading

import pytest
from ansible.module_utils.testing import patch_module_args

from ansible_collections.sqlsynth.runbooks.plugins.module_utils import _diagnostics
from ansible_collections.sqlsynth.runbooks.plugins.modules import incident_diagnostics_info

sys.path.insert(0, os.path.dirname(__file__))
from http_fixture import METRICS_CONTENT_TYPE, FakeHandler, serve  # noqa: E402  pylint: disable=wrong-import-position

API_KEY = "api-Key-9f8e7d6c5b4a"
DB_PASSWORD = "db-Pass-0a1b2c"
REDIS_PASSWORD = "redis-Pass-3d4e5f"
SECTIONS = ("metrics", "health", "synthetic", "logs", "postgres", "redis", "host")


def exposition(requests, errors, buckets):
    lines = ["# TYPE queries_total counter"]
    lines += ['queries_total{type="natural_language"} %s' % requests]
    lines += ["# TYPE query_errors_total counter"]
    lines += ['query_errors_total{error_type="%s"} %s' % (t, v) for t, v in sorted(errors.items())]
    lines += ["# TYPE query_duration_seconds histogram"]
    lines += ['query_duration_seconds_bucket{le="%s"} %s' % (le, v) for le, v in buckets]
    lines += ["query_duration_seconds_count %s" % buckets[-1][1], "query_duration_seconds_sum 1.0", ""]
    return "\n".join(lines)


HEALTHY_FIRST = exposition(100, {"query_execution_failed": 1},
                           [("0.05", 100), ("0.1", 100), ("0.5", 100), ("+Inf", 100)])
HEALTHY_SECOND = exposition(300, {"query_execution_failed": 1},
                            [("0.05", 300), ("0.1", 300), ("0.5", 300), ("+Inf", 300)])
BURST_SECOND = exposition(200, {"query_execution_failed": 31, "sql_injection_attempt": 4},
                          [("0.05", 100), ("0.1", 100), ("0.5", 200), ("+Inf", 200)])


class Handler(FakeHandler):
    def do_GET(self):
        srv = self.server
        if self.path == "/metrics":
            text = srv.scrapes[min(srv.hits, len(srv.scrapes) - 1)]
            srv.hits += 1
            self.send(200, text, METRICS_CONTENT_TYPE)
        elif self.path == "/health":
            self.send(*srv.health)
        else:
            self.send(404, {"error": "not found"})

    def do_POST(self):
        srv = self.server
        length = int(self.headers.get("Content-Length") or 0)
        srv.posts.append((dict(self.headers), json.loads(self.rfile.read(length))))
        if self.headers.get("X-API-Key") != API_KEY:
            self.send(401, {"error": "invalid or missing API key"})
        else:
            self.send(*srv.query)


@pytest.fixture(scope="module")
def running_server():
    yield from serve(Handler)


@pytest.fixture
def app(running_server):
    srv = running_server
    srv.scrapes, srv.hits, srv.posts = [HEALTHY_FIRST, HEALTHY_SECOND], 0, []
    srv.health = (200, {"status": "healthy", "timestamp": 1.0,
                        "components": {"database": True, "cache": True, "openai_api": True}})
    srv.query = (200, {"sql": "SELECT count(*) FROM users", "data": [[3]], "question": "q"})
    return srv


def closed_port():
    """A loopback port nothing listens on (bound, then released)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    return port


@pytest.fixture
def logs(tmp_path):
    now = datetime.datetime.now(datetime.timezone.utc)
    audit = tmp_path / "audit.log"
    events = [("query_execution", "10.0.0.1")] * 5 + [("sql_injection_attempt", "10.6.6.6")] * 3
    audit.write_text("".join(json.dumps({"event_type": kind, "timestamp": now.isoformat(), "client_ip": ip}) + "\n"
                             for kind, ip in events) + "{broken\n")
    access = tmp_path / "access.log"
    stamp = now.strftime("%d/%b/%Y:%H:%M:%S +0000")
    access.write_text('10.6.6.6 - - [%s] "POST /api/query HTTP/1.1" 400 50 "-" "x"\n' % stamp)
    app_log = tmp_path / "app.log"
    app_log.write_text("ERROR connecting with password=%s\n" % DB_PASSWORD)
    return dict(app=str(app_log), audit=str(audit), access=str(access))


def args_for(app, **extra):
    args = dict(app_url=app.url, api_key=API_KEY, metrics_window=0.2, login_port=closed_port(),
                login_password=DB_PASSWORD, port=closed_port(), password=REDIS_PASSWORD, connect_timeout=2,
                socket_timeout=2)
    args.update(extra)
    return args


def run(capsys, args):
    with patch_module_args(args):
        with pytest.raises(SystemExit):
            incident_diagnostics_info.main()
    out = capsys.readouterr().out
    return json.loads(out), out


def test_every_section_is_present_and_unreachable_servers_are_clear_errors(capsys, app, logs):
    result, raw = run(capsys, args_for(app, log_files=logs))
    diag = result["diagnostics"]
    assert result["changed"] is False and not result.get("failed")
    assert set(SECTIONS) | {"durations", "problems"} == set(diag)
    assert set(diag["durations"]) == set(SECTIONS)
    pg, rd = diag["postgres"], diag["redis"]
    assert pg["available"] is False and pg["reachable"] is False
    assert pg["error"].startswith("postgres unreachable: connection refused at 127.0.0.1:")
    assert pg["idle_in_transaction"] == [] and pg["pg_stat_statements"] is False
    assert rd["available"] is False and rd["reachable"] is False
    assert rd["error"].startswith("redis unreachable: connection refused at 127.0.0.1:")
    # the other sections are unaffected by the dead servers
    assert diag["health"]["status"] == "healthy" and diag["synthetic"]["ok"] is True
    assert diag["metrics"]["requests"] == 200 and diag["metrics"]["error_ratio"] == 0
    assert pg["error"] in diag["problems"] and rd["error"] in diag["problems"]
    assert "client 10.6.6.6: 3 injection attempts in 15 min" in diag["problems"]
    assert diag["logs"]["audit"]["malformed_lines"] == 1
    for secret in (API_KEY, DB_PASSWORD, REDIS_PASSWORD):
        assert secret not in raw


def test_error_burst_gives_ratio_errors_by_type_and_p95_problems(capsys, app):
    app.scrapes = [HEALTHY_FIRST, BURST_SECOND]
    app.health = (500, "<html>Internal Server Error</html>", "text/html")
    app.query = (500, {"error": "internal server error"})
    result, dummy = run(capsys, args_for(app, sections=["metrics", "health", "synthetic"]))
    diag = result["diagnostics"]
    metrics = diag["metrics"]
    assert metrics["requests"] == 100 and metrics["errors"] == 34 and metrics["error_ratio"] == 0.34
    assert metrics["errors_by_type"] == {"query_execution_failed": 30, "sql_injection_attempt": 4}
    assert metrics["p95_seconds"] == pytest.approx(0.1 + 0.4 * 0.95)  # rank 95 of the 100 new ones in (0.1, 0.5]
    assert diag["health"]["available"] is True and diag["health"]["http_status"] == 500
    assert diag["health"]["status"] == "unknown" and "not JSON" in diag["health"]["error"]
    assert diag["synthetic"]["ok"] is False and diag["synthetic"]["http_status"] == 500
    problems = diag["problems"]
    assert problems[0].startswith("error ratio 34.0% over ") and problems[0].endswith("(34 errors in 100 requests)")
    assert problems[1].startswith("p95 latency 0.480 s over ")
    assert "health unknown (HTTP 500): HTTP 500 from %s/health, body is not JSON" % app.url in problems
    assert "synthetic query failed: HTTP 500 from %s/api/query: internal server error" % app.url in problems
    # sections not asked for are present and say so, and raise no problem
    assert diag["postgres"] == dict(diag["postgres"], available=False, error="not requested (sections)")
    assert set(diag["durations"]) == {"metrics", "health", "synthetic"}


def test_unhealthy_health_names_the_down_components_and_the_api_key_is_sent(capsys, app):
    app.health = (503, {"status": "unhealthy", "components": {"database": False, "cache": True}})
    result, raw = run(capsys, args_for(app, sections=["health", "synthetic"], app_direct_url=app.url))
    diag = result["diagnostics"]
    assert diag["health"]["components"] == {"database": False, "cache": True}
    assert diag["health"]["direct"]["status"] == "unhealthy"
    assert "health unhealthy (HTTP 503): database down" in diag["problems"]
    headers, body = app.posts[0]
    assert headers["X-API-Key"] == API_KEY and body == {"question": "how many users are there"}
    assert API_KEY not in raw


def test_wrong_api_key_is_reported_without_the_key(capsys, app):
    result, raw = run(capsys, args_for(app, sections=["synthetic"], api_key="wrong-Key-123456"))
    synthetic = result["diagnostics"]["synthetic"]
    assert synthetic["ok"] is False and synthetic["http_status"] == 401
    assert synthetic["error"] == "HTTP 401 from %s/api/query: invalid or missing API key" % app.url
    assert "wrong-Key-123456" not in raw


def test_unreachable_app_is_a_result_for_metrics_health_and_synthetic(capsys):
    url = "http://127.0.0.1:%d" % closed_port()
    result, dummy = run(capsys, dict(app_url=url, sections=["metrics", "health", "synthetic"], metrics_window=0))
    diag = result["diagnostics"]
    assert diag["metrics"]["available"] is False
    assert diag["metrics"]["error"] == "cannot read %s/metrics: connection refused" % url
    assert diag["health"]["error"] == "cannot reach %s/health: connection refused" % url
    assert diag["synthetic"]["error"] == "cannot reach %s/api/query: connection refused" % url
    assert diag["problems"] == ["metrics unavailable: cannot read %s/metrics: connection refused" % url,
                                "health unreachable: cannot reach %s/health: connection refused" % url,
                                "synthetic query failed: cannot reach %s/api/query: connection refused" % url]


def test_missing_logs_are_not_failures_and_raise_no_problem(capsys, app, tmp_path):
    result, dummy = run(capsys, args_for(app, sections=["logs"], log_files={"audit": str(tmp_path / "none.log")}))
    logs = result["diagnostics"]["logs"]
    assert logs["audit"]["available"] is False and "does not exist" in logs["audit"]["error"]
    assert logs["app"]["error"] == "no path given (log_files.app)"
    assert result["diagnostics"]["problems"] == []


def test_the_app_log_secret_is_masked(capsys, app, logs):
    result, raw = run(capsys, args_for(app, sections=["logs"], log_files=logs))
    assert result["diagnostics"]["logs"]["app"]["recent_errors"] == ["ERROR connecting with password=********"]
    assert DB_PASSWORD not in raw


def test_host_section_reads_load_memory_and_disk(capsys, app, tmp_path, monkeypatch):
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:       1000 kB\nMemFree:    10 kB\nMemAvailable:     50 kB\n")
    real = _diagnostics.meminfo
    monkeypatch.setattr(_diagnostics, "meminfo", lambda path="/proc/meminfo": real(str(meminfo)))
    monkeypatch.setattr(_diagnostics.os, "getloadavg", lambda: (9.0, 1.0, 1.0))
    monkeypatch.setattr(_diagnostics.os, "cpu_count", lambda: 2)
    result, dummy = run(capsys, args_for(app, sections=["host"], disk_paths=[str(tmp_path), "/no/such/dir"]))
    host = result["diagnostics"]["host"]
    assert (host["cpu_count"], host["load_1m"], host["load_per_cpu"], host["mem_available_ratio"]) == (2, 9.0, 4.5, 0.05)
    assert host["disk"][0]["path"] == str(tmp_path) and 0 <= host["disk"][0]["free_ratio"] <= 1
    assert host["disk"][1]["free_ratio"] is None and "disk /no/such/dir" in host["error"]
    assert "load 4.50 per CPU (2 CPUs), above 2" in result["diagnostics"]["problems"]
    assert "memory available 5.0%, below 10.0%" in result["diagnostics"]["problems"]


def test_a_hanging_section_times_out_and_a_crashing_one_does_not_break_the_others(capsys, app, monkeypatch):
    release = threading.Event()

    def hang(opts):
        release.wait(30)
        return {}

    def crash(opts):
        raise RuntimeError("boom with %s inside" % opts["api_key"])

    monkeypatch.setitem(_diagnostics.RUNNERS, "redis", hang)
    monkeypatch.setitem(_diagnostics.RUNNERS, "postgres", crash)
    try:
        result, raw = run(capsys, args_for(app, sections=["redis", "postgres", "health"], section_timeout=0.5))
    finally:
        release.set()
    diag = result["diagnostics"]
    assert diag["redis"]["available"] is False and diag["redis"]["error"] == "redis timed out after 0.5 s"
    assert diag["redis"]["reachable"] is False and diag["redis"]["mem_ratio"] is None
    assert diag["postgres"]["error"] == "postgres failed: RuntimeError: boom with ******** inside"
    assert diag["postgres"]["idle_in_transaction"] == []
    assert diag["health"]["status"] == "healthy"
    assert API_KEY not in raw


def test_sections_run_concurrently(capsys, app, monkeypatch):
    """Two sections that each wait for the other can only finish if they run at the same time."""
    barrier = threading.Barrier(2, timeout=10)

    def meet(opts):
        barrier.wait()
        return dict(_diagnostics._not_run("host", None), available=True)

    monkeypatch.setitem(_diagnostics.RUNNERS, "host", meet)
    monkeypatch.setitem(_diagnostics.RUNNERS, "logs", lambda opts: meet(opts) and _diagnostics.logs_section(opts))
    result, dummy = run(capsys, args_for(app, sections=["host", "logs"]))
    assert result["diagnostics"]["host"]["available"] is True
    assert "timed out" not in json.dumps(result["diagnostics"]["logs"])


def test_check_mode_gives_the_same_read_only_result(capsys, app):
    result, dummy = run(capsys, args_for(app, sections=["health"], _ansible_check_mode=True))
    assert result["changed"] is False and result["diagnostics"]["health"]["status"] == "healthy"


@pytest.mark.parametrize("extra, message", [
    ({"app_url": "ftp://x"}, "app_url: url 'ftp://x' must start with http:// or https://"),
    ({"metrics_url": "nohost"}, "metrics_url: url 'nohost' must start with http"),
    ({"sections": ["disks"]}, "value of sections must be one or more of"),
    ({"requests_metric": "bad name"}, "requests_metric 'bad name' is not a valid Prometheus metric name"),
    ({"metrics_window": -1}, "metrics_window must not be negative"),
    ({"section_timeout": 0}, "section_timeout must be greater than 0"),
    ({"error_ratio_max": 2}, "error_ratio_max must be greater than 0.0 and at most 1, got 2"),
    ({"login_port": 70000}, "login_port must be between 1 and 65535"),
    ({"disk_paths": []}, "disk_paths must name at least one path"),
    ({"ca_path": "/no/such/ca.pem"}, "cannot load ca_path /no/such/ca.pem"),
    ({"log_since": "yesterday"}, "log_since 'yesterday' is not an ISO 8601 time"),
])
def test_bad_options_fail_clearly(capsys, app, extra, message):
    result, raw = run(capsys, args_for(app, **extra))
    assert result["failed"] is True and message in result["msg"]
    assert "Traceback" not in raw and API_KEY not in raw


def test_log_since_leaves_out_an_attack_already_handled(capsys, app, tmp_path):
    now = datetime.datetime.now(datetime.timezone.utc)
    audit = tmp_path / "audit.log"
    old = [now - datetime.timedelta(minutes=5)] * 20
    new = [now - datetime.timedelta(seconds=5)] * 4
    audit.write_text("".join(json.dumps({"event_type": "sql_injection_attempt", "timestamp": t.isoformat(),
                                         "client_ip": ip}) + "\n"
                             for t, ip in [(t, "10.6.6.6") for t in old] + [(t, "10.7.7.7") for t in new]))
    whole, dummy = run(capsys, args_for(app, sections=["logs"], log_files={"audit": str(audit)}))
    assert [r["client"] for r in whole["diagnostics"]["logs"]["audit"]["offenders"]] == ["10.6.6.6", "10.7.7.7"]
    since = (now - datetime.timedelta(minutes=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    recent, dummy = run(capsys, args_for(app, sections=["logs"], log_files={"audit": str(audit)}, log_since=since))
    audit_part = recent["diagnostics"]["logs"]["audit"]
    assert [r["client"] for r in audit_part["offenders"]] == ["10.7.7.7"]
    assert audit_part["injection_attempts"] == 4
    assert 3.5 <= audit_part["injection_attempts_per_minute"] <= 4.5  # 4 attempts in the last minute, not per 15 min
    assert "client 10.7.7.7: 4 injection attempts in 60 s" in recent["diagnostics"]["problems"] \
        or "client 10.7.7.7: 4 injection attempts in 1 min" in recent["diagnostics"]["problems"]
