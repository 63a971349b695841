"""metrics_info against a fake /metrics whose counters change between scrapes, and a fake Prometheus API."""
import json
import os
import sys
from urllib.parse import parse_qs, urlsplit

import pytest
from ansible.module_utils.testing import patch_module_args

from ansible_collections.sqlsynth.runbooks.plugins.modules import metrics_info

sys.path.insert(0, os.path.dirname(__file__))
from http_fixture import METRICS_CONTENT_TYPE, FakeHandler, serve  # noqa: E402  pylint: disable=wrong-import-position


def exposition(queries, errors, buckets):
    """/metrics text in the app's names: queries_total{type}, query_errors_total{error_type}, a histogram."""
    lines = ["# HELP queries_total Total queries", "# TYPE queries_total counter"]
    lines += ['queries_total{type="%s"} %s' % (t, v) for t, v in sorted(queries.items())]
    lines += ["# HELP query_errors_total Errors", "# TYPE query_errors_total counter"]
    lines += ['query_errors_total{error_type="%s"} %s' % (t, v) for t, v in sorted(errors.items())]
    lines += ["# HELP query_duration_seconds Duration", "# TYPE query_duration_seconds histogram"]
    lines += ['query_duration_seconds_bucket{le="%s"} %s' % (le, v) for le, v in buckets]
    lines += ["query_duration_seconds_count %s" % buckets[-1][1], "query_duration_seconds_sum 1.0", ""]
    return "\n".join(lines)


BUCKETS_A = [("0.05", 50), ("0.1", 90), ("0.25", 100), ("+Inf", 100)]
BUCKETS_B = [("0.05", 60), ("0.1", 100), ("0.25", 196), ("+Inf", 200)]
FIRST = exposition({"natural_language": 80, "sql": 20}, {"query_execution_failed": 1}, BUCKETS_A)
SECOND = exposition({"natural_language": 160, "sql": 40}, {"query_execution_failed": 3, "llm_api_failed": 1},
                    BUCKETS_B)


class Handler(FakeHandler):
    def do_GET(self):
        server, parts = self.server, urlsplit(self.path)
        if parts.path == "/metrics":
            status, text = server.scrapes[min(server.hits, len(server.scrapes) - 1)]
            server.hits += 1
            self.send(status, text, METRICS_CONTENT_TYPE)
        elif parts.path == "/api/v1/query":
            query = parse_qs(parts.query)["query"][0]
            server.queries.append(query)
            answer = next((v for k, v in server.answers.items() if k in query), None)
            if answer == "error":
                self.send(400, {"status": "error", "errorType": "bad_data", "error": "parse error in query"})
                return
            result = [] if answer is None else [{"metric": {}, "value": [1764400000, answer]}]
            self.send(200, {"status": "success", "data": {"resultType": "vector", "result": result}})
        elif parts.path == "/api/v1/alerts":
            self.send(200, {"status": "success", "data": {"alerts": server.alerts}})
        else:
            self.send(404, "not found", "text/plain")


@pytest.fixture(scope="module")
def running_server():
    yield from serve(Handler)


@pytest.fixture
def server(running_server):
    """The server with fresh state: two scrapes FIRST then SECOND, no Prometheus answers, no alerts."""
    srv = running_server
    srv.scrapes, srv.hits, srv.queries, srv.answers, srv.alerts = [(200, FIRST), (200, SECOND)], 0, [], {}, []
    return srv


def run(capsys, **args):
    with patch_module_args(args):
        with pytest.raises(SystemExit):
            metrics_info.main()
    return json.loads(capsys.readouterr().out)


def test_window_deltas_give_ratio_p95_and_rate(capsys, server):
    result = run(capsys, url=server.url + "/metrics", window=0.2)
    assert server.hits == 2
    assert result["source"] == "metrics" and result["window"] == 0.2
    assert result["requests"] == 100 and result["errors"] == 3  # a new error series counts from 0
    assert result["error_ratio"] == 0.03
    # delta buckets 10/10/96/100: rank 95 falls in (0.1, 0.25] -> 0.1 + 0.15 * 85/86
    assert result["p95_seconds"] == pytest.approx(0.1 + 0.15 * 85 / 86, abs=1e-6)
    assert 0 < result["request_rate"] <= 100 / 0.2
    assert result["ok"] is False
    assert result["failures"] == [
        "error ratio 3.0% above 1.0% (3 errors in 100 requests over 0.2 s)",
        "p95 latency 0.248 s above 0.100 s"]


def test_within_thresholds_is_ok(capsys, server):
    result = run(capsys, url=server.url + "/metrics", window=0.1, error_ratio_max=0.05, p95_max_seconds=0.5)
    assert result["ok"] is True and result["failures"] == []


def test_counter_reset_between_samples_is_not_negative(capsys, server):
    restarted = exposition({"natural_language": 30, "sql": 10}, {"query_execution_failed": 2},
                           [("0.05", 40), ("0.1", 40), ("0.25", 40), ("+Inf", 40)])
    server.scrapes = [(200, SECOND), (200, restarted)]
    result = run(capsys, url=server.url + "/metrics", window=0.1)
    assert result["requests"] == 40 and result["errors"] == 2
    assert result["error_ratio"] == 0.05
    assert result["p95_seconds"] == pytest.approx(0.05 * 38 / 40)


def test_no_traffic_gives_null_ratio_and_is_ok(capsys, server):
    server.scrapes = [(200, FIRST)]
    result = run(capsys, url=server.url + "/metrics", window=0.1)
    assert result["requests"] == 0 and result["request_rate"] == 0
    assert result["error_ratio"] is None and result["p95_seconds"] is None
    assert result["ok"] is True


def test_window_zero_reads_totals_once(capsys, server):
    server.scrapes = [(200, SECOND)]
    result = run(capsys, url=server.url + "/metrics", window=0)
    assert server.hits == 1
    assert result["requests"] == 200 and result["errors"] == 4 and result["error_ratio"] == 0.02
    assert result["request_rate"] is None


def test_configurable_names_and_missing_metric(capsys, server):
    text = "# TYPE api_requests_total counter\napi_requests_total{status=\"200\"} 7\n"
    server.scrapes = [(200, text)]
    result = run(capsys, url=server.url + "/metrics", window=0)
    assert result["ok"] is False and result["requests"] is None
    assert "metric queries_total not found at %s/metrics" % server.url in result["failures"]
    result = run(capsys, url=server.url + "/metrics", window=0, requests_metric="api_requests_total",
                 errors_metric="api_requests", duration_metric="api_requests")
    assert result["requests"] == 7


@pytest.mark.parametrize("scrape, failure", [
    ((500, "Internal Server Error"), "HTTP 500 from "),
    ((200, "<html><body>proxy error</body></html>"), "cannot parse the Prometheus text from "),
])
def test_bad_endpoint_is_a_failed_result_not_a_failed_task(capsys, server, scrape, failure):
    server.scrapes = [scrape]
    result = run(capsys, url=server.url + "/metrics", window=0)
    assert result.get("failed") is not True and result["ok"] is False
    assert result["failures"][0].startswith(failure)


def test_unreachable_endpoint(capsys):
    result = run(capsys, url="http://127.0.0.1:1/metrics", window=0)
    assert result["ok"] is False
    assert result["failures"] == ["cannot read http://127.0.0.1:1/metrics: connection refused"]


def test_prometheus_queries_and_firing_alerts(capsys, server):
    server.answers = {"rate(queries_total[60s])": "2", "rate(query_errors_total[60s])": "0.5",
                      "histogram_quantile(0.95": "0.25"}
    server.alerts = [
        {"labels": {"alertname": "HighErrorRate", "severity": "critical"}, "state": "firing",
         "activeAt": "2026-11-29T08:00:00Z", "value": "0.25"},
        {"labels": {"alertname": "HighResponseTime", "severity": "warning"}, "state": "pending",
         "activeAt": "2026-11-29T08:01:00Z", "value": "0.2"}]
    result = run(capsys, prometheus_url=server.url + "/", window=60)
    assert result["source"] == "prometheus"
    assert result["requests"] == 120 and result["errors"] == 30 and result["error_ratio"] == 0.25
    assert result["request_rate"] == 2 and result["p95_seconds"] == 0.25
    assert result["firing_alerts"] == [{"alertname": "HighErrorRate", "severity": "critical", "state": "firing",
                                        "labels": {"alertname": "HighErrorRate", "severity": "critical"},
                                        "activeAt": "2026-11-29T08:00:00Z"}]
    assert "histogram_quantile(0.95, sum by (le) (rate(query_duration_seconds_bucket[60s])))" in server.queries
    assert result["failures"] == ["error ratio 25.0% above 1.0% (30 errors in 120 requests over 60 s)",
                                  "p95 latency 0.250 s above 0.100 s"]


def test_prometheus_without_error_series_and_nan_quantile(capsys, server):
    server.answers = {"rate(queries_total[300s])": "1", "histogram_quantile": "NaN"}
    result = run(capsys, prometheus_url=server.url, include_alerts=False)
    assert result["window"] == 300 and result["errors"] == 0 and result["error_ratio"] == 0
    assert result["p95_seconds"] is None and result["ok"] is True and result["firing_alerts"] == []


def test_prometheus_without_request_samples_or_with_an_error(capsys, server):
    result = run(capsys, prometheus_url=server.url, window=30)
    assert result["ok"] is False
    assert result["failures"] == ["Prometheus has no samples of queries_total over the last 30s "
                                  "(not scraped, or never incremented)"]
    server.answers = {"queries_total": "error"}
    result = run(capsys, prometheus_url=server.url, window=30)
    assert result["failures"][0].startswith("Prometheus API error (HTTP 400)")
    assert "parse error in query" in result["failures"][0]


@pytest.mark.parametrize("args, message", [
    ({"url": "http://x/metrics", "prometheus_url": "http://x"}, "mutually exclusive"),
    ({}, "one of the following is required"),
    ({"url": "x/metrics"}, "url: url 'x/metrics' must start with http"),
    ({"url": "http://x/metrics", "requests_metric": "queries total{}"}, "not a valid Prometheus metric name"),
    ({"url": "http://x/metrics", "window": -1}, "window must be at least 0"),
    ({"prometheus_url": "http://x", "window": 0}, "window must be at least 1 with prometheus_url"),
    ({"url": "http://x/metrics", "error_ratio_max": 5}, "error_ratio_max must be between 0 and 1"),
])
def test_bad_options_fail_clearly(capsys, args, message):
    result = run(capsys, **args)
    assert result["failed"] is True and message in result["msg"]
