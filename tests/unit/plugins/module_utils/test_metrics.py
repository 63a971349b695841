"""The arithmetic of _metrics: increases across counter resets and histogram_quantile."""
import math

import pytest

from ansible_collections.sqlsynth.runbooks.plugins.module_utils import _metrics

INF = float("inf")


@pytest.mark.parametrize("buckets, expected", [
    # PromQL: rank = 0.95 * 100 = 95 falls in (0.1, 0.5] holding 20 of them -> 0.1 + 0.4 * 15/20
    ({0.05: 10, 0.1: 80, 0.5: 100, INF: 100}, 0.1 + 0.4 * 15 / 20),
    # the rank lands in the +Inf bucket: the highest finite bound is returned
    ({0.05: 10, 0.1: 80, INF: 100}, 0.1),
    # the first bucket interpolates from 0
    ({0.2: 100, 1.0: 100, INF: 100}, 0.2 * 0.95),
    # a first bound at or below 0 is returned as is
    ({-1.0: 100, INF: 100}, -1.0),
    # non-monotonic counts (a reset in one bucket) are evened out to 90/90/100 like Prometheus does
    ({0.1: 90, 0.2: 50, INF: 100}, 0.2),
    ({0.1: 90, 0.2: 50, 0.4: 100, INF: 100}, 0.2 + 0.2 * 5 / 10),
])
def test_histogram_quantile_matches_promql(buckets, expected):
    assert _metrics.histogram_quantile(0.95, buckets) == pytest.approx(expected)


@pytest.mark.parametrize("buckets", [{}, {INF: 5}, {0.1: 3, 0.2: 5}, {0.1: 0, INF: 0}])
def test_histogram_quantile_without_answer(buckets):
    assert _metrics.histogram_quantile(0.95, buckets) is None


def snap(values):
    return {"names": {k[0] for k in values}, "series": values}


def test_increase_per_series_with_reset_and_new_series():
    first = snap({("queries_total", (("type", "a"),)): 100.0, ("queries_total", (("type", "b"),)): 50.0,
                  ("queries_total", (("type", "gone"),)): 7.0})
    second = snap({("queries_total", (("type", "a"),)): 130.0,  # +30
                   ("queries_total", (("type", "b"),)): 4.0,  # reset: counts from 0 -> +4
                   ("queries_total", (("type", "new"),)): 2.0})  # appeared: +2
    deltas = _metrics.increase(first, second)
    assert _metrics.counter_sum(deltas, "queries_total") == 36
    assert _metrics.counter_sum(deltas, "queries") == 36  # the name may omit _total
    assert all(v >= 0 for v in deltas.values())
    assert _metrics.increase(None, second) == second["series"]


def test_parse_reads_the_app_names_and_bucket_bounds():
    text = "\n".join([
        "# TYPE query_errors_total counter",
        "# TYPE query_duration_seconds histogram",
        'query_duration_seconds_bucket{le="0.1",path="/a"} 3',
        'query_duration_seconds_bucket{le="+Inf",path="/a"} 4',
        'query_duration_seconds_bucket{le="0.1",path="/b"} 1',
        'query_duration_seconds_bucket{le="+Inf",path="/b"} 1',
        ""])
    parsed = _metrics.parse(text)
    assert _metrics.found(parsed, "query_errors_total")  # declared, never incremented
    assert not _metrics.found(parsed, "queries_total")
    assert _metrics.counter_sum(_metrics.increase(None, parsed), "query_errors_total") == 0
    assert _metrics.bucket_counts(parsed["series"], "query_duration_seconds") == {0.1: 4.0, INF: 5.0}


@pytest.mark.parametrize("text", ["<html>502 Bad Gateway</html>", "queries_total{type=\"a\" 3", ""])
def test_parse_errors_are_metrics_errors(text):
    with pytest.raises(_metrics.MetricsError, match="cannot parse|no metrics"):
        _metrics.parse(text, "http://x/metrics")


def test_judge_thresholds_and_null_ratio():
    base = dict(source="metrics", url="u", window=10, request_rate=0.0, failures=[])
    quiet = _metrics.judge(dict(base, requests=0, errors=0, error_ratio=None, p95_seconds=None), 0.01, 0.1)
    assert quiet["error_ratio"] is None and quiet["ok"] is True
    busy = _metrics.judge(dict(base, failures=[], requests=1000, errors=10, error_ratio=None, p95_seconds=0.1),
                          0.01, 0.1)
    assert busy["error_ratio"] == 0.01 and busy["ok"] is True  # at the limit is not above it
    bad = _metrics.judge(dict(base, failures=[], requests=1000, errors=11, error_ratio=None,
                              p95_seconds=math.pi / 10), 0.01, 0.1)
    assert bad["failures"] == ["error ratio 1.1% above 1.0% (11 errors in 1000 requests over 10 s)",
                               "p95 latency 0.314 s above 0.100 s"]
