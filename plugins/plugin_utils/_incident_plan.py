# Copyright (c) 2026 sqlsynth.runbooks contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Turn the incident diagnostics into an ordered remediation plan, by the service's incident runbook.

A pure function: the diagnostics (incident_diagnostics_info), the runbook name, optionally the
verify role's verdict, settings (thresholds and remedy values) and gates (action -> bool) in;
a list of plan items out, the first to be done first:

    {action, reason, destructive, undoable, params, allowed, blocked_by}

An action whose gate is false stays in the plan with ``allowed: false`` and ``blocked_by``
saying which gate, so the role can report what it did not do. The pseudo-action ``report``
(never allowed) carries findings the runbook prescribes no automatic remedy for: lock
contention, offenders that may never be blocked. An empty list means nothing to fix.
"""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import ipaddress
import re

RUNBOOKS = ("high_error_rate", "db_connection", "security", "performance")

# action: (destructive, undoable). Undoable = the role can put the previous state back.
ACTIONS = {
    # Starting a stopped server loses nothing; there is nothing to undo (stopping it again helps nobody).
    "start_database": (False, False),
    # Rolls back the transactions of the sessions it ends; they cannot be brought back.
    "terminate_idle_sessions": (True, False),
    # Settings in overrides.env: the previous file can be restored (they take effect on app restart).
    "raise_pool_size": (False, True),
    "cache_to_memory": (False, True),
    # Every cached entry is lost; the cache refills from the database.
    "flush_cache": (True, False),
    # Cuts those addresses off; the blocklist lines can be removed again.
    "block_clients": (True, True),
    # Clients holding the old key lose access; going back to a leaked key is not a rollback to offer.
    "rotate_api_key": (True, False),
    "lower_rate_limit": (False, True),
    "harden": (False, True),
    # Drops the requests in flight; a restart cannot be undone.
    "restart_app": (True, False),
    "scale_out": (False, True),
    # Not an action: a finding for a person. Never allowed, never executed.
    "report": (False, False),
}
GATED = tuple(a for a in ACTIONS if a != "report")
DEFAULT_GATES = dict((action, action not in ("scale_out", "flush_cache")) for action in GATED)

NEVER_BLOCK = ("127.0.0.1", "::1")
DEFAULT_SETTINGS = {
    "error_ratio_max": 0.10,              # HighErrorRate: more than 10% of queries fail
    "p95_max_seconds": 0.1,               # HighResponseTime: p95 above 100 ms
    "idle_in_transaction_seconds": 300,   # "idle in transaction for more than 5 minutes"
    "connections_near_max_ratio": 0.8,    # connections / max_connections at or above this is "near max"
    "pool_size": 20,                      # "raise pool size to 20 and overflow to 40"
    "max_overflow": 40,
    "offender_min_attempts": 5,           # injection attempts by one client that make it an offender
    "never_block": [],                    # addresses or networks never blocked (loopback always)
    "rate_limit_per_minute": 10,          # "lower the rate limit (10 per minute)"
    "harden": {"QUERY_AGENT_ENABLE_HSTS": "true", "QUERY_AGENT_CSRF_ENABLED": "true",
               "QUERY_AGENT_MAX_REQUEST_SIZE_MB": "0.5"},
    "load_per_cpu_max": 1.0,              # 1-minute load per CPU above this is "under load"
    "replicas": 5,                        # "scale the Deployment (3 replicas, 5 under load)"
    "cache_backend": "redis",             # the app's QUERY_AGENT_CACHE_BACKEND
    "cache_corrupted": False,             # an operator's judgment: no diagnostic can tell
}
NUMBERS = ("error_ratio_max", "p95_max_seconds", "idle_in_transaction_seconds", "connections_near_max_ratio",
           "load_per_cpu_max")
INTEGERS = ("pool_size", "max_overflow", "offender_min_attempts", "rate_limit_per_minute", "replicas")
POOL_TIMEOUT = re.compile(r"PoolTimeout|couldn't get a connection|could not get a connection|QueuePool limit|"
                          r"pool (?:is )?exhausted|pool timeout|timed out waiting for a connection", re.I)
INJECTION_ERROR = "sql_injection_attempt"


class PlanError(ValueError):
    """Bad input; the message says which and why."""


# ---------------------------------------------------------------- input checking

def _is_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def check_settings(settings):
    if settings is None:
        settings = {}
    if not isinstance(settings, dict):
        raise PlanError("settings must be a mapping (incident_settings), got %s" % type(settings).__name__)
    merged = dict(DEFAULT_SETTINGS)
    merged.update(dict((k, v) for k, v in settings.items() if v is not None))
    for key in NUMBERS:
        if not _is_number(merged[key]) or merged[key] < 0:
            raise PlanError("settings.%s must be a number >= 0, got %r" % (key, merged[key]))
    for key in INTEGERS:
        value = merged[key]
        if isinstance(value, float) and value == int(value):
            value = merged[key] = int(value)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise PlanError("settings.%s must be a whole number >= 1, got %r" % (key, merged[key]))
    if not isinstance(merged["never_block"], list) or not all(isinstance(v, str) for v in merged["never_block"]):
        raise PlanError("settings.never_block must be a list of addresses or networks, got %r" % (merged["never_block"],))
    networks = [(ipaddress.ip_network(entry), "loopback") for entry in NEVER_BLOCK]
    for entry in merged["never_block"]:
        try:
            networks.append((ipaddress.ip_network(entry.strip(), strict=False), "settings.never_block %s" % entry.strip()))
        except ValueError:
            raise PlanError("settings.never_block: %r is not an IP address or network" % entry)
    merged["never_block_networks"] = networks
    if not isinstance(merged["harden"], dict) or not merged["harden"]:
        raise PlanError("settings.harden must be a non-empty mapping of setting to value, got %r" % (merged["harden"],))
    if merged["cache_backend"] not in ("memory", "redis", "memcached"):
        raise PlanError("settings.cache_backend must be memory, redis or memcached, got %r" % (merged["cache_backend"],))
    if not isinstance(merged["cache_corrupted"], bool):
        raise PlanError("settings.cache_corrupted must be true or false, got %r" % (merged["cache_corrupted"],))
    return merged


def check_gates(gates):
    if gates is None:
        return dict(DEFAULT_GATES)
    if not isinstance(gates, dict):
        raise PlanError("gates must be a mapping of action to true/false (incident_gates), got %s"
                        % type(gates).__name__)
    merged = dict(DEFAULT_GATES)
    for action, value in gates.items():
        if action not in DEFAULT_GATES:
            raise PlanError("gates: unknown action %r (known: %s)" % (action, ", ".join(sorted(DEFAULT_GATES))))
        if not isinstance(value, bool):
            raise PlanError("gates.%s must be true or false, got %r" % (action, value))
        merged[action] = value
    return merged


def _section(diagnostics, *path):
    """A section of the diagnostics as a dict ({} when absent); PlanError when it is something else."""
    node = diagnostics
    for depth, key in enumerate(path):
        node = node.get(key)
        if node is None:
            return {}
        if not isinstance(node, dict):
            raise PlanError("diagnostics.%s must be a mapping, got %s" % (".".join(path[:depth + 1]), type(node).__name__))
    return node


def _list(section, key, where):
    value = section.get(key)
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise PlanError("diagnostics.%s.%s must be a list of mappings, got %r" % (where, key, value))
    return value


def _num(section, key, where):
    value = section.get(key)
    if value is None:
        return None
    if not _is_number(value):
        raise PlanError("diagnostics.%s.%s must be a number or null, got %r" % (where, key, value))
    return float(value)


# ---------------------------------------------------------------- wording

def _pct(value):
    return "%.1f%%" % (value * 100)


def _limit_pct(value):
    return "%g%%" % round(value * 100, 2)


def _secs(value):
    return "%g ms" % round(value * 1000, 1) if value < 1 else "%g s" % round(value, 3)


def _count(n, word):
    return "%d %s%s" % (n, word, "" if n == 1 else "s")


# ---------------------------------------------------------------- findings

class Facts(object):
    """What the rules ask of the diagnostics, each with the words for the reason."""

    def __init__(self, diagnostics, verdict, settings):
        if not isinstance(diagnostics, dict):
            raise PlanError("diagnostics must be the mapping returned by sqlsynth.runbooks.incident_diagnostics_info, "
                            "got %s" % type(diagnostics).__name__)
        if verdict is not None and not isinstance(verdict, dict):
            raise PlanError("verdict must be the verify role's verdict (a mapping), got %s" % type(verdict).__name__)
        self.settings = settings
        self.metrics = _section(diagnostics, "metrics")
        self.health = _section(diagnostics, "health")
        self.synthetic = _section(diagnostics, "synthetic")
        self.app_log = _section(diagnostics, "logs", "app")
        self.audit = _section(diagnostics, "logs", "audit")
        self.postgres = _section(diagnostics, "postgres")
        self.redis = _section(diagnostics, "redis")
        self.host = _section(diagnostics, "host")
        problems = diagnostics.get("problems") or []
        if not isinstance(problems, list):
            raise PlanError("diagnostics.problems must be a list of strings, got %r" % (problems,))
        self.problems = [str(p) for p in problems]
        broken = (verdict or {}).get("broken") or []
        if not isinstance(broken, list):
            raise PlanError("verdict.broken must be a list of component names, got %r" % (broken,))
        self.broken = broken

    # -- postgres
    def postgres_unreachable(self):
        if self.postgres.get("reachable") is False:
            return "postgres unreachable: %s" % (self.postgres.get("error") or "no connection")
        return None

    def idle_sessions(self):
        limit = self.settings["idle_in_transaction_seconds"]
        rows = _list(self.postgres, "idle_in_transaction", "postgres")
        old = [r for r in rows if _is_number(r.get("seconds")) and r["seconds"] >= limit and _is_number(r.get("pid"))]
        return old, limit

    def connections_near_max(self):
        total = _num(_section(self.postgres, "connections"), "total", "postgres.connections")
        most = _num(self.postgres, "max_connections", "postgres")
        ratio = self.settings["connections_near_max_ratio"]
        if total is None or not most or total < ratio * most:
            return None
        return "%d of max_connections %d in use (>= %s)" % (total, most, _limit_pct(ratio))

    def pool_timeouts(self):
        lines = self.app_log.get("recent_errors") or []
        if not isinstance(lines, list):
            raise PlanError("diagnostics.logs.app.recent_errors must be a list of lines, got %r" % (lines,))
        hits = [str(line) for line in list(lines) + self.problems if POOL_TIMEOUT.search(str(line))]
        if not hits:
            return None
        return "%s in the errors, e.g. %r" % (_count(len(hits), "pool timeout"), hits[-1][:160])

    def blocked_sessions(self):
        return _list(self.postgres, "blocked", "postgres")

    # -- cache
    def uses_redis(self):
        return self.settings["cache_backend"] == "redis"

    def cache_broken(self):
        if self.redis.get("reachable") is False:
            return "redis unreachable: %s" % (self.redis.get("error") or "no connection")
        components = _section(self.health, "components")
        if components.get("cache") is False:
            return "/health reports the cache down"
        if "cache" in self.broken:
            return "verification found the cache broken"
        return None

    # -- app
    def error_ratio(self):
        """(ratio of failed queries not counting refused injection attempts, words) or (None, None)."""
        requests = _num(self.metrics, "requests", "metrics")
        errors = _num(self.metrics, "errors", "metrics")
        by_type = _section(self.metrics, "errors_by_type")
        if not requests:
            return None, None
        if errors is None:
            ratio = _num(self.metrics, "error_ratio", "metrics")
            return ratio, None if ratio is None else "error ratio %s" % _pct(ratio)
        injections = by_type.get(INJECTION_ERROR) or 0
        if not _is_number(injections):
            raise PlanError("diagnostics.metrics.errors_by_type.%s must be a number, got %r" % (INJECTION_ERROR, injections))
        failed = max(0.0, errors - injections)
        words = "error ratio %s (%g errors in %g requests" % (_pct(failed / requests), failed, requests)
        window = _num(self.metrics, "window_seconds", "metrics")
        if window:
            words += " over %g s" % window
        if injections:
            words += "; %g refused injection attempts not counted" % injections
        return failed / requests, words + ")"

    def errors_high(self):
        ratio, words = self.error_ratio()
        limit = self.settings["error_ratio_max"]
        if ratio is not None and ratio > limit:
            return "%s > %s" % (words, _limit_pct(limit))
        return None

    def app_failing(self):
        """Why the app looks broken from outside (/health, the synthetic query, the verdict), or None."""
        health, synthetic = self.health, self.synthetic
        if health:
            if health.get("available") is False:
                return "/health unreachable: %s" % (health.get("error") or "no answer")
            status = health.get("http_status")
            if (status is not None and status != 200) or health.get("status") not in (None, "healthy"):
                return "/health answers HTTP %s %s" % (status, health.get("status") or "")
        if synthetic.get("available") is not False and synthetic.get("ok") is False:
            return "synthetic query failed: %s" % (synthetic.get("error") or "HTTP %s" % synthetic.get("http_status"))
        hit = [c for c in ("app", "api") if c in self.broken]
        if hit:
            return "verification found %s broken" % ", ".join(hit)
        return None

    def under_load(self):
        load = _num(self.host, "load_per_cpu", "host")
        limit = self.settings["load_per_cpu_max"]
        if load is not None and load > limit:
            return "load per CPU %.2f > %g" % (load, limit)
        return None

    def p95_high(self):
        p95 = _num(self.metrics, "p95_seconds", "metrics")
        limit = self.settings["p95_max_seconds"]
        if p95 is not None and p95 > limit:
            return "p95 %s > %s" % (_secs(p95), _secs(limit))
        return None

    # -- security
    def offenders(self):
        minimum = self.settings["offender_min_attempts"]
        rows = _list(self.audit, "offenders", "logs.audit")
        return [r for r in rows if _is_number(r.get("injection_attempts")) and r["injection_attempts"] >= minimum]

    def protected(self, client):
        """Why this client must not be blocked, or None."""
        try:
            address = ipaddress.ip_address(str(client).strip())
        except ValueError:
            return "%r is not an IP address" % (client,)
        for network, label in self.settings["never_block_networks"]:
            if address.version == network.version and address in network:
                return "%s is never blocked (%s)" % (address, label)
        return None


# ---------------------------------------------------------------- plans

def _item(action, reason, params=None):
    destructive, undoable = ACTIONS[action]
    return {"action": action, "reason": reason, "destructive": destructive, "undoable": undoable,
            "params": params or {}, "allowed": True, "blocked_by": None}


def _start_and_terminate(facts, plan):
    down = facts.postgres_unreachable()
    if down:
        plan.append(_item("start_database", down))
    old, limit = facts.idle_sessions()
    if old:
        longest = max(r["seconds"] for r in old)
        plan.append(_item("terminate_idle_sessions",
                          "%s idle in transaction > %g s (longest %g s)" % (_count(len(old), "session"), limit, longest),
                          {"pids": sorted(int(r["pid"]) for r in old), "older_than_seconds": limit}))


def _scale_out(facts, plan, why):
    plan.append(_item("scale_out", why, {"replicas": facts.settings["replicas"]}))


def plan_high_error_rate(facts):
    plan = []
    _start_and_terminate(facts, plan)
    broken_cache = facts.cache_broken() if facts.uses_redis() else None
    if broken_cache:
        plan.append(_item("cache_to_memory", "%s while the app uses redis" % broken_cache))
    if facts.settings["cache_corrupted"] and facts.uses_redis() and facts.redis.get("reachable") is not False:
        plan.append(_item("flush_cache", "the cache is judged corrupted (settings.cache_corrupted)"))
    failing = [w for w in (facts.errors_high(), facts.app_failing()) if w]
    if not plan and failing:
        plan.append(_item("restart_app", "; ".join(failing)))
    load = facts.under_load()
    if load and (plan or failing):
        _scale_out(facts, plan, load)
    return plan


def plan_db_connection(facts):
    plan = []
    _start_and_terminate(facts, plan)
    pressure = [w for w in (facts.connections_near_max(), facts.pool_timeouts()) if w]
    if pressure and not facts.postgres_unreachable():
        settings = facts.settings
        plan.append(_item("raise_pool_size", "%s: pool size %d, overflow %d" % (
            "; ".join(pressure), settings["pool_size"], settings["max_overflow"]),
            {"pool_size": settings["pool_size"], "max_overflow": settings["max_overflow"]}))
    return plan


def plan_security(facts):
    plan = []
    settings = facts.settings
    offenders = facts.offenders()
    total = _num(facts.audit, "injection_attempts", "logs.audit") or 0
    if not offenders and total < settings["offender_min_attempts"]:
        return plan
    window = facts.audit.get("window_minutes")
    within = " in %s min" % window if window else ""
    blockable, kept = [], []
    for row in offenders:
        words = "client %s: %s%s" % (row.get("client"), _count(int(row["injection_attempts"]), "injection attempt"), within)
        why_not = facts.protected(row.get("client"))
        (kept if why_not else blockable).append((row, words, why_not))
    if blockable:
        plan.append(_item("block_clients", "; ".join(w for dummy, w, dummy2 in blockable) + " (>= %d)"
                          % settings["offender_min_attempts"],
                          {"clients": [str(ipaddress.ip_address(str(r["client"]).strip())) for r, dummy, dummy2 in blockable]}))
    if kept:
        item = _item("report", "not blocked: " + "; ".join("%s - %s" % (w, n) for dummy, w, n in kept),
                     {"clients": [str(r.get("client")) for r, dummy, dummy2 in kept]})
        plan.append(item)
    keyed = [r for r in offenders if not r.get("auth_failures")]
    if keyed:
        plan.append(_item("rotate_api_key", "injection attempts with a valid API key (no auth failures) from %s"
                          % ", ".join(str(r.get("client")) for r in keyed), {"bytes": 32}))
    reason = ("%g injection attempts%s" % (total, within)) if total else "%s" % _count(len(offenders), "offender")
    plan.append(_item("lower_rate_limit", "%s: rate limit %d per minute" % (reason, settings["rate_limit_per_minute"]),
                      {"per_minute": settings["rate_limit_per_minute"]}))
    plan.append(_item("harden", "%s: %s" % (reason, ", ".join("%s=%s" % kv for kv in sorted(settings["harden"].items()))),
                      {"settings": dict(settings["harden"])}))
    return plan


def plan_performance(facts):
    slow = facts.p95_high()
    if not slow:
        return []
    blocked = facts.blocked_sessions()
    if blocked:
        blockers = sorted(set(p for r in blocked for p in (r.get("blocking_pids") or []) if _is_number(p)))
        return [_item("report", "%s; lock contention: %s blocked by pids %s - find and end the blocking transaction"
                      % (slow, _count(len(blocked), "session"), ", ".join(str(int(p)) for p in blockers) or "unknown"),
                      {"blocked_pids": sorted(int(r["pid"]) for r in blocked if _is_number(r.get("pid"))),
                       "blocking_pids": [int(p) for p in blockers]})]
    if facts.uses_redis() and facts.redis.get("reachable") is False:
        return [_item("cache_to_memory", "%s; %s while the app uses redis" % (slow, facts.cache_broken()))]
    load = facts.under_load()
    if load:
        plan = []
        _scale_out(facts, plan, "%s; %s" % (slow, load))
        return plan
    return [_item("restart_app", "%s with no lock contention, cache or load cause found" % slow)]


PLANS = {"high_error_rate": plan_high_error_rate, "db_connection": plan_db_connection,
         "security": plan_security, "performance": plan_performance}


def incident_plan(diagnostics, runbook, verdict=None, settings=None, gates=None):
    """The ordered plan for ``runbook`` from ``diagnostics`` (see the module docstring)."""
    if runbook not in PLANS:
        raise PlanError("unknown runbook %r: use one of %s" % (runbook, ", ".join(RUNBOOKS)))
    merged = check_settings(settings)
    allowed = check_gates(gates)
    plan = PLANS[runbook](Facts(diagnostics, verdict, merged))
    for item in plan:
        if item["action"] == "report":
            item["allowed"], item["blocked_by"] = False, "no automatic remedy: for a person to act on"
        elif not allowed[item["action"]]:
            item["allowed"], item["blocked_by"] = False, "gate incident_gates.%s is false" % item["action"]
    return plan
