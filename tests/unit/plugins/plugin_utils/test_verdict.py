"""The verdict names the broken component and the disagreeing signals."""
from ansible_collections.sqlsynth.runbooks.plugins.plugin_utils._verdict import health_verdict


def health(status=200, state="healthy", db=True, cache=True, failures=None, cert_days=80, body=True):
    probe = {"name": "health", "status": status, "elapsed_ms": 12, "failures": failures or [],
             "ok": not failures and status == 200,
             "json": {"status": state, "components": {"database": db, "cache": cache, "openai_api": True}} if body else None,
             "cert": {"subject_cn": "sqlsynth.lab", "days_left": cert_days}}
    return probe


def query(ok=True, status=200, failures=None):
    return {"name": "synthetic_query", "ok": ok, "status": status, "elapsed_ms": 30,
            "failures": failures or ([] if ok else ["status %s not in [200]" % status])}


def results(*probes, pg=True, redis=True, metrics=None, alerts=None):
    out = {"probes": {"probes": list(probes)},
           "postgres": {"ok": pg, "reachable": pg, "failures": [] if pg else ["connection refused at 127.0.0.1:5432"],
                        "connections": {"used": 3, "max": 100}},
           "redis": {"ok": redis, "reachable": redis, "failures": [] if redis else ["connection refused"],
                     "ping_ms": 0.3, "memory": {"ratio": 0.01}}}
    if metrics is not None:
        out["metrics"] = metrics
    if alerts is not None:
        out["alerts"] = alerts
    return out


def test_all_good_is_healthy_with_a_row_per_signal():
    v = health_verdict(results(health(), query()))
    assert v["verdict"] == "healthy"
    assert v["broken"] == [] and v["disagreements"] == []
    names = [s["name"] for s in v["signals"]]
    assert {"health", "tls", "synthetic_query", "postgres", "redis", "health.components.database"} <= set(names)
    assert v["table"][0].startswith("SIGNAL") and len(v["table"]) == len(v["signals"]) + 1


def test_database_down_is_named_first_and_unhealthy():
    v = health_verdict(results(health(503, "unhealthy", db=False), query(False, 503), pg=False))
    assert v["verdict"] == "unhealthy"
    assert v["primary"] == "database"
    assert v["broken"][0] == "database" and "api" in v["broken"]
    assert "app" not in v["broken"], "the app answered /health; it is its database that is down"


def test_redis_down_degrades_and_names_cache():
    v = health_verdict(results(health(503, "unhealthy", cache=False), query(), redis=False))
    assert v["primary"] == "cache"
    assert v["verdict"] == "degraded"
    assert any("/health says unhealthy but the synthetic query succeeds" in d for d in v["disagreements"])


def test_app_answering_500_names_app():
    v = health_verdict(results(health(500, body=False, failures=["status 500 not in [200, 503]"]), query(False, 500)))
    assert v["verdict"] == "unhealthy"
    assert v["broken"] == ["app", "api"]


def test_hanging_app_names_app():
    v = health_verdict(results(health(None, body=False, failures=["timed out after 5.0 s"]),
                               query(False, None, ["timed out after 5.0 s"])))
    assert v["primary"] == "app"
    assert "timed out" in next(s for s in v["signals"] if s["name"] == "health")["detail"]


def test_expired_certificate_names_tls_not_app_when_direct_probe_is_good():
    direct = dict(health(), name="health_direct", cert=None)
    v = health_verdict(results(health(None, body=False, failures=["certificate verify failed: certificate has expired"],
                                      cert_days=-1), direct, query(False, None, ["certificate verify failed"])))
    assert v["primary"] == "tls"
    assert "app" not in v["broken"]


def test_certificate_close_to_expiry_fails_tls():
    v = health_verdict(results(health(cert_days=3), query()), min_cert_days=14)
    assert v["broken"] == ["tls"]
    assert "minimum 14" in next(s for s in v["signals"] if s["name"] == "tls")["detail"]


def test_health_says_database_up_but_direct_check_fails_is_a_disagreement():
    v = health_verdict(results(health(), query(), pg=False))
    assert v["primary"] == "database"
    assert any("/health says database is up but the direct postgres check says down" in d for d in v["disagreements"])


def test_firing_alerts_with_good_live_signals_do_not_degrade():
    alerts = {"ok": True, "failures": [], "firing_alerts": [{"alertname": "HighErrorRate", "state": "firing"}]}
    v = health_verdict(results(health(), query(), alerts=alerts))
    assert v["verdict"] == "healthy"
    assert v["firing_alerts"] == ["HighErrorRate"]
    assert any("HighErrorRate" in d for d in v["disagreements"])


def test_high_error_ratio_degrades_through_the_metrics_signal():
    metrics = {"ok": False, "failures": ["error ratio 35.0% above 1.0%"], "error_ratio": 0.35, "window": 5}
    v = health_verdict(results(health(), query(), metrics=metrics))
    assert v["verdict"] == "degraded"
    assert "error ratio 35.0%" in next(s for s in v["signals"] if s["name"] == "metrics")["detail"]


def test_no_signals_is_unknown_not_healthy():
    assert health_verdict({})["verdict"] == "unknown"


def test_bad_input_is_a_type_error_with_a_message():
    try:
        health_verdict(["not", "a", "dict"])
    except TypeError as exc:
        assert "expects a dict" in str(exc)
    else:
        raise AssertionError("no error for a list")
