# Copyright (c) 2026 sqlsynth.runbooks contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Combine the results of the health *_info modules into one verdict.

Each source is judged on its own (a *signal*); the signals are then grouped by the
component they speak for, and the components that fail are named, most fundamental
first. Where two signals speak for the same thing and disagree, that is reported too:
a /health endpoint that says "healthy" while a synthetic query fails is worth knowing.
"""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

# Order in which broken components are named: the first is the likeliest root cause.
COMPONENT_ORDER = ("database", "cache", "tls", "proxy", "app", "api", "metrics")
# Components whose failure alone makes the service unhealthy (the rest degrade it).
CRITICAL = frozenset(("database", "tls", "proxy", "app", "api"))
TLS_WORDS = ("certificate", "ssl", "tls", "hostname mismatch", "self-signed", "self signed")


def _signal(name, component, ok, detail, source):
    return {"name": name, "component": component, "ok": ok, "detail": detail, "source": source}


def _is_tls_failure(probe):
    text = " ".join(probe.get("failures") or []).lower()
    return any(word in text for word in TLS_WORDS)


def _probe_detail(probe):
    if probe.get("failures"):
        return "; ".join(probe["failures"])
    return "HTTP %s in %s ms" % (probe.get("status"), probe.get("elapsed_ms"))


def _health_signals(probe, via_proxy):
    """Signals from one /health probe: is the app answering, and what does it say."""
    signals = []
    label = "health" if via_proxy else "health_direct"
    body = probe.get("json") if isinstance(probe.get("json"), dict) else None
    if via_proxy and _is_tls_failure(probe):
        signals.append(_signal("tls", "tls", False, _probe_detail(probe), label))
        return signals, None
    answered = body is not None and "status" in body and probe.get("status") in (200, 503)
    if not answered:
        detail = _probe_detail(probe)
        if probe.get("status") and body is None and not probe.get("failures"):
            detail = "HTTP %s without the /health JSON" % probe.get("status")
        signals.append(_signal(label, "app", False, detail, label))
        return signals, None
    signals.append(_signal(label, "app", True,
                           "answers in %s ms, reports %s" % (probe.get("elapsed_ms"), body.get("status")), label))
    components = body.get("components")
    if isinstance(components, dict):
        for comp, value in sorted(components.items()):
            comp_name = {"database": "database", "cache": "cache"}.get(comp, "app")
            signals.append(_signal("%s.components.%s" % (label, comp), comp_name, bool(value),
                                   "/health reports %s %s" % (comp, "up" if value else "down"), label))
    elif body.get("status") != "healthy":
        signals.append(_signal("%s.status" % label, "app", False,
                               "/health reports %s: %s" % (body.get("status"), body.get("error", "no detail")), label))
    return signals, body


def _tls_signal(probe, min_days):
    cert = probe.get("cert")
    if not cert:
        return None
    days = cert.get("days_left")
    if _is_tls_failure(probe):
        return _signal("tls", "tls", False, _probe_detail(probe), "health")
    ok = days is not None and days >= min_days
    detail = "certificate for %s valid %s more days" % (cert.get("subject_cn") or cert.get("subject") or "?", days)
    if not ok:
        detail += " (minimum %s)" % min_days
    return _signal("tls", "tls", ok, detail, "health")


def _module_signal(name, component, result):
    if not result or result.get("skipped"):
        return None
    failures = result.get("failures") or []
    if result.get("failed") and not failures:
        failures = [result.get("msg", "check failed")]
    ok = bool(result.get("ok")) and not failures and not result.get("failed")
    return _signal(name, component, ok, "; ".join(failures) if failures else "ok", name)


def _postgres_detail(result):
    conns = result.get("connections") or {}
    if conns.get("used") is not None:
        return "reachable, %s/%s connections" % (conns.get("used"), conns.get("max"))
    return "reachable"


def _redis_detail(result):
    mem = result.get("memory") or {}
    ratio = mem.get("ratio")
    return "PONG in %s ms, memory %s" % (
        result.get("ping_ms"), "%.0f%% of maxmemory" % (ratio * 100) if ratio is not None else "unbounded")


def _metrics_detail(result):
    ratio, p95 = result.get("error_ratio"), result.get("p95_seconds")
    return "error ratio %s, p95 %s over %s s" % (
        "n/a (no requests)" if ratio is None else "%.1f%%" % (ratio * 100),
        "n/a" if p95 is None else "%.0f ms" % (p95 * 1000), result.get("window"))


def health_verdict(results, min_cert_days=14):
    """Return the verdict dict for ``results``.

    ``results`` keys (all optional): ``probes`` (http_probe_info result: probes named
    ``health``, ``health_direct``, ``synthetic_query``), ``metrics`` (metrics_info on
    /metrics), ``alerts`` (metrics_info on Prometheus), ``postgres``
    (postgres_health_info), ``redis`` (redis_health_info).
    """
    if not isinstance(results, dict):
        raise TypeError("health_verdict expects a dict of check results, got %s" % type(results).__name__)
    signals = []
    disagreements = []
    probes = {p.get("name"): p for p in (results.get("probes") or {}).get("probes", [])}

    health_body = None
    if "health" in probes:
        new, health_body = _health_signals(probes["health"], via_proxy=True)
        signals.extend(new)
        tls = _tls_signal(probes["health"], min_cert_days)
        if tls and not any(s["name"] == "tls" for s in signals):
            signals.append(tls)
    direct_body = None
    if "health_direct" in probes:
        new, direct_body = _health_signals(probes["health_direct"], via_proxy=False)
        signals.extend(s for s in new if ".components." not in s["name"] or health_body is None)
        if health_body is None and direct_body is not None and "health" in probes:
            proxy_failed_not_tls = not any(s["name"] == "tls" and not s["ok"] for s in signals)
            if proxy_failed_not_tls:
                signals.append(_signal("proxy", "proxy", False,
                                       "the app answers directly but not through the proxy: %s"
                                       % _probe_detail(probes["health"]), "health"))
            disagreements.append("the app answers /health directly but not through the public URL")
    if "synthetic_query" in probes:
        probe = probes["synthetic_query"]
        signals.append(_signal("synthetic_query", "api", bool(probe.get("ok")), _probe_detail(probe), "synthetic_query"))

    for key, component, describe in (("postgres", "database", _postgres_detail), ("redis", "cache", _redis_detail),
                                     ("metrics", "metrics", _metrics_detail)):
        result = results.get(key)
        if result and not result.get("skipped"):
            sig = _module_signal(key, component, result)
            if sig["ok"]:
                sig["detail"] = describe(result)
            signals.append(sig)

    firing = []
    alerts = results.get("alerts")
    if alerts and not alerts.get("skipped"):
        firing = [a.get("alertname") for a in alerts.get("firing_alerts") or [] if a.get("state", "firing") == "firing"]

    # Disagreements between signals that speak for the same thing.
    by_name = {s["name"]: s for s in signals}
    for comp, direct in (("database", "postgres"), ("cache", "redis")):
        reported = by_name.get("health.components.%s" % comp)
        checked = by_name.get(direct)
        if reported and checked and reported["ok"] != checked["ok"]:
            disagreements.append("/health says %s is %s but the direct %s check says %s" % (
                comp, "up" if reported["ok"] else "down", direct, "up" if checked["ok"] else "down"))
    health_ok = health_body is not None and health_body.get("status") == "healthy"
    query = by_name.get("synthetic_query")
    if health_body is not None and query is not None and health_ok != query["ok"]:
        disagreements.append("/health says %s but the synthetic query %s" % (
            health_body.get("status"), "succeeds" if query["ok"] else "fails"))
    live_ok = all(s["ok"] for s in signals)
    if firing and live_ok:
        disagreements.append("Prometheus has firing alerts (%s) but every live signal is good now; "
                             "the alerts may be resolving" % ", ".join(sorted(set(firing))))
    if firing == [] and alerts and not alerts.get("skipped") and not live_ok:
        disagreements.append("live signals fail but Prometheus has no firing alert yet")

    failing = {s["component"] for s in signals if not s["ok"]}
    broken = [c for c in COMPONENT_ORDER if c in failing]
    if not signals:
        verdict = "unknown"
    elif not broken:
        verdict = "healthy"
    elif failing & CRITICAL:
        verdict = "unhealthy"
    else:
        verdict = "degraded"
    return {
        "verdict": verdict,
        "broken": broken,
        "primary": broken[0] if broken else None,
        "signals": signals,
        "disagreements": disagreements,
        "firing_alerts": sorted(set(firing)),
        "table": render_table(signals),
        "summary": summary_line(verdict, broken),
    }


def summary_line(verdict, broken):
    if not broken:
        return "verdict: %s" % verdict
    return "verdict: %s - broken: %s" % (verdict, ", ".join(broken))


def render_table(signals):
    """The signals as fixed-width text lines (one per signal), for a terminal."""
    rows = [("SIGNAL", "COMPONENT", "STATE", "DETAIL")]
    rows += [(s["name"], s["component"], "ok" if s["ok"] else "FAIL", s["detail"]) for s in signals]
    widths = [max(len(str(r[i])) for r in rows) for i in range(3)]
    return ["%-*s  %-*s  %-*s  %s" % (widths[0], r[0], widths[1], r[1], widths[2], r[2], r[3]) for r in rows]
