"""Timeline logic: phases, summaries, redaction and rendering, without running a playbook."""
import json

import pytest

from ansible_collections.sqlsynth.runbooks.plugins.plugin_utils import _timeline as tl

CANARY = "CANARY-pw-4d5e6f"


@pytest.mark.parametrize("names, phase", [
    (["Prerequisites"], "prerequisites"),
    (["preflight : Preflight | Check inputs"], "prerequisites"),
    (["Triage | Severity"], "found"),
    (["Diagnostics | Gather"], "found"),
    (["Diagnose the pool"], "found"),
    (["Step 1 - restart"], "done"),
    (["Steps | Restart the app"], "done"),
    (["Verify | Probe"], "verified"),
    (["Verification"], "verified"),
    (["Rollback | Restore"], "rollback"),
    (["Gather PIDs", "Diagnostics", "Drill"], "found"),       # from the enclosing block
    (["Probe", "Check the service", "verify"], "verified"),    # from the role
    (["Rollback | Undo", "Steps | Restart"], "rollback"),     # own name first
    (["Print a banner", "Drill"], "other"),
    ([], "other"),
])
def test_phase_of(names, phase):
    assert tl.phase_of(names) == phase


def test_redactor_masks_known_values_assignments_and_url_credentials():
    red = tl.Redactor(tl.secret_values({"db_password": CANARY, "api_keys": ["k-123456", "no"], "port": 5432,
                                        "token_enabled": True, "name": "not-secret"}))
    text = red.text("pw %s, key k-123456, json \"%s\", password=hunter22 token: t0k3n "
                    "https://user:s3cr3t@host/x name not-secret no" % (CANARY, CANARY))
    assert CANARY not in text and "k-123456" not in text and "hunter22" not in text and "t0k3n" not in text
    assert "s3cr3t" not in text and "https://********@host/x" in text
    assert "password=********" in text and "not-secret no" in text  # short and non-secret values stay


def test_redactor_data_masks_every_leaf_under_a_secret_key():
    red = tl.Redactor([CANARY])
    data = red.data({"channel": "incident", "webhook": {"url": "https://hooks/x", "retries": 3},
                     "smtp_password": "pw-value", "items": ["see %s" % CANARY], "ok": True, "none": None})
    assert data == {"channel": "incident", "webhook": {"url": "********", "retries": 3},
                    "smtp_password": "********", "items": ["see ********"], "ok": True, "none": None}


def test_summarize_uses_whitelisted_keys_only():
    result = {"changed": True, "cmd": ["psql", CANARY], "stdout": CANARY, "invocation": {"module_args": {"x": CANARY}},
              "msg": "restarted app"}
    assert tl.summarize(result, "changed") == "restarted app"
    verdict = {"verdict": "degraded", "broken": ["cache"], "summary": "degraded: cache", "signals": [CANARY]}
    assert tl.summarize(verdict, "ok") == "verdict: degraded | broken: cache | summary: degraded: cache"
    assert tl.summarize({"censored": "the output has been hidden", "msg": CANARY}, "failed") == \
        "output hidden (no_log)"
    assert tl.summarize({"ansible_facts": {"db_password": CANARY, "x": 1}}, "ok") == "set db_password, x"
    assert tl.summarize({"ansible_stats": {"data": {"sqlsynth_verdict": {"x": CANARY}}}}, "ok") == \
        "published sqlsynth_verdict"
    assert tl.summarize({"results": [{"changed": True}, {"failed": True}, {}]}, "failed") == \
        "3 item(s), 1 changed, 1 failed"
    assert tl.summarize({"msg": "non-zero return code", "rc": 3, "stderr": CANARY}, "failed") == \
        "non-zero return code | rc 3"
    long = tl.summarize({"msg": ["line %d" % i for i in range(100)]}, "ok")
    assert len(long) <= tl.MSG_LIMIT and long.endswith("...") and long.startswith("line 0; line 1")


@pytest.mark.parametrize("result, event, status", [
    ({"changed": True}, "ok", "changed"), ({}, "ok", "ok"), ({"changed": True}, "failed", "failed"),
    ({}, "ignored", "ignored"), ({}, "skipped", "skipped"), ({}, "unreachable", "unreachable"),
])
def test_status_of(result, event, status):
    assert tl.status_of(result, event) == status


def _run(**kw):
    run = {"run_id": "r-1", "playbook": "incident.yml", "plays": ["P"], "started": "2026-01-01T10:00:00.000000Z",
           "ended": "2026-01-01T10:00:30.500000Z", "hosts": {"h1": {"failures": 0, "unreachable": 0}},
           "stats_data": {}, "entries": []}
    run.update(kw)
    return run


def _entry(ts, phase, status, task="t", summary=""):
    return {"ts": "2026-01-01T10:00:%02d.000000Z" % ts, "phase": phase, "host": "h1", "task": task,
            "status": status, "summary": summary}


def test_run_without_verdict_or_actions_renders_prompts():
    doc = tl.build_document(_run(entries=[_entry(1, "prerequisites", "ok", "Prerequisites | a|b")]), tl.Redactor())
    assert doc["status"] == "successful" and doc["duration_seconds"] == 30.5 and doc["verdict"] is None
    out = tl.render(doc)
    assert "**incident.yml run r-1 successful in 30.5s: no verdict published; 0 change(s), 0 failed task(s)**" \
        in out["report.md"]
    assert "No verdict was published" in out["report.md"] and "- no change was made" in out["report.md"]
    assert "| Prerequisites \\| a\\|b |" in out["report.md"]
    assert "_No candidate in the run's data" in out["postmortem.md"]
    assert "- _None taken by the run: list the fixes made by hand._" in out["postmortem.md"]


def test_healthy_verdict_after_actions_leaves_no_open_fix_and_severity_is_found():
    verdict = {"verdict": "healthy", "broken": [], "signals": [{"name": "health", "component": "app", "ok": True}]}
    stats = {"sqlsynth_verdict": verdict, "sqlsynth_triage": {"severity": "P1", "token": CANARY}}
    doc = tl.build_document(_run(stats_data=stats, entries=[
        _entry(1, "found", "ok", "Triage | Severity", "P1"), _entry(5, "done", "changed", "Steps | Restart"),
        _entry(9, "verified", "ok", "Verify | Probe")]), tl.Redactor())
    assert doc["severity"] == "P1" and doc["stats_data"]["sqlsynth_triage"]["token"] == "********"
    pm = tl.render(doc)["postmortem.md"]
    assert "- [x] Steps | Restart (h1, 2026-01-01T10:00:05.000000Z)" in pm and "Fix " not in pm
    assert "- First finding: 2026-01-01T10:00:01.000000Z" in pm
    assert "- Verification: 2026-01-01T10:00:09.000000Z" in pm and "- Severity: P1" in pm
    assert "| Severity | P1 |" in tl.render(doc)["report.md"]


def test_unreachable_host_fails_the_run_and_is_a_candidate():
    doc = tl.build_document(_run(hosts={"h1": {"failures": 0, "unreachable": 1}},
                                 entries=[_entry(2, "found", "unreachable", "Diagnostics | ping", "timed out")]),
                            tl.Redactor())
    assert doc["status"] == "failed"
    assert "Candidate: task failed: Diagnostics | ping" in tl.render(doc)["postmortem.md"]


def test_odd_verdict_shapes_still_render():
    verdict = {"verdict": "unhealthy", "broken": ["cache"], "signals": ["not a dict", {"name": "redis", "ok": False}]}
    out = tl.render(tl.build_document(_run(stats_data={"sqlsynth_verdict": verdict,
                                                       "sqlsynth_notifications": ["text", {"channel": "team"}]}),
                                      tl.Redactor()))
    assert "1. Candidate: cache is broken" in out["postmortem.md"]
    assert "- channel: team" in out["report.md"] and "\nunhealthy\n" in out["report.md"]


@pytest.mark.parametrize("run_id, name", [("drill-1", "drill-1"), ("../../etc", "etc"), ("a b/c", "a_b_c"),
                                          ("", "run"), (None, "run")])
def test_safe_name(run_id, name):
    assert tl.safe_name(run_id) == name


def test_write_run_writes_private_redacted_files(tmp_path):
    red = tl.Redactor([CANARY])
    run = _run(run_id="../x", entries=[_entry(1, "done", "failed", "Steps | a", "login %s refused" % CANARY)],
               stats_data={"note": CANARY})
    paths = tl.write_run(str(tmp_path / "out"), run, red)
    assert sorted(paths) == ["postmortem.md", "report.md", "timeline.json"]
    run_dir = tmp_path / "out" / "x"
    assert sorted(p.name for p in run_dir.iterdir()) == sorted(paths)  # no temporary file left
    assert oct(run_dir.stat().st_mode & 0o777) == "0o700"
    for path in paths.values():
        text = open(path).read()
        assert CANARY not in text and "********" in text
    assert json.load(open(paths["timeline.json"]))["failed_tasks"][0]["msg"] == "login ******** refused"


def test_incident_record_gives_the_first_candidates_and_the_fixes_done():
    incident = {"runbook": "incident_db_connection", "severity": "P1",
                "problems": ["30 sessions idle in transaction > 60 s", "pool timeouts in the app log"],
                "plan": [{"action": "terminate_idle_sessions", "reason": "30 sessions idle in transaction > 60 s"}],
                "done": [{"action": "terminate_idle_sessions", "reason": "30 sessions idle in transaction > 60 s",
                          "summary": "terminated 30 sessions idle in transaction (pids 1, 2)"}]}
    verdict = {"verdict": "healthy", "broken": [], "signals": []}
    doc = tl.build_document(_run(stats_data={"sqlsynth_incident": incident, "sqlsynth_verdict": verdict}), tl.Redactor())
    pm = tl.render(doc)["postmortem.md"]
    assert "1. Candidate: 30 sessions idle in transaction > 60 s" in pm
    assert "   - terminate_idle_sessions: 30 sessions idle in transaction > 60 s" in pm
    assert "2. Candidate: pool timeouts in the app log" in pm
    assert "- [x] terminated 30 sessions idle in transaction (pids 1, 2) (because 30 sessions idle in transaction > 60 s)" in pm
    assert "_No candidate in the run's data" not in pm


def test_nested_secrets_and_notification_endpoints_are_masked_in_the_record():
    variables = {"sqlsynth_notify_channels": {"incident": {"url": "https://hooks.example/T0/CANARYurl", "type": "slack"},
                                              "mail": {"smtp_password": "CANARYsmtp", "smtp_host": "smtp.example"}},
                 "settings": {"login": {"password": CANARY}}}
    red = tl.Redactor(tl.secret_values(variables))
    out = red.text("sent to https://hooks.example/T0/CANARYurl with CANARYsmtp and %s via smtp.example (slack)" % CANARY)
    assert "CANARY" not in out and "smtp.example" in out and "slack" in out
