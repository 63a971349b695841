"""Alert rules (roles/alert_rules/files/sqlsynth-alerts.yml): promtool validation, the promtool
unit tests in tests/prometheus/, the labels the runbooks and Alertmanager rely on, and the role
that deploys the file."""
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "roles" / "alert_rules" / "files" / "sqlsynth-alerts.yml"
PROMTESTS = sorted((ROOT / "tests" / "prometheus").glob("*.yml"))
PROMTOOL = os.environ.get("PROMTOOL", "/usr/bin/promtool")
EXPECTED_ALERTS = {"HighErrorRate", "DatabaseConnectionFailure", "SqlSynthesizerDown",
                   "HighResponseTime", "SecurityIncident"}
# service.md "Metrics the app emits"; the documented-but-absent names must never appear.
REAL_METRICS = {"queries_total", "query_errors_total", "query_duration_seconds_bucket",
                "database_connections_total", "up"}
FICTIONAL_METRICS = ("api_requests_total", "http_requests_total",
                     "database_connections_failed_total", "security_events_total", "sql_synthesizer_")


def promtool(*args, cwd=ROOT):
    assert os.access(PROMTOOL, os.X_OK), f"{PROMTOOL} missing: apt-get install prometheus"
    return subprocess.run([PROMTOOL, *args], cwd=cwd, capture_output=True, text=True, check=False)


def alerts():
    doc = yaml.safe_load(RULES.read_text())
    return [rule for group in doc["groups"] for rule in group["rules"] if "alert" in rule]


def test_rule_file_passes_promtool_check():
    res = promtool("check", "rules", str(RULES))
    assert res.returncode == 0, res.stdout + res.stderr
    assert f"SUCCESS: {len(EXPECTED_ALERTS)} rules found" in res.stdout


@pytest.mark.parametrize("testfile", PROMTESTS, ids=[p.name for p in PROMTESTS])
def test_promtool_unit_tests_pass(testfile):
    res = promtool("test", "rules", str(testfile.relative_to(ROOT)))
    assert res.returncode == 0, res.stdout + res.stderr


def test_every_alert_is_tested_firing_and_not_firing():
    fired, quiet = set(), set()
    for testfile in PROMTESTS:
        for case in yaml.safe_load(testfile.read_text())["tests"]:
            for check in case.get("alert_rule_test", []):
                (fired if check.get("exp_alerts") else quiet).add(check["alertname"])
    assert {a["alert"] for a in alerts()} == EXPECTED_ALERTS
    assert EXPECTED_ALERTS <= fired, f"never shown firing: {EXPECTED_ALERTS - fired}"
    assert EXPECTED_ALERTS <= quiet, f"never shown quiet: {EXPECTED_ALERTS - quiet}"


@pytest.mark.parametrize("alert", alerts(), ids=lambda a: a["alert"])
def test_alert_labels_and_annotations(alert):
    labels, annotations = alert["labels"], alert["annotations"]
    assert labels["severity"] in {"critical", "warning"}
    assert labels["priority"] in {"P0", "P1", "P2", "P3"}
    assert labels["service"] == "sql-synthesizer"
    assert re.fullmatch(r"[a-z][a-z0-9_]*", labels["runbook"])
    assert annotations["runbook_url"].endswith(f"/docs/runbooks/{labels['runbook']}.md")
    assert annotations["summary"] and annotations["description"]


@pytest.mark.parametrize("alert", alerts(), ids=lambda a: a["alert"])
def test_alerts_use_only_metrics_the_app_emits(alert):
    expr = alert["expr"]
    assert not [name for name in FICTIONAL_METRICS if name in expr]
    used = set(re.findall(r"\b([a-z_]+)(?=\{|\[)", expr))
    assert used and used <= REAL_METRICS, used - REAL_METRICS


def test_promtool_tests_catch_a_wrong_threshold(tmp_path):
    """The unit tests are not vacuous: raising HighErrorRate's threshold to 50% breaks them."""
    mutated = RULES.read_text().replace(") > 0.10", ") > 0.50")
    assert mutated != RULES.read_text()
    (tmp_path / "rules.yml").write_text(mutated)
    test = yaml.safe_load((ROOT / "tests" / "prometheus" / "high_error_rate.yml").read_text())
    test["rule_files"] = ["rules.yml"]
    (tmp_path / "test.yml").write_text(yaml.safe_dump(test))
    res = promtool("test", "rules", "test.yml", cwd=tmp_path)
    assert res.returncode != 0
    assert "HighErrorRate" in res.stdout + res.stderr


PLAY = """
- name: Deploy alert rules
  hosts: localhost
  gather_facts: false
  connection: local
  tasks:
    - name: Run the role
      ansible.builtin.include_role:
        name: sqlsynth.runbooks.alert_rules
    - name: Report
      ansible.builtin.debug:
        msg: "ALERT_RULES_CHANGED={{ alert_rules_changed }}"
"""


def run_role(tmp_path, *extra):
    (tmp_path / "play.yml").write_text(PLAY)
    env = dict(os.environ, ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"),
               ANSIBLE_COLLECTIONS_PATH=str(ROOT / ".build" / "collections"),
               ANSIBLE_NOCOLOR="1", ANSIBLE_LOCALHOST_WARNING="0")
    cmd = [str(Path(sys.executable).parent / "ansible-playbook"), "-i", "localhost,",
           "-e", f"ansible_python_interpreter={sys.executable}", str(tmp_path / "play.yml"), *extra]
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, check=False)


def test_role_deploys_validated_rules_idempotently(tmp_path):
    dest = tmp_path / "rules.d"
    first = run_role(tmp_path, "-e", f"alert_rules_dir={dest}")
    assert first.returncode == 0, first.stdout + first.stderr
    assert (dest / "sqlsynth-alerts.yml").read_text() == RULES.read_text()
    assert "ALERT_RULES_CHANGED=True" in first.stdout
    second = run_role(tmp_path, "-e", f"alert_rules_dir={dest}")
    assert second.returncode == 0, second.stdout + second.stderr
    assert "ALERT_RULES_CHANGED=False" in second.stdout
    assert re.search(r"changed=0\b", second.stdout)


def test_role_refuses_a_missing_rule_dir_variable(tmp_path):
    res = run_role(tmp_path)
    assert res.returncode != 0
    assert "alert_rules_dir" in res.stdout + res.stderr


def test_role_check_mode_writes_nothing(tmp_path):
    dest = tmp_path / "rules.d"
    res = run_role(tmp_path, "--check", "-e", f"alert_rules_dir={dest}")
    assert res.returncode == 0, res.stdout + res.stderr
    assert not (dest / "sqlsynth-alerts.yml").exists()


def test_role_fails_clearly_without_promtool(tmp_path):
    res = run_role(tmp_path, "-e", f"alert_rules_dir={tmp_path}/d",
                   "-e", f"alert_rules_promtool={tmp_path}/no-promtool")
    assert res.returncode != 0
    assert "promtool not found" in res.stdout
    assert not (tmp_path / "d").exists()


# --- inventories: the priority label of every alert must lead somewhere -----------------

INVENTORIES = ("lab", "staging", "production")


def group_vars(env):
    merged = {}
    for path in sorted((ROOT / "inventories" / env / "group_vars" / "all").glob("*.yml")):
        merged.update(yaml.safe_load(path.read_text()) or {})
    return merged


@pytest.mark.parametrize("env", INVENTORIES)
def test_policy_routes_every_alert_priority_to_existing_channels(env):
    gv = group_vars(env)
    policy, channels, contacts = (gv["sqlsynth_severity_policy"], gv["sqlsynth_notify_channels"],
                                  gv["sqlsynth_contacts"])
    assert list(policy) == ["P0", "P1", "P2", "P3"]
    assert {a["labels"]["priority"] for a in alerts()} <= set(policy)
    for level in policy.values():
        assert level["channels"] and set(level["channels"]) <= set(channels)
        assert set(level["escalate_to"]) <= set(contacts)
        assert level["examples"] and level["escalation"] and level["communication"]
    for channel in channels.values():
        assert channel["type"] in {"slack", "webhook", "email"}
        assert channel.get("url") or channel.get("smtp_host")


def test_lab_channels_stay_on_this_machine():
    for name, channel in group_vars("lab")["sqlsynth_notify_channels"].items():
        if channel["type"] == "email":
            assert (channel["smtp_host"], channel["smtp_port"]) == ("127.0.0.1", 8025)
        else:
            assert channel["url"] == f"http://127.0.0.1:9099/{name}"


def test_lab_exercises_the_production_policy():
    """The lab mirrors production's levels and routing; only the endpoints differ."""
    lab, production = group_vars("lab"), group_vars("production")
    assert lab["sqlsynth_severity_policy"] == production["sqlsynth_severity_policy"]
    assert set(lab["sqlsynth_notify_channels"]) == set(production["sqlsynth_notify_channels"])


def test_seed_response_times_in_production():
    policy = group_vars("production")["sqlsynth_severity_policy"]
    assert [policy[p]["response_time_minutes"] for p in ("P0", "P1", "P2")] == [15, 60, 240]
    assert policy["P3"]["response_time"] == "Next business day"
    assert "status_page" in policy["P0"]["channels"]


def test_staging_never_touches_the_public_status_page():
    gv = group_vars("staging")
    assert "status_page" not in gv["sqlsynth_notify_channels"]
    assert all("status_page" not in level["channels"] for level in gv["sqlsynth_severity_policy"].values())


@pytest.mark.parametrize("env", ("staging", "production"))
def test_secrets_come_from_the_vault(env):
    gv = group_vars(env)
    assert gv["sqlsynth_environment"] == env
    for var in ("sqlsynth_db_password", "sqlsynth_redis_password", "sqlsynth_api_key"):
        assert re.fullmatch(r"\{\{ vault_\w+ \}\}", gv[var]), var
    for channel in gv["sqlsynth_notify_channels"].values():
        secret = channel.get("smtp_password") or (channel["url"] if channel["type"] == "slack"
                                                  else channel.get("headers", {}).get("Authorization"))
        assert secret and "{{ vault_" in secret, channel
