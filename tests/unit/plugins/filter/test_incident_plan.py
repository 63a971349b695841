"""incident_plan: every runbook's rules and branches, gates, boundaries and clear errors on bad input."""
import copy

import pytest
from ansible.errors import AnsibleFilterError

from ansible_collections.sqlsynth.runbooks.plugins.filter.incident_plan import FilterModule

plan_filter = FilterModule().filters()["incident_plan"]

HEALTHY = {
    "metrics": {"available": True, "error": None, "error_ratio": 0.0, "p95_seconds": 0.03, "requests": 100,
                "errors": 0, "window_seconds": 4, "errors_by_type": {}},
    "health": {"available": True, "error": None, "http_status": 200, "status": "healthy",
               "components": {"database": True, "cache": True, "openai_api": True}},
    "synthetic": {"available": True, "ok": True, "http_status": 200, "seconds": 0.05, "error": None},
    "logs": {
        "app": {"available": True, "error": None, "path": "/opt/sqlsynth-lab/logs/app.log", "error_count": 0,
                "recent_errors": [], "malformed_lines": 0},
        "audit": {"available": True, "error": None, "path": "/opt/sqlsynth-lab/logs/audit.log", "window_minutes": 15,
                  "events_by_type": {"query_execution": 40}, "injection_attempts": 0,
                  "injection_attempts_per_minute": 0.0, "auth_failures": 0, "rate_limited": 0, "offenders": [],
                  "malformed_lines": 0},
        "access": {"available": True, "error": None, "path": "x", "window_minutes": 15, "requests": 40,
                   "status_counts": {"2xx": 40}, "offenders": [], "malformed_lines": 0},
    },
    "postgres": {"available": True, "error": None, "reachable": True, "max_connections": 100,
                 "connections": {"total": 12, "by_state": {"idle": 10, "active": 2}, "app": 4},
                 "idle_in_transaction": [], "long_running": [], "blocked": [], "slowest_statements": [],
                 "pg_stat_statements": False},
    "redis": {"available": True, "error": None, "reachable": True, "used_memory": 1000, "maxmemory": 536870912,
              "mem_ratio": 0.0, "hit_ratio": 0.9, "connected_clients": 3, "evicted_keys": 0, "keys": 10},
    "host": {"available": True, "error": None, "cpu_count": 2, "load_1m": 0.4, "load_per_cpu": 0.2,
             "mem_available_ratio": 0.6, "disk": [{"path": "/", "free_ratio": 0.5}]},
    "durations": {"metrics": 4.0},
    "problems": [],
}
RUNBOOKS = ["high_error_rate", "db_connection", "security", "performance"]


def diag(**changes):
    """HEALTHY with changes given as section__key=value (logs sections as logs_app__key / logs_audit__key)."""
    data = copy.deepcopy(HEALTHY)
    for name, value in changes.items():
        if "__" not in name:
            data[name] = value
            continue
        section, key = name.split("__")
        target = data["logs"][section[5:]] if section.startswith("logs_") else data[section]
        target[key] = value
    return data


def plan(data, runbook, **kwargs):
    return plan_filter(data, runbook, **kwargs)


def actions(items):
    return [item["action"] for item in items]


def only(items, action):
    found = [item for item in items if item["action"] == action]
    assert len(found) == 1, items
    return found[0]


# ---------------------------------------------------------------- nothing abnormal


@pytest.mark.parametrize("runbook", RUNBOOKS)
def test_healthy_service_needs_nothing(runbook):
    assert plan(diag(), runbook) == []


@pytest.mark.parametrize("runbook", RUNBOOKS)
def test_no_traffic_and_empty_sections_need_nothing(runbook):
    data = diag(metrics__requests=0, metrics__errors=0, metrics__error_ratio=None, metrics__p95_seconds=None)
    assert plan(data, runbook) == []
    assert plan({}, runbook) == []


# ---------------------------------------------------------------- high_error_rate


def test_error_burst_restarts_the_app_with_the_numbers():
    data = diag(metrics__errors=34, metrics__error_ratio=0.34, health__http_status=500, health__status=None,
                synthetic__ok=False, synthetic__http_status=500, synthetic__error="HTTP 500")
    items = plan(data, "high_error_rate")
    assert actions(items) == ["restart_app"]
    item = items[0]
    assert item["reason"].startswith("error ratio 34.0% (34 errors in 100 requests over 4 s) > 10%")
    assert "/health answers HTTP 500" in item["reason"]
    assert item["destructive"] is True and item["undoable"] is False
    assert item["allowed"] is True and item["blocked_by"] is None and item["params"] == {}


@pytest.mark.parametrize("errors, restart", [(10, False), (11, True)])
def test_error_ratio_boundary_is_strictly_above_the_limit(errors, restart):
    items = plan(diag(metrics__errors=errors), "high_error_rate")
    assert actions(items) == (["restart_app"] if restart else [])


def test_error_ratio_limit_from_settings():
    items = plan(diag(metrics__errors=3), "high_error_rate", settings={"error_ratio_max": 0.01})
    assert actions(items) == ["restart_app"]
    assert "error ratio 3.0% (3 errors in 100 requests over 4 s) > 1%" in items[0]["reason"]


def test_refused_injection_attempts_are_not_app_errors():
    by_type = {"sql_injection_attempt": 38, "query_execution_failed": 2}
    data = diag(metrics__errors=40, metrics__error_ratio=0.4, metrics__errors_by_type=by_type)
    assert plan(data, "high_error_rate") == []
    data["metrics"]["errors_by_type"]["query_execution_failed"] = 20
    data["metrics"]["errors"] = 58
    items = plan(data, "high_error_rate")
    assert actions(items) == ["restart_app"]
    assert "error ratio 20.0%" in items[0]["reason"] and "38 refused injection attempts not counted" in items[0]["reason"]


def test_error_ratio_alone_when_counts_are_missing():
    data = diag(metrics__errors=None, metrics__error_ratio=0.5)
    assert "error ratio 50.0% > 10%" in plan(data, "high_error_rate")[0]["reason"]


@pytest.mark.parametrize("changes, words", [
    ({"health__available": False, "health__error": "connection refused", "health__http_status": None,
      "health__status": None}, "/health unreachable: connection refused"),
    ({"health__http_status": 503, "health__status": "unhealthy"}, "/health answers HTTP 503 unhealthy"),
    ({"synthetic__ok": False, "synthetic__error": "timed out after 5.0 s"}, "synthetic query failed: timed out"),
])
def test_failing_health_or_synthetic_restarts_without_traffic(changes, words):
    changes.update(metrics__requests=0, metrics__errors=0, metrics__error_ratio=None)
    items = plan(diag(**changes), "high_error_rate")
    assert actions(items) == ["restart_app"]
    assert words in items[0]["reason"]


def test_verdict_naming_the_api_broken_restarts():
    verdict = {"verdict": "unhealthy", "broken": ["api"], "signals": [], "disagreements": []}
    items = plan(diag(), "high_error_rate", verdict=verdict)
    assert actions(items) == ["restart_app"] and "verification found api broken" in items[0]["reason"]


def test_database_down_starts_it_instead_of_restarting():
    data = diag(postgres__reachable=False, postgres__error="connection refused", metrics__errors=100,
                health__http_status=503, health__status="unhealthy",
                health__components={"database": False, "cache": True})
    items = plan(data, "high_error_rate")
    assert actions(items) == ["start_database"]
    assert items[0]["reason"] == "postgres unreachable: connection refused"
    assert items[0]["destructive"] is False and items[0]["undoable"] is False


def test_idle_in_transaction_sessions_past_the_limit_are_terminated():
    sessions = [{"pid": 4021, "seconds": 301.5, "application_name": "sql_synthesizer", "client_addr": "127.0.0.1",
                 "query": "SELECT 1"},
                {"pid": 4001, "seconds": 300, "application_name": "sql_synthesizer", "client_addr": None, "query": ""},
                {"pid": 4050, "seconds": 299.9, "application_name": "psql", "client_addr": None, "query": ""}]
    items = plan(diag(postgres__idle_in_transaction=sessions, metrics__errors=50), "high_error_rate")
    assert actions(items) == ["terminate_idle_sessions"]
    item = items[0]
    assert item["params"] == {"pids": [4001, 4021], "older_than_seconds": 300}
    assert item["reason"] == "2 sessions idle in transaction > 300 s (longest 301.5 s)"
    assert item["destructive"] is True and item["undoable"] is False


def test_idle_limit_from_settings():
    sessions = [{"pid": 7, "seconds": 12, "application_name": "sql_synthesizer", "client_addr": None, "query": ""}]
    items = plan(diag(postgres__idle_in_transaction=sessions), "high_error_rate",
                 settings={"idle_in_transaction_seconds": 10})
    assert only(items, "terminate_idle_sessions")["params"] == {"pids": [7], "older_than_seconds": 10}


@pytest.mark.parametrize("changes, words", [
    ({"redis__reachable": False, "redis__error": "connection refused"}, "redis unreachable: connection refused"),
    ({"health__components": {"database": True, "cache": False}, "health__http_status": 503,
      "health__status": "unhealthy"}, "/health reports the cache down"),
])
def test_broken_redis_switches_the_cache_to_memory(changes, words):
    items = plan(diag(**changes), "high_error_rate")
    assert actions(items) == ["cache_to_memory"]
    assert items[0]["reason"] == words + " while the app uses redis"
    assert items[0]["destructive"] is False and items[0]["undoable"] is True


def test_broken_redis_is_ignored_when_the_app_does_not_use_it():
    data = diag(redis__reachable=False, redis__error="connection refused")
    assert plan(data, "high_error_rate", settings={"cache_backend": "memory"}) == []


def test_flush_cache_only_on_the_operators_word_and_gated_off_by_default():
    assert plan(diag(), "high_error_rate") == []
    items = plan(diag(), "high_error_rate", settings={"cache_corrupted": True})
    item = only(items, "flush_cache")
    assert item["allowed"] is False and item["blocked_by"] == "gate incident_gates.flush_cache is false"
    assert item["destructive"] is True
    items = plan(diag(), "high_error_rate", settings={"cache_corrupted": True}, gates={"flush_cache": True})
    assert only(items, "flush_cache")["allowed"] is True


def test_causes_come_in_runbook_order():
    sessions = [{"pid": 9, "seconds": 900, "application_name": "x", "client_addr": None, "query": ""}]
    data = diag(postgres__reachable=False, postgres__idle_in_transaction=sessions, redis__reachable=False)
    assert actions(plan(data, "high_error_rate")) == ["start_database", "terminate_idle_sessions", "cache_to_memory"]


def test_load_adds_scale_out_gated_off_by_default():
    data = diag(metrics__errors=30, host__load_per_cpu=2.5)
    items = plan(data, "high_error_rate")
    assert actions(items) == ["restart_app", "scale_out"]
    scale = items[1]
    assert scale["params"] == {"replicas": 5} and scale["reason"] == "load per CPU 2.50 > 1"
    assert scale["allowed"] is False and scale["blocked_by"] == "gate incident_gates.scale_out is false"
    items = plan(data, "high_error_rate", gates={"scale_out": True}, settings={"replicas": 7})
    assert items[1]["allowed"] is True and items[1]["params"] == {"replicas": 7}


def test_load_alone_is_not_an_error_incident():
    assert plan(diag(host__load_per_cpu=2.5), "high_error_rate") == []


# ---------------------------------------------------------------- db_connection


def test_db_connection_database_down():
    data = diag(postgres__reachable=False, postgres__available=True, postgres__error="connection refused",
                logs_app__recent_errors=["ERROR couldn't get a connection after 5.00 sec"])
    assert actions(plan(data, "db_connection")) == ["start_database"]


def test_db_connection_pool_exhaustion_terminates_then_raises_the_pool():
    sessions = [{"pid": 100 + n, "seconds": 400, "application_name": "sql_synthesizer", "client_addr": None,
                 "query": "SELECT 1"} for n in range(3)]
    data = diag(postgres__idle_in_transaction=sessions,
                logs_app__recent_errors=["2026-12-05 ERROR app: database unavailable: couldn't get a connection "
                                         "after 5.00 sec"])
    items = plan(data, "db_connection")
    assert actions(items) == ["terminate_idle_sessions", "raise_pool_size"]
    assert items[0]["params"]["pids"] == [100, 101, 102]
    raise_pool = items[1]
    assert raise_pool["params"] == {"pool_size": 20, "max_overflow": 40}
    assert "1 pool timeout in the errors" in raise_pool["reason"] and "pool size 20, overflow 40" in raise_pool["reason"]
    assert raise_pool["destructive"] is False and raise_pool["undoable"] is True


@pytest.mark.parametrize("total, raised", [(79, False), (80, True)])
def test_connections_near_max_boundary(total, raised):
    data = diag(postgres__connections={"total": total, "by_state": {"idle": total}, "app": 10})
    items = plan(data, "db_connection", settings={"pool_size": 30, "max_overflow": 60})
    if raised:
        assert items[0]["action"] == "raise_pool_size"
        assert items[0]["params"] == {"pool_size": 30, "max_overflow": 60}
        assert items[0]["reason"].startswith("80 of max_connections 100 in use (>= 80%)")
    else:
        assert items == []


def test_pool_timeout_found_in_the_problems():
    data = diag(problems=["PoolTimeout: couldn't get a connection after 5.00 sec (12 times)"])
    assert actions(plan(data, "db_connection")) == ["raise_pool_size"]


# ---------------------------------------------------------------- security


def offender(client, injections, auth_failures=0, events=None):
    return {"client": client, "events": events or injections + auth_failures, "injection_attempts": injections,
            "auth_failures": auth_failures, "rate_limited": 0}


def test_injection_burst_with_the_lab_key_gives_full_containment():
    data = diag(logs_audit__offenders=[offender("127.0.0.66", 42)], logs_audit__injection_attempts=42)
    items = plan(data, "security")
    assert actions(items) == ["block_clients", "rotate_api_key", "lower_rate_limit", "harden"]
    block = items[0]
    assert block["params"] == {"clients": ["127.0.0.66"]}
    assert block["reason"] == "client 127.0.0.66: 42 injection attempts in 15 min (>= 5)"
    assert block["destructive"] is True and block["undoable"] is True
    rotate = items[1]
    assert "valid API key" in rotate["reason"] and rotate["destructive"] is True and rotate["undoable"] is False
    assert items[2]["params"] == {"per_minute": 10}
    assert items[3]["params"] == {"settings": {"QUERY_AGENT_ENABLE_HSTS": "true", "QUERY_AGENT_CSRF_ENABLED": "true",
                                               "QUERY_AGENT_MAX_REQUEST_SIZE_MB": "0.5"}}
    assert all(item["allowed"] for item in items)


@pytest.mark.parametrize("attempts, incident", [(4, False), (5, True)])
def test_offender_threshold_boundary(attempts, incident):
    data = diag(logs_audit__offenders=[offender("203.0.113.9", attempts, auth_failures=3)],
                logs_audit__injection_attempts=attempts)
    items = plan(data, "security")
    assert actions(items) == (["block_clients", "lower_rate_limit", "harden"] if incident else [])


def test_offender_threshold_from_settings():
    data = diag(logs_audit__offenders=[offender("203.0.113.9", 2, auth_failures=1)], logs_audit__injection_attempts=2)
    items = plan(data, "security", settings={"offender_min_attempts": 2})
    assert only(items, "block_clients")["params"] == {"clients": ["203.0.113.9"]}


def test_loopback_and_never_block_addresses_are_reported_not_blocked():
    offenders = [offender("127.0.0.1", 30, 1), offender("::1", 20, 1), offender("10.1.2.3", 12, 1),
                 offender("198.51.100.7", 9, 1), offender("unknown", 8, 1), offender("192.0.2.1", 2, 1)]
    data = diag(logs_audit__offenders=offenders, logs_audit__injection_attempts=81)
    items = plan(data, "security", settings={"never_block": ["10.0.0.0/8"]})
    assert actions(items) == ["block_clients", "report", "lower_rate_limit", "harden"]
    assert items[0]["params"] == {"clients": ["198.51.100.7"]}
    report = items[1]
    assert report["params"] == {"clients": ["127.0.0.1", "::1", "10.1.2.3", "unknown"]}
    assert "127.0.0.1 is never blocked (loopback)" in report["reason"]
    assert "::1 is never blocked (loopback)" in report["reason"]
    assert "10.1.2.3 is never blocked (settings.never_block 10.0.0.0/8)" in report["reason"]
    assert "'unknown' is not an IP address" in report["reason"]
    assert report["allowed"] is False and report["blocked_by"].startswith("no automatic remedy")
    assert "192.0.2.1" not in items[0]["params"]["clients"] + report["params"]["clients"]


def test_only_loopback_offender_still_rotates_and_hardens():
    data = diag(logs_audit__offenders=[offender("127.0.0.1", 10)], logs_audit__injection_attempts=10)
    assert actions(plan(data, "security")) == ["report", "rotate_api_key", "lower_rate_limit", "harden"]


def test_many_small_offenders_lower_the_limit_without_blocking():
    data = diag(logs_audit__offenders=[offender("192.0.2.%d" % n, 1, 1) for n in range(6)],
                logs_audit__injection_attempts=6)
    items = plan(data, "security")
    assert actions(items) == ["lower_rate_limit", "harden"]
    assert items[0]["reason"] == "6 injection attempts in 15 min: rate limit 10 per minute"


def test_harden_and_rate_from_settings():
    data = diag(logs_audit__offenders=[offender("192.0.2.8", 5, 1)], logs_audit__injection_attempts=5)
    items = plan(data, "security", settings={"rate_limit_per_minute": 3, "harden": {"QUERY_AGENT_ENABLE_HSTS": "true"}})
    assert only(items, "lower_rate_limit")["params"] == {"per_minute": 3}
    assert only(items, "harden")["params"] == {"settings": {"QUERY_AGENT_ENABLE_HSTS": "true"}}


def test_security_gates_leave_items_listed_but_not_allowed():
    data = diag(logs_audit__offenders=[offender("127.0.0.66", 42)], logs_audit__injection_attempts=42)
    items = plan(data, "security", gates={"block_clients": False, "rotate_api_key": False})
    assert actions(items) == ["block_clients", "rotate_api_key", "lower_rate_limit", "harden"]
    assert [item["allowed"] for item in items] == [False, False, True, True]
    assert items[0]["blocked_by"] == "gate incident_gates.block_clients is false"
    assert items[1]["blocked_by"] == "gate incident_gates.rotate_api_key is false"


# ---------------------------------------------------------------- performance


@pytest.mark.parametrize("p95, slow", [(0.1, False), (0.1001, True)])
def test_p95_boundary(p95, slow):
    items = plan(diag(metrics__p95_seconds=p95), "performance")
    assert actions(items) == (["restart_app"] if slow else [])
    if slow:
        assert items[0]["reason"].startswith("p95 100.1 ms > 100 ms")


def test_lock_contention_is_reported_not_acted_on():
    blocked = [{"pid": 55, "blocking_pids": [44], "seconds": 20, "query": "UPDATE t"},
               {"pid": 56, "blocking_pids": [44, 45], "seconds": 10, "query": "UPDATE t"}]
    items = plan(diag(metrics__p95_seconds=2.0, postgres__blocked=blocked, redis__reachable=False), "performance")
    assert actions(items) == ["report"]
    assert items[0]["params"] == {"blocked_pids": [55, 56], "blocking_pids": [44, 45]}
    assert "p95 2 s > 100 ms; lock contention: 2 sessions blocked by pids 44, 45" in items[0]["reason"]
    assert items[0]["allowed"] is False


def test_performance_redis_down_then_load_then_restart():
    assert actions(plan(diag(metrics__p95_seconds=0.5, redis__reachable=False, host__load_per_cpu=3),
                        "performance")) == ["cache_to_memory"]
    items = plan(diag(metrics__p95_seconds=0.5, host__load_per_cpu=3), "performance")
    assert actions(items) == ["scale_out"] and items[0]["allowed"] is False
    assert items[0]["reason"] == "p95 500 ms > 100 ms; load per CPU 3.00 > 1"
    assert actions(plan(diag(metrics__p95_seconds=0.5), "performance")) == ["restart_app"]


def test_performance_threshold_from_settings():
    assert plan(diag(metrics__p95_seconds=0.5), "performance", settings={"p95_max_seconds": 1}) == []


# ---------------------------------------------------------------- gates and bad input


def test_gates_can_forbid_any_action_and_allow_the_gated_ones():
    data = diag(metrics__errors=50)
    item = plan(data, "high_error_rate", gates={"restart_app": False})[0]
    assert item["allowed"] is False and item["blocked_by"] == "gate incident_gates.restart_app is false"
    assert plan(data, "high_error_rate", gates={})[0]["allowed"] is True


@pytest.mark.parametrize("args, message", [
    (([], "high_error_rate"), "diagnostics must be the mapping returned by sqlsynth.runbooks.incident_diagnostics_info, got list"),
    (("text", "security"), "got str"),
    (({}, "deployment"), "unknown runbook 'deployment': use one of high_error_rate, db_connection, security, performance"),
    (({}, None), "unknown runbook None"),
    (({"postgres": "down"}, "db_connection"), "diagnostics.postgres must be a mapping, got str"),
    (({"logs": {"audit": []}}, "security"), "diagnostics.logs.audit must be a mapping, got list"),
    (({"metrics": {"requests": "many"}}, "high_error_rate"), "diagnostics.metrics.requests must be a number or null"),
    (({"logs": {"audit": {"offenders": "all"}}}, "security"), "diagnostics.logs.audit.offenders must be a list"),
    (({"problems": "bad"}, "db_connection"), "diagnostics.problems must be a list of strings"),
])
def test_bad_input_is_a_clear_filter_error(args, message):
    with pytest.raises(AnsibleFilterError) as err:
        plan(*args)
    assert "incident_plan: " in str(err.value) and message in str(err.value)


@pytest.mark.parametrize("kwargs, message", [
    ({"gates": {"restart_app": "yes"}}, "gates.restart_app must be true or false, got 'yes'"),
    ({"gates": {"restart_app": 1}}, "gates.restart_app must be true or false, got 1"),
    ({"gates": {"reboot": True}}, "gates: unknown action 'reboot' (known: "),
    ({"gates": ["restart_app"]}, "gates must be a mapping of action to true/false"),
    ({"gates": {"report": True}}, "unknown action 'report'"),
    ({"settings": "x"}, "settings must be a mapping"),
    ({"settings": {"error_ratio_max": "10%"}}, "settings.error_ratio_max must be a number >= 0, got '10%'"),
    ({"settings": {"pool_size": 0}}, "settings.pool_size must be a whole number >= 1, got 0"),
    ({"settings": {"replicas": True}}, "settings.replicas must be a whole number >= 1"),
    ({"settings": {"never_block": "127.0.0.66"}}, "settings.never_block must be a list"),
    ({"settings": {"never_block": ["not-an-ip"]}}, "settings.never_block: 'not-an-ip' is not an IP address or network"),
    ({"settings": {"cache_backend": "disk"}}, "settings.cache_backend must be memory, redis or memcached"),
    ({"settings": {"harden": {}}}, "settings.harden must be a non-empty mapping"),
    ({"verdict": "unhealthy"}, "verdict must be the verify role's verdict (a mapping), got str"),
    ({"verdict": {"broken": "api"}}, "verdict.broken must be a list of component names"),
])
def test_bad_settings_gates_and_verdict_are_clear_errors(kwargs, message):
    with pytest.raises(AnsibleFilterError) as err:
        plan(diag(), "high_error_rate", **kwargs)
    assert message in str(err.value)


def test_unknown_settings_keys_are_ignored_and_whole_floats_accepted():
    data = diag(metrics__errors=50, host__load_per_cpu=9)
    items = plan(data, "high_error_rate", settings={"watch_seconds": 600, "replicas": 6.0, "pool_size": None})
    assert items[1]["params"] == {"replicas": 6}


def test_input_is_not_modified():
    data = diag(metrics__errors=50, logs_audit__offenders=[offender("127.0.0.66", 42)])
    before = copy.deepcopy(data)
    for runbook in RUNBOOKS:
        plan(data, runbook, settings={"never_block": ["10.0.0.0/8"]})
    assert data == before
