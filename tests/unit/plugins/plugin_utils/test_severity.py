"""Severity triage: the default rules at their boundaries, every inventory's policy, clear errors."""
import copy
import glob
import os

import pytest
import yaml
from ansible.errors import AnsibleFilterError

from ansible_collections.sqlsynth.runbooks.plugins.filter.severity import FilterModule
from ansible_collections.sqlsynth.runbooks.plugins.plugin_utils._severity import SeverityError, triage

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))))
RULES = yaml.safe_load(open(os.path.join(ROOT, "roles", "triage", "defaults", "main.yml")))["triage_default_rules"]
PROD = yaml.safe_load(open(os.path.join(ROOT, "inventories", "production", "group_vars", "all", "policy.yml")))
POLICY, CONTACTS = PROD["sqlsynth_severity_policy"], PROD["sqlsynth_contacts"]
severity = FilterModule().filters()["severity"]


def verdict(state="healthy", *broken):
    return {"verdict": state, "broken": list(broken), "signals": [], "disagreements": []}


def run(state="healthy", broken=(), policy=None, rules=None, **values):
    security = {k: values.pop(k) for k in list(values) if k in ("injection_attempts_per_minute", "security_incident")}
    data = {"verdict": verdict(state, *broken), "metrics": values, "security": security, "runbook": "incident_x"}
    return triage(data, policy or POLICY, RULES if rules is None else rules, contacts=CONTACTS)


@pytest.mark.parametrize("broken", [("database",), ("app",), ("api",), ("proxy",), ("database", "cache", "api")])
def test_service_down_is_p0_with_immediate_escalation(broken):
    out = run("unhealthy", broken)
    assert out["severity"] == "P0"
    assert out["reason"].startswith("service down: ")
    assert out["response_time"] == "15 minutes" and out["response_time_minutes"] == 15
    assert out["escalation"] == "Immediate to on-call engineer"
    assert out["channels"] == ["incident", "status_page", "oncall_email"]
    assert out["contacts"] == {"primary_oncall": "@team-lead", "secondary_oncall": "@senior-developer"}


@pytest.mark.parametrize("values,expected,reason", [
    ({"error_ratio": 0.23}, "P1", "error ratio 23% above 10%"),
    ({"error_ratio": 0.1001}, "P1", "error ratio 10.01% above 10%"),
    ({"error_ratio": 0.10}, "P2", "degraded: error ratio 10% above 1%"),      # at 10% exactly: not above
    ({"error_ratio": 0.0101}, "P2", "degraded: error ratio 1.01% above 1%"),
    ({"error_ratio": 0.01}, "none", None),                                     # at the SLO: fine
    ({"p95_seconds": 1.2}, "P1", "p95 1.2 s above 1 s"),
    ({"p95_seconds": 1.0}, "P2", "degraded: p95 1 s above 100 ms"),
    ({"p95_seconds": 0.101}, "P2", "degraded: p95 101 ms above 100 ms"),
    ({"p95_seconds": 0.1}, "none", None),
    ({"injection_attempts_per_minute": 1.5}, "P1", "security incident: injection attempts/min 1.5 above 1"),
    ({"injection_attempts_per_minute": 1}, "none", None),
    ({"security_incident": True}, "P1", "security incident: security incident"),
    ({"security_incident": False}, "none", None),
    ({"error_ratio": None, "p95_seconds": None}, "none", None),               # no traffic: no numbers
])
def test_metric_rules_at_their_boundaries(values, expected, reason):
    out = run(**values)
    assert out["severity"] == expected
    if reason:
        assert out["reason"] == reason


@pytest.mark.parametrize("broken", [("cache",), ("tls",), ("metrics",)])
def test_degraded_components_are_p2_business_hours(broken):
    out = run("degraded", broken)
    assert (out["severity"], out["response_time"], out["channels"]) == ("P2", "4 hours", ["team"])
    assert out["reason"] == "degraded: %s broken" % broken[0]
    assert out["contacts"] == {}


def test_most_severe_rule_decides_and_all_matches_are_listed():
    out = run("unhealthy", ("database", "cache"), error_ratio=0.5, p95_seconds=0.2)
    assert out["severity"] == "P0"
    assert out["matched"] == ["P0 service down: database broken", "P1 error ratio 50% above 10%",
                              "P2 degraded: cache broken", "P2 degraded: error ratio 50% above 1%",
                              "P2 degraded: p95 200 ms above 100 ms", "P3 other finding: verdict unhealthy"]


def test_one_line_summary_reads_like_the_runbook():
    out = run(error_ratio=0.23)
    assert out["line"] == ("P1 - error ratio 23% above 10% - respond within 60 min - escalation: On-call engineer"
                           " - channels: incident, oncall_email")
    assert run("unknown")["line"] == ("P3 - other finding: verdict unknown - respond next business day - "
                                      "escalation: Standard triage - channels: issue_tracker")


def test_healthy_with_nothing_found_is_none_with_no_channels():
    out = run("healthy", error_ratio=0.0, p95_seconds=0.02, injection_attempts_per_minute=0)
    assert out["severity"] == "none" and out["channels"] == [] and out["matched"] == []
    assert out["line"] == "none - no rule matched: nothing to respond to"


def test_metrics_info_result_passes_as_is():
    metrics = {"changed": False, "ok": False, "failures": ["error ratio too high"], "window": 4,
               "error_ratio": 0.2, "p95_seconds": 0.05, "samples": {"queries": 10}}
    out = triage({"verdict": {}, "metrics": metrics}, POLICY, RULES, contacts=CONTACTS)
    assert out["severity"] == "P1" and out["verdict"] is None


def test_operator_can_force_a_level_the_policy_defines():
    out = triage({"verdict": verdict(), "severity": "P2"}, POLICY, RULES, contacts=CONTACTS)
    assert (out["severity"], out["reason"]) == ("P2", "set by the operator")


def test_inventory_rules_replace_defaults():
    when = {"runbook_in": ["incident_x"], "metric": "injection_attempts_per_minute", "above": 100}
    rules = [{"severity": "P0", "name": "security breach", "when": when}]
    assert run(rules=rules, injection_attempts_per_minute=101)["severity"] == "P0"
    assert run(rules=rules, injection_attempts_per_minute=99)["severity"] == "none"


SEED = {"P0": ("15 minutes", 15), "P1": ("1 hour", 60), "P2": ("4 hours", 240),
        "P3": ("Next business day", "next business day")}
POLICY_FILES = sorted(glob.glob(os.path.join(ROOT, "inventories", "*", "group_vars", "all", "policy.yml")))


@pytest.mark.parametrize("path", POLICY_FILES, ids=lambda p: p.split(os.sep)[-4])
def test_every_inventory_policy_loads_and_triages_each_level(path):
    data = yaml.safe_load(open(path))
    policy, contacts = data["sqlsynth_severity_policy"], data["sqlsynth_contacts"]
    assert sorted(policy) == ["P0", "P1", "P2", "P3"]
    for level in policy:
        out = triage({"verdict": verdict(), "severity": level}, policy, RULES, contacts=contacts)
        assert out["response_time"] == policy[level]["response_time"]
        assert set(out["channels"]) <= set(data["sqlsynth_notify_channels"]), "channel without a notify entry"
    if "staging" not in path:
        # lab and production follow the seed; staging documents its own (business-hours) times.
        assert {lvl: (policy[lvl]["response_time"], policy[lvl]["response_time_minutes"]) for lvl in policy} == SEED


@pytest.mark.parametrize("mutate,message", [
    (lambda p: p.update(P9=p.pop("P3")), "unknown severity 'P3' in severity rule 9; the policy defines P0, P1, P2, P9"),
    (lambda p: p.update(Sev1=p["P1"]), "unknown severity 'Sev1' in the policy"),
    (lambda p: p["P1"].pop("escalation"), "policy level P1 lacks escalation"),
    (lambda p: p["P1"].update(channels="incident"), "policy level P1: channels must be a list of strings"),
    (lambda p: p["P0"].update(escalate_to=["nobody"]), "escalates to nobody, not in the contacts"),
    (lambda p: p["P0"].update(response_time_minutes=[15]), "response_time_minutes must be minutes"),
])
def test_malformed_policy_gives_a_clear_error(mutate, message):
    policy = copy.deepcopy(POLICY)
    mutate(policy)
    with pytest.raises(AnsibleFilterError, match="^severity: .*" + message.replace("(", r"\(")):
        severity({"verdict": verdict("unhealthy", "database")}, policy, RULES, contacts=CONTACTS)


@pytest.mark.parametrize("data,policy,rules,message", [
    ({"verdict": verdict()}, "P0", RULES, "policy must be a non-empty mapping"),
    ({"verdict": verdict()}, {}, RULES, "policy must be a non-empty mapping"),
    ({"verdict": verdict()}, POLICY, [{"severity": "P5", "when": {"verdict_in": ["x"]}}],
     "unknown severity 'P5' in severity rule 1; the policy defines P0, P1, P2, P3"),
    ({"verdict": verdict()}, POLICY, [{"severity": "P1", "when": {"metric": "error_ratio", "bove": 1}}],
     "severity rule 1: unknown condition bove"),
    ({"verdict": verdict()}, POLICY, [{"severity": "P1", "when": {"metric": "error_ratio"}}],
     "metric and above go together"),
    ({"verdict": verdict()}, POLICY, [{"severity": "P1", "when": {"metric": "error_ratio", "above": "ten"}}],
     "above must be a number"),
    ({"verdict": verdict()}, POLICY, {"P1": {}}, "rules must be a list"),
    ({"verdict": verdict(), "severity": "P7"}, POLICY, RULES, "unknown severity 'P7' in the requested severity"),
    ("unhealthy", POLICY, RULES, "triage input must be a mapping"),
    ({"verdict": "unhealthy"}, POLICY, RULES, "verdict must be the verify role's verdict"),
    ({"metrics": {"error_ratio": "lots"}}, POLICY, RULES, "metrics.error_ratio must be a number, got 'lots'"),
    ({"security": [1]}, POLICY, RULES, "security must be a mapping"),
])
def test_malformed_input_or_rules_give_a_clear_error(data, policy, rules, message):
    with pytest.raises(AnsibleFilterError) as err:
        severity(data, policy, rules, contacts=CONTACTS)
    assert message in str(err.value)
    assert "Traceback" not in str(err.value)


def test_error_type_is_value_error_for_python_callers():
    with pytest.raises(SeverityError):
        triage({}, {}, [])
