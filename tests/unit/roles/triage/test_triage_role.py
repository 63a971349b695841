"""The triage role run through ansible-playbook, as a runbook would: the line, the fact, the stats, errors."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[4]
CANARY = "CANARY-triage-5f1c9e"
PLAY = """
- name: Triage
  hosts: localhost
  connection: local
  gather_facts: false
  roles:
    - role: sqlsynth.runbooks.triage
  post_tasks:
    - name: Expose the fact
      ansible.builtin.debug:
        var: triage_result
"""


def run_role(tmp_path, inventory, extra, *args):
    (tmp_path / "play.yml").write_text(PLAY)
    (tmp_path / "extra.json").write_text(json.dumps(extra))
    env = dict(os.environ, ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"),
               ANSIBLE_COLLECTIONS_PATH=str(ROOT / ".build" / "collections"),
               ANSIBLE_STDOUT_CALLBACK="ansible.posix.json", ANSIBLE_SHOW_CUSTOM_STATS="1",
               ANSIBLE_NOCOLOR="1", ANSIBLE_LOCALHOST_WARNING="0")
    cmd = [str(Path(sys.executable).parent / "ansible-playbook"), "-i", str(ROOT / "inventories" / inventory),
           "-e", f"ansible_python_interpreter={sys.executable}", "-e", "@" + str(tmp_path / "extra.json"),
           str(tmp_path / "play.yml"), *args]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, check=False, timeout=120)
    out = json.loads(proc.stdout) if proc.stdout.lstrip().startswith("{") else {}
    results = {task["task"]["name"].split(" : ")[-1]: task["hosts"]["localhost"] for play in out.get("plays", []) for task in play["tasks"]}
    return proc, results, out.get("global_custom_stats", {})


ERROR_BURST = {"triage_verdict": {"verdict": "degraded", "broken": ["metrics"], "signals": []},
               "triage_metrics": {"error_ratio": 0.23, "p95_seconds": 0.05}, "triage_runbook": "incident_high_error_rate",
               # secrets a runbook has in scope: none of them may surface in the triage
               "sqlsynth_api_key": CANARY, "sqlsynth_db_password": CANARY,
               "sqlsynth_notify_channels": {"incident": {"type": "slack", "url": "http://127.0.0.1:1/" + CANARY}}}


@pytest.mark.parametrize("check", [False, True], ids=["run", "check_mode"])
def test_error_burst_is_p1_with_line_fact_and_stats(tmp_path, check):
    proc, results, stats = run_role(tmp_path, "lab", ERROR_BURST, *(["--check"] if check else []))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr
    line = ("P1 - error ratio 23% above 10% - respond within 60 min - escalation: On-call engineer"
            " - channels: incident, oncall_email")
    assert results["Triage | Show the triage"]["msg"] == line
    fact = results["Expose the fact"]["triage_result"]
    assert stats["sqlsynth_triage"] == fact
    assert fact["severity"] == "P1" and fact["runbook"] == "incident_high_error_rate"
    assert fact["contacts"] == {"primary_oncall": "@team-lead"}
    assert fact["matched"] == ["P1 error ratio 23% above 10%", "P2 degraded: metrics broken",
                               "P2 degraded: error ratio 23% above 1%", "P3 other finding: verdict degraded"]
    assert CANARY not in proc.stdout + proc.stderr
    assert not any(r.get("changed") for r in results.values())


@pytest.mark.parametrize("inventory,expected", [
    ("production", "P0 - service down: database, api broken - respond within 15 min - escalation: Immediate to on-call"
                   " engineer - channels: incident, status_page, oncall_email"),
    ("staging", "P0 - service down: database, api broken - respond within 60 min - escalation: Release owner during"
                " business hours; blocks promotion to production - channels: staging, team_email"),
])
def test_each_inventory_policy_drives_the_response(tmp_path, inventory, expected):
    extra = {"triage_verdict": {"verdict": "unhealthy", "broken": ["database", "api"], "signals": []}}
    proc, results = run_role(tmp_path, inventory, extra)[:2]
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr
    assert results["Triage | Show the triage"]["msg"] == expected


def test_healthy_run_finds_nothing_to_respond_to(tmp_path):
    extra = {"triage_verdict": {"verdict": "healthy", "broken": [], "signals": []},
             "triage_metrics": {"error_ratio": 0.0, "p95_seconds": 0.03}}
    proc, results, stats = run_role(tmp_path, "lab", extra)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr
    assert results["Triage | Show the triage"]["msg"] == "none - no rule matched: nothing to respond to"
    assert stats["sqlsynth_triage"]["channels"] == []


def test_inventory_rules_override_and_unknown_severity_fails_clearly(tmp_path):
    extra = {"sqlsynth_severity_rules": [{"severity": "P5", "when": {"verdict_in": ["degraded"]}}],
             "triage_verdict": {"verdict": "degraded", "broken": ["cache"]}}
    proc, results = run_role(tmp_path, "lab", extra)[:2]
    assert proc.returncode != 0
    msg = results["Triage | Derive the severity from the signals by the policy"]["msg"]
    assert "severity: unknown severity 'P5' in severity rule 1; the policy defines P0, P1, P2, P3" in msg
    assert "Traceback" not in proc.stdout + proc.stderr
