"""Incident runbooks and drills against the real lab: real faults, real containment, real notifications.

The webhook channels of the lab inventory point at the lab's receiver (127.0.0.1:9099, GET/DELETE /messages);
the e-mail channel at the same receiver's SMTP sink (127.0.0.1:8025, stored with "path": "smtp"). Recovery
times are not asserted here: they are measured by tools/run_drills.py into docs/drills.md.
"""
import email
import email.header
import json
import os
import re
import subprocess
import urllib.request

import pytest
from sqlsynth_runbook import Collection

from conftest import wait_healthy
from labtools import LAB_ROOT, ROOT, assert_no_traceback, files_containing, injected, recap, run_playbook

RECEIVER = "http://127.0.0.1:9099/messages"
SUPERVISORCTL = ["supervisorctl", "-c", os.path.join(LAB_ROOT, "supervisor", "supervisord.conf")]


@pytest.fixture
def inbox():
    """Empty the lab receiver (webhooks and e-mail); returns a function giving (webhooks, raw e-mails) since."""
    urllib.request.urlopen(urllib.request.Request(RECEIVER, method="DELETE"), timeout=5).read()

    def read():
        with urllib.request.urlopen(RECEIVER, timeout=5) as resp:
            body = json.loads(resp.read())
        stored = body if isinstance(body, list) else body.get("messages", [])
        hooks = [m for m in stored if m.get("path", "").startswith("/") and not m["path"].startswith("/alertmanager")]
        return hooks, [m["body"] for m in stored if m.get("path") == "smtp"]
    return read


def app_pid():
    out = subprocess.run(SUPERVISORCTL + ["pid", "app"], capture_output=True, text=True, check=False).stdout.strip()
    return int(out) if out.isdigit() else None


def timeline_dir(output):
    match = re.search(r"TIMELINE: (\S+)/timeline\.json", output)
    assert match, "no timeline path in the output:\n" + output[-2000:]
    return match.group(1)


def text_of(hook):
    body = hook.get("body")
    return json.dumps(body) if not isinstance(body, str) else body


@pytest.mark.parametrize("runbook", ["high_error_rate", "db_connection", "security", "performance"])
def test_healthy_lab_finds_nothing_changes_nothing_and_sends_nothing(runbook, inbox):
    assert "healthy" in wait_healthy()
    pid = app_pid()
    result = run_playbook("sqlsynth.runbooks.incident_" + runbook, extra={"incident_log_since": "now"})
    assert_no_traceback(result.stdout)
    assert result.returncode == 0, result.stdout[-4000:]
    assert "Plan: nothing to fix" in result.stdout
    assert "Nothing to fix" in result.stdout
    assert recap(result.stdout)["changed"] == 0
    assert app_pid() == pid
    hooks, mails = inbox()
    assert hooks == [] and mails == []


def test_check_mode_under_error_burst_previews_the_restart_and_changes_nothing(inbox):
    with injected("error_burst"):
        pid = app_pid()
        result = run_playbook("sqlsynth.runbooks.incident_high_error_rate", check=True)
        assert_no_traceback(result.stdout)
        assert result.returncode == 0, result.stdout[-4000:]
        assert "Plan: restart_app" in result.stdout
        assert "Check mode: nothing is changed and nothing is sent" in result.stdout
        assert app_pid() == pid
        status = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "http://127.0.0.1:5000/health"],
                                capture_output=True, text=True, check=False).stdout
        assert status == "500"  # the fault is still there
        hooks, mails = inbox()
        assert hooks == [] and mails == []


@pytest.mark.parametrize("extra, message", [
    ({"incident_severity": "P9"}, "Unknown severity 'P9': valid are P0, P1, P2, P3"),
    ({"incident_gates": {"restart_app": "maybe"}}, "Every gate in incident_gates must be true or false"),
    ({"incident_gates": {"reboot_everything": True}}, "Unknown gate(s) reboot_everything: valid are start_database"),
    ("incident_gates=restart_app=false", "incident_gates and incident_settings must be mappings (pass them as JSON with -e)"),
])
def test_bad_inputs_fail_with_a_clear_message(extra, message):
    result = run_playbook("sqlsynth.runbooks.incident_high_error_rate", "-e", extra if isinstance(extra, str) else json.dumps(extra))
    assert_no_traceback(result.stdout)
    assert result.returncode != 0
    assert message in " ".join(result.stdout.split())


def test_unreachable_metrics_empty_audit_log_and_malformed_lines_are_reported_not_fatal(tmp_path):
    audit, access = tmp_path / "audit.log", tmp_path / "access.log"
    audit.write_text("")
    access.write_text('this is not a log line\n{"neither": "is this"}\n')
    files = {"app": os.path.join(LAB_ROOT, "logs", "app.log"), "audit": str(audit), "access": str(access)}
    result = run_playbook("sqlsynth.runbooks.incident_security",
                          "-e", json.dumps({"sqlsynth_log_files": files,
                                            "sqlsynth_metrics_url": "http://127.0.0.1:1/metrics"}))
    assert_no_traceback(result.stdout)
    assert result.returncode == 0, result.stdout[-4000:]
    out = " ".join(result.stdout.split())
    assert "Plan: nothing to fix" in out
    assert re.search(r"metrics[^.]*(unreachable|refused)", out), out[-3000:]


DRILLS = [
    # scenario (its runbook), a step the runbook must take, the severity if the drill fixes it
    ("error_burst", "restart_app", "P0"),             # incident_high_error_rate
    ("pool_exhaustion", "terminate_idle_sessions", None),  # incident_db_connection
    ("db_down", "start_database", "P0"),              # incident_db_connection
    ("latency", "restart_app", None),                 # incident_performance
]


@pytest.mark.parametrize("scenario, action, severity", DRILLS)
def test_drill_recovers_verifies_notifies_and_writes_the_postmortem(scenario, action, severity, inbox):
    result = run_playbook("sqlsynth.runbooks.drill", extra={"drill_scenario": scenario}, timeout=900)
    assert_no_traceback(result.stdout)
    assert result.returncode == 0, result.stdout[-5000:]
    out = " ".join(result.stdout.split())
    match = re.search(r"Drill %s: recovered and verified ([\d.]+) s after the runbook started .*?severity (P\d); actions ([^)]*)\)"
                      % scenario, out)
    assert match, out[-3000:]
    assert action in match.group(3).split(", ")
    if severity:
        assert match.group(2) == severity
    # the service is healthy again
    assert "healthy" in wait_healthy()
    # incident, status update and resolution in the incident channel, each naming the drill and the severity
    hooks, mails = inbox()
    incident = [text_of(h) for h in hooks if h.get("path", "").startswith("/incident")]
    assert len(incident) == 3, hooks
    assert all("DRILL %s" % scenario in text for text in incident)
    assert "INCIDENT: %s" % match.group(2) in incident[0] and "UPDATE" in incident[1] and "RESOLVED" in incident[2].upper()
    status_page = [h for h in hooks if h.get("path", "").startswith("/status_page")]
    assert bool(status_page) == (match.group(2) == "P0")
    subjects = [str(email.header.make_header(email.header.decode_header(email.message_from_string(m)["Subject"])))
                for m in mails]
    assert len(subjects) == 3 and all(sub.startswith("[%s] " % match.group(2)) for sub in subjects), subjects
    # timeline, report and post-mortem of the run
    directory = timeline_dir(result.stdout)
    for name in ("timeline.json", "report.md", "postmortem.md"):
        assert os.path.getsize(os.path.join(directory, name)) > 0
    timeline = json.load(open(os.path.join(directory, "timeline.json"), encoding="utf-8"))
    phases = {entry.get("phase") for entry in timeline.get("entries", timeline) if isinstance(entry, dict)}
    assert {"found", "done", "verified"} <= phases
    # the post-mortem draft starts from the findings and lists the fix the run made
    postmortem = open(os.path.join(directory, "postmortem.md"), encoding="utf-8").read()
    assert "1. Candidate: " in postmortem and "_No candidate in the run's data" not in postmortem
    assert re.search(r"^- \[x\] .*\(because ", postmortem, re.M), postmortem


CANARY_URL_TOKEN = "CANARYurltoken5f1e"
CANARY_HEADER_TOKEN = "CANARYheadertoken9a2b"
CANARY_SMTP_PASSWORD = "CANARYsmtppass7c3d"


def canary_channels():
    base = "http://127.0.0.1:9099"
    return {
        "incident": {"type": "slack", "channel": "#sqlsynth-incidents", "url": "%s/incident/%s" % (base, CANARY_URL_TOKEN)},
        "status_page": {"type": "webhook", "url": base + "/status_page",
                        "headers": {"Authorization": "Bearer " + CANARY_HEADER_TOKEN}},
        "issue_tracker": {"type": "webhook", "url": base + "/issue_tracker"},
        "oncall_email": {"type": "email", "smtp_host": "127.0.0.1", "smtp_port": 8025, "smtp_starttls": False,
                         "smtp_username": "runbooks", "smtp_password": CANARY_SMTP_PASSWORD,
                         "from": "sqlsynth-runbooks@sqlsynth.lab", "to": ["oncall@sqlsynth.lab"]},
    }


def test_security_drill_through_the_api_contains_the_attack_and_leaks_no_secret(tmp_path, inbox):
    """Under injection_burst the security runbook blocks the attacker, rotates the key, lowers the rate limit and
    hardens; then no secret - planted canaries, the lab's passwords, the old and the new API key - is in any runner
    artifact, the timeline directory, or a notification body."""
    result = Collection(root=ROOT, artifacts_root=str(tmp_path / "artifacts")).run(
        "drill", inventory="inventories/lab",
        extravars={"drill_scenario": "injection_burst", "sqlsynth_notify_channels": canary_channels()})
    assert result.status == "successful", result.stdout[-5000:]
    drill = result.artifact_data["sqlsynth_drill"]
    assert drill["recovered"] and drill["severity"] in ("P0", "P1")
    assert {"block_clients", "lower_rate_limit", "harden"} <= set(drill["actions"])
    assert "rotate_api_key" in drill["actions"]  # the attacker used the valid (leaked) key
    incident = result.artifact_data["sqlsynth_incident"]
    assert incident["runbook"] == "incident_security" and incident["done"]
    new_key = open(os.path.join(LAB_ROOT, "secrets", "api_key"), encoding="utf-8").read().strip()
    assert re.fullmatch(r"[0-9a-f]{64}", new_key)
    # what the on-call engineer receives
    hooks, mails = inbox()
    incident_msgs = [text_of(h) for h in hooks if h.get("path", "").startswith("/incident")]
    assert len(incident_msgs) == 3 and all("DRILL injection_burst" in t for t in incident_msgs)
    assert len(mails) == 3
    # no secret anywhere
    lab_vars = open(os.path.join(ROOT, "inventories", "lab", "group_vars", "all", "main.yml"), encoding="utf-8").read()
    secrets = [CANARY_URL_TOKEN, CANARY_HEADER_TOKEN, CANARY_SMTP_PASSWORD, new_key] + re.findall(
        r"^sqlsynth_(?:db_password|redis_password|api_key): (\S+)$", lab_vars, re.M)
    assert len(secrets) == 7
    assert files_containing(str(tmp_path / "artifacts"), secrets) == []
    for name in ("timeline.json", "report.md", "postmortem.md"):
        assert os.path.getsize(os.path.join(result.timeline_dir, name)) > 0
    assert "blocked 127.0.0.66 at nginx" in open(os.path.join(result.timeline_dir, "postmortem.md"), encoding="utf-8").read()
    assert files_containing(result.timeline_dir, secrets) == []
    bodies = [text_of(h) for h in hooks] + mails
    assert [s[:12] for s in secrets if any(s in b for b in bodies)] == []
    assert new_key not in result.stdout


def test_failed_verification_rolls_back_the_settings_and_says_what_was_undone(inbox):
    """Redis down: the runbook switches the cache to memory; a latency target no service can meet makes the
    verification fail, so the rollback must put the cache setting back and the run must fail saying so."""
    overrides = os.path.join(LAB_ROOT, "app", "overrides.env")
    before = open(overrides, encoding="utf-8").read()
    with injected("redis_down"):
        result = run_playbook("sqlsynth.runbooks.incident_high_error_rate",
                              extra={"incident_p95_max_seconds": "0.000001", "incident_watch_timeout": "12"})
        after = open(overrides, encoding="utf-8").read()
    assert_no_traceback(result.stdout)
    assert result.returncode != 0
    out = " ".join(result.stdout.split())
    assert "Plan: cache_to_memory" in out
    assert "did not recover within 12 s" in out
    assert "Done: switched the cache backend to memory. Undone: cache_to_memory." in out
    assert after == before and "QUERY_AGENT_CACHE_BACKEND" not in after
    hooks, dummy = inbox()
    texts = [text_of(h) for h in hooks if h.get("path", "").startswith("/incident")]
    # the incident notice, the update after containment, and the update that says what was undone
    assert len(texts) == 3 and "INCIDENT" in texts[0] and "UPDATE" in texts[1] and "UPDATE" in texts[2]
    assert "undone: cache_to_memory" in texts[2] and "RESOLVED" not in " ".join(texts)


def test_production_guard_holds_the_restart_without_confirmation(inbox):
    """The production inventory's rule, on the lab: a destructive step needs -e sqlsynth_confirm=true."""
    with injected("error_burst"):
        pid = app_pid()
        result = run_playbook("sqlsynth.runbooks.incident_high_error_rate", extra={"sqlsynth_environment": "production"})
        assert app_pid() == pid
    assert_no_traceback(result.stdout)
    assert result.returncode != 0
    out = " ".join(result.stdout.split())
    assert "restart_app" in out and "[held: production: destructive, needs -e sqlsynth_confirm=true]" in out
    assert "Every containment step is held" in out
    hooks, mails = inbox()
    assert hooks == [] and mails == []  # nothing announced for a run that could not act


@pytest.mark.parametrize("extra, message", [
    ({"drill_scenario": "meteor"}, "value of drill_scenario must be one of: error_burst, db_down"),
    ({"drill_scenario": "db_down", "sqlsynth_environment": "production"},
     "Drills inject real faults: they run only on the lab inventory (sqlsynth_environment is production)"),
])
def test_drill_refuses_unknown_scenarios_and_non_lab_inventories(extra, message):
    result = run_playbook("sqlsynth.runbooks.drill", extra=extra)
    assert_no_traceback(result.stdout)
    assert result.returncode != 0
    assert message in " ".join(result.stdout.split())
    assert "healthy" in wait_healthy()  # nothing was injected
