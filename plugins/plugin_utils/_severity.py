# Copyright (c) 2026 sqlsynth.runbooks contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Derive an incident's severity (P0-P3) from the signals, by rules, and look up its policy.

Rules are data (the triage role carries the defaults, an inventory may replace them):

    - severity: P1                  # a key of the severity policy
      name: security incident       # optional, prefixed to the reason
      when:                         # every condition must hold (AND); several rules = OR
        broken_any: [app, api]      # a component in verdict.broken
        verdict_in: [degraded]      # verdict.verdict is one of these
        metric: error_ratio         # a number from the metrics/security input ...
        above: 0.10                 # ... strictly above this (a missing/null metric never matches)
        flag: security_incident     # a boolean from the metrics/security input is true
        runbook_in: [incident_security]

Every matching rule is kept; the most severe one (P0 before P1 ...) gives the severity and
its reason. When no rule matches the severity is ``none``: nothing to respond to.
"""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import re

CONDITIONS = frozenset(("broken_any", "verdict_in", "metric", "above", "flag", "runbook_in"))
POLICY_REQUIRED = ("response_time", "escalation", "channels")
SEVERITY_NAME = re.compile(r"^P[0-9]+$")
LABELS = {"error_ratio": "error ratio", "p95_seconds": "p95", "injection_attempts_per_minute": "injection attempts/min"}


class SeverityError(ValueError):
    """Bad policy, rules or input; the message says which and where."""


def _number(value, where):
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        try:
            return float(value)
        except (TypeError, ValueError):
            raise SeverityError("%s must be a number, got %r" % (where, value))
    return float(value)


def _str_list(value, where):
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise SeverityError("%s must be a list of strings, got %r" % (where, value))
    return value


def _rank(severity):
    return int(severity[1:])


def check_policy(policy):
    """Validate the severity policy (sqlsynth_severity_policy); return it."""
    if not isinstance(policy, dict) or not policy:
        raise SeverityError("the severity policy must be a non-empty mapping of P0..P3 to levels, got %r"
                            % (type(policy).__name__ if not isinstance(policy, dict) else policy))
    for name, level in policy.items():
        if not isinstance(name, str) or not SEVERITY_NAME.match(name):
            raise SeverityError("unknown severity %r in the policy: levels are named P0, P1, P2 ..." % (name,))
        if not isinstance(level, dict):
            raise SeverityError("policy level %s must be a mapping, got %r" % (name, level))
        missing = [key for key in POLICY_REQUIRED if key not in level]
        if missing:
            raise SeverityError("policy level %s lacks %s" % (name, ", ".join(missing)))
        _str_list(level["channels"], "policy level %s: channels" % name)
        _str_list(level.get("escalate_to", []), "policy level %s: escalate_to" % name)
        minutes = level.get("response_time_minutes")
        if isinstance(minutes, bool) or (minutes is not None and not isinstance(minutes, (int, str))):
            raise SeverityError("policy level %s: response_time_minutes must be minutes or a text such as "
                                "'next business day', got %r" % (name, minutes))
    return policy


def _known(policy, severity, where):
    if severity not in policy:
        raise SeverityError("unknown severity %r in %s; the policy defines %s"
                            % (severity, where, ", ".join(sorted(policy, key=_rank))))
    return severity


def check_rules(rules, policy):
    """Validate the rules against the policy; return them."""
    if not isinstance(rules, list):
        raise SeverityError("severity rules must be a list, got %s" % type(rules).__name__)
    for index, rule in enumerate(rules, 1):
        where = "severity rule %d" % index
        if not isinstance(rule, dict) or "severity" not in rule or not isinstance(rule.get("when"), dict):
            raise SeverityError("%s must be a mapping with severity and when, got %r" % (where, rule))
        _known(policy, rule["severity"], where)
        when = rule["when"]
        unknown = sorted(set(when) - CONDITIONS)
        if unknown or not when:
            raise SeverityError("%s: unknown condition %s (known: %s)" % (
                where, ", ".join(unknown) or "(none given)", ", ".join(sorted(CONDITIONS))))
        if ("metric" in when) != ("above" in when):
            raise SeverityError("%s: metric and above go together" % where)
        if "above" in when:
            _number(when["above"], "%s: above" % where)
        for key in ("broken_any", "verdict_in", "runbook_in"):
            if key in when:
                _str_list(when[key], "%s: %s" % (where, key))
    return rules


def _format(metric, value):
    if metric.endswith("_ratio"):
        return "%g%%" % round(value * 100, 2)
    if metric.endswith("_seconds"):
        return "%g ms" % round(value * 1000, 1) if value < 1 else "%g s" % round(value, 3)
    return "%g" % value


def _match(when, facts):
    """The phrases explaining why ``when`` holds for ``facts``, or None when it does not."""
    phrases = []
    verdict = facts["verdict"]
    if "broken_any" in when:
        hit = [c for c in verdict.get("broken", []) if c in when["broken_any"]]
        if not hit:
            return None
        phrases.append("%s broken" % ", ".join(hit))
    if "verdict_in" in when:
        if verdict.get("verdict") not in when["verdict_in"]:
            return None
        phrases.append("verdict %s" % verdict["verdict"])
    if "metric" in when:
        metric, limit = when["metric"], float(when["above"])
        value = facts["values"].get(metric)
        if value is None or value <= limit:
            return None
        phrases.append("%s %s above %s" % (LABELS.get(metric, metric.replace("_", " ")),
                                           _format(metric, value), _format(metric, limit)))
    if "flag" in when:
        if facts["values"].get(when["flag"]) is not True:
            return None
        phrases.append(LABELS.get(when["flag"], when["flag"].replace("_", " ")))
    if "runbook_in" in when:
        if facts["runbook"] not in when["runbook_in"]:
            return None
    return phrases


def _facts(data):
    if not isinstance(data, dict):
        raise SeverityError("triage input must be a mapping with verdict, metrics, security, runbook; got %s"
                            % type(data).__name__)
    verdict = data.get("verdict") or {}
    if not isinstance(verdict, dict) or not isinstance(verdict.get("broken", []), list):
        raise SeverityError("verdict must be the verify role's verdict (a mapping with verdict and broken), got %r"
                            % (verdict,))
    values = {}
    for source in ("metrics", "security"):
        given = data.get(source) or {}
        if not isinstance(given, dict):
            raise SeverityError("%s must be a mapping of names to numbers, got %r" % (source, given))
        for key, value in given.items():
            # Module results carry more than numbers (changed, failures, window...): keep what rules can use.
            if isinstance(value, bool):
                values[key] = value
            elif isinstance(value, (int, float)) or value is None:
                values[key] = _number(value, "%s.%s" % (source, key))
            elif isinstance(value, str) and key in LABELS:
                values[key] = _number(value, "%s.%s" % (source, key))
    return {"verdict": verdict, "values": values, "runbook": data.get("runbook") or ""}


def _response(level):
    minutes = level.get("response_time_minutes")
    if isinstance(minutes, int):
        return "respond within %d min" % minutes
    return "respond %s" % str(level["response_time"]).lower()


def triage(data, policy, rules, contacts=None):
    """Return the triage for ``data`` (see module docstring) under ``policy`` and ``rules``."""
    check_policy(policy)
    check_rules(rules, policy)
    contacts = contacts or {}
    if not isinstance(contacts, dict):
        raise SeverityError("contacts must be a mapping of names to handles or addresses, got %r" % (contacts,))
    facts = _facts(data)
    matched = []
    for rule in rules:
        phrases = _match(rule["when"], facts)
        if phrases is not None:
            text = " and ".join(phrases) or "rule matched"
            matched.append({"severity": rule["severity"],
                            "reason": "%s: %s" % (rule["name"], text) if rule.get("name") else text})
    forced = data.get("severity") or ""
    if forced:
        _known(policy, forced, "the requested severity")
        matched.insert(0, {"severity": forced, "reason": "set by the operator"})
    result = {"runbook": facts["runbook"], "verdict": facts["verdict"].get("verdict"),
              "matched": [m["severity"] + " " + m["reason"] for m in matched]}
    if not matched:
        result.update(severity="none", name="none", reason="no rule matched: nothing to respond to",
                      response_time=None, response_time_minutes=None, escalation=None, escalate_to=[],
                      channels=[], contacts={}, line="none - no rule matched: nothing to respond to")
        return result
    top = matched[0] if forced else min(matched, key=lambda m: _rank(m["severity"]))
    level = policy[top["severity"]]
    unknown = [key for key in level.get("escalate_to", []) if key not in contacts]
    if unknown:
        raise SeverityError("policy level %s escalates to %s, not in the contacts (sqlsynth_contacts has %s)"
                            % (top["severity"], ", ".join(unknown), ", ".join(sorted(contacts)) or "nothing"))
    result.update(
        severity=top["severity"], name=level.get("name", top["severity"]), reason=top["reason"],
        response_time=level["response_time"], response_time_minutes=level.get("response_time_minutes"),
        escalation=level["escalation"], escalate_to=list(level.get("escalate_to", [])),
        channels=list(level["channels"]),
        contacts=dict((key, contacts[key]) for key in level.get("escalate_to", [])))
    result["line"] = " - ".join((top["severity"], top["reason"], _response(level),
                                 "escalation: %s" % level["escalation"],
                                 "channels: %s" % (", ".join(level["channels"]) or "none")))
    return result
