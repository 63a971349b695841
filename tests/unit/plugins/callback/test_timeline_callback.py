"""The timeline callback, run for real through ansible-playbook against localhost."""
import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))))
BIN = os.path.dirname(sys.executable)
CANARIES = ("CANARY-inv-9f3c51", "CANARY-extra-77aa02", "CANARY-fact-0b1d93", "CANARY-hook-5e6f70")

PLAYBOOK = """
- name: Drill
  hosts: all
  gather_facts: false
  tasks:
    - name: Prerequisites | Name this run
      ansible.builtin.set_fact:
        sqlsynth_run_id: "{{ run_id | default(omit) }}"
        api_token: CANARY-fact-0b1d93
      when: run_id is defined
    - name: Triage | Classify the incident
      ansible.builtin.debug:
        msg: "connect with {{ sqlsynth_db_password }} then {{ api_token | default('') }} and {{ webhook_url }}"
    - name: Diagnostics
      block:
        - name: Read the logs
          ansible.builtin.command: "echo {{ sqlsynth_db_password }} {{ webhook_url }}"
          changed_when: false
    - name: Check the service
      ansible.builtin.include_role:
        name: verify
    - name: Check the service again, one file of the role
      ansible.builtin.include_role:
        name: verify
        tasks_from: main
        apply:
          tags: [verify]
    - name: Steps | Restart the app
      block:
        - name: Steps | Write the marker
          ansible.builtin.command: "echo {{ api_token | default('') }}"
        - name: Steps | Restart
          ansible.builtin.fail:
            msg: "restart refused, password={{ sqlsynth_db_password }}"
      rescue:
        - name: Rollback | Restore the marker
          ansible.builtin.command: echo restored
    - name: Verification | Publish the verdict
      ansible.builtin.set_stats:
        data:
          sqlsynth_verdict:
            verdict: unhealthy
            broken: [database]
            summary: "unhealthy: database"
            signals:
              - {name: postgres, component: database, ok: false, detail: connection refused}
              - {name: health, component: app, ok: true, detail: answers}
          sqlsynth_notifications:
            - {channel: incident, webhook_url: "{{ webhook_url }}", status: 200}
        per_host: false
    - name: Not needed
      ansible.builtin.debug:
        msg: never
      when: false
    - name: Steps | Give up
      ansible.builtin.fail:
        msg: still broken
      when: fail_at_end | default(false) | bool
"""


def run_playbook(tmp_path, out, *extra):
    (tmp_path / "roles" / "verify" / "tasks").mkdir(parents=True, exist_ok=True)
    (tmp_path / "roles" / "verify" / "tasks" / "main.yml").write_text(
        "- name: Probe the service\n  ansible.builtin.debug:\n    msg: all probes answered\n")
    (tmp_path / "pb.yml").write_text(PLAYBOOK)
    (tmp_path / "inv.ini").write_text(
        "[all]\nlocalhost ansible_connection=local ansible_python_interpreter=%s sqlsynth_db_password=%s\n"
        % (sys.executable, CANARIES[0]))
    env = dict(os.environ, ANSIBLE_CALLBACKS_ENABLED="sqlsynth.runbooks.timeline",
               ANSIBLE_COLLECTIONS_PATH=os.path.join(ROOT, ".build", "collections"),
               ANSIBLE_ROLES_PATH=str(tmp_path / "roles"), SQLSYNTH_TIMELINE_DIR=str(out),
               ANSIBLE_NOCOLOR="1")
    env.pop("SQLSYNTH_RUNBOOK_RUN_ID", None)
    proc = subprocess.run(
        [os.path.join(BIN, "ansible-playbook"), "-i", str(tmp_path / "inv.ini"), str(tmp_path / "pb.yml"),
         "-e", "webhook_url=https://hooks.example/services/%s" % CANARIES[3], "-e", "deploy_secret=%s" % CANARIES[1]]
        + list(extra), cwd=str(tmp_path), env=env, capture_output=True, text=True, timeout=300, check=False)
    # The paths line goes to stderr, so a machine-readable stdout stays clean.
    line = [x for x in proc.stderr.splitlines() if x.startswith("TIMELINE: ")]
    assert not any(x.startswith("TIMELINE: ") for x in proc.stdout.splitlines())
    return proc, line


@pytest.fixture(scope="module")
def drill(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("drill")
    proc, line = run_playbook(tmp, tmp / "out", "-e", "run_id=drill-42")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    run_dir = tmp / "out" / "drill-42"
    return {"proc": proc, "line": line, "dir": run_dir,
            "doc": json.loads((run_dir / "timeline.json").read_text()),
            "report": (run_dir / "report.md").read_text(), "postmortem": (run_dir / "postmortem.md").read_text()}


def test_the_callback_handles_every_event_without_a_warning(drill):
    output = drill["proc"].stdout + drill["proc"].stderr
    assert "Callback dispatch" not in output, output[-3000:]
    tasks = [e["task"] for e in drill["doc"]["entries"]]
    assert tasks.count("verify : Probe the service") == 2, tasks
    assert "Check the service" not in tasks, "an include is a container, not a step"


def test_prints_the_three_paths_on_one_line(drill):
    assert len(drill["line"]) == 1
    for name in ("timeline.json", "report.md", "postmortem.md"):
        assert str(drill["dir"] / name) in drill["line"][0]
    assert oct(os.stat(drill["dir"]).st_mode & 0o777) == "0o700"
    assert oct(os.stat(drill["dir"] / "timeline.json").st_mode & 0o777) == "0o600"


def test_entries_phases_and_order(drill):
    doc = drill["doc"]
    assert doc["run_id"] == "drill-42" and doc["playbook"] == "pb.yml" and doc["plays"] == ["Drill"]
    assert doc["status"] == "successful"
    got = [(e["task"], e["phase"], e["status"]) for e in doc["entries"]]
    assert got == [
        ("Prerequisites | Name this run", "prerequisites", "ok"),
        ("Triage | Classify the incident", "found", "ok"),
        ("Read the logs", "found", "ok"),              # phase from the enclosing block "Diagnostics"
        ("verify : Probe the service", "verified", "ok"),  # phase from the role name "verify"
        ("verify : Probe the service", "verified", "ok"),  # again, included with tasks_from and apply
        ("Steps | Write the marker", "done", "changed"),
        ("Steps | Restart", "done", "failed"),
        ("Rollback | Restore the marker", "rollback", "changed"),
        ("Verification | Publish the verdict", "verified", "ok"),
        ("Not needed", "other", "skipped"),
        ("Steps | Give up", "done", "skipped"),
    ]
    assert all(set(e) >= {"ts", "phase", "host", "task", "status", "summary"} for e in doc["entries"])
    assert {e["host"] for e in doc["entries"]} == {"localhost"}
    stamps = [doc["started"]] + [e["ts"] for e in doc["entries"]] + [doc["ended"]]
    assert stamps == sorted(stamps) and doc["duration_seconds"] > 0


def test_stats_data_verdict_and_failed_tasks(drill):
    doc = drill["doc"]
    assert doc["verdict"]["verdict"] == "unhealthy" and doc["verdict"]["broken"] == ["database"]
    assert doc["notifications"] == [{"channel": "incident", "webhook_url": "********", "status": 200}]
    assert set(doc["stats_data"]) == {"sqlsynth_verdict", "sqlsynth_notifications"}
    assert doc["hosts"]["localhost"]["rescued"] == 1 and doc["hosts"]["localhost"]["failures"] == 0
    [failed] = doc["failed_tasks"]
    assert failed["task"] == "Steps | Restart" and failed["rescued"] and failed["phase"] == "done"
    assert failed["msg"] == "restart refused, password=********"


def test_report_sections(drill):
    report = drill["report"]
    assert report.startswith("# Incident report: pb.yml\n")
    assert "**pb.yml run drill-42 successful in " in report
    assert "verdict unhealthy (broken: database); 2 change(s), 1 failed task(s) (1 rescued)**" in report
    for heading in ("## Verdict", "## Timeline", "## Findings", "## Actions taken", "## Failed tasks",
                    "## Verification", "## Notifications"):
        assert "\n%s\n" % heading in report
    assert "- postgres (database): connection refused" in report
    assert "| done | localhost | Steps \\| Restart | failed | restart refused, password=******** |" in report
    assert "2 skipped task result(s) are in timeline.json only." in report
    actions = report.split("## Actions taken")[1].split("##")[0]
    assert "Steps | Write the marker" in actions and "Rollback | Restore the marker" in actions
    assert "Prerequisites" not in actions


def test_postmortem_follows_the_template(drill):
    pm = drill["postmortem"]
    sections = ["## 1. Incident Summary", "### Timeline of events", "### Impact assessment", "### Response timeline",
                "## 2. Root Cause Analysis", "### Technical root cause", "### Contributing factors",
                "### Why detection was delayed", "## 3. Action Items", "### Immediate fixes",
                "### Preventive measures", "### Process improvements", "## 4. Lessons Learned",
                "### What went well", "### What could be improved", "### Knowledge gaps identified"]
    positions = [pm.index("\n" + s + "\n") for s in sections]
    assert positions == sorted(positions)
    assert "1. Candidate: database is broken\n   - postgres: connection refused" in pm
    assert "2. Candidate: task failed: Steps | Restart" in pm
    assert "health: answers" not in pm  # passing signals are no candidates
    assert "- [x] Steps | Write the marker (localhost," in pm
    assert "- [ ] Fix database: still broken at the end of the run" in pm
    assert "- Components broken: database" in pm


def test_no_canary_anywhere(drill):
    texts = [drill["line"][0]] + [p.read_text() for p in drill["dir"].iterdir()]
    for text in texts:
        for canary in CANARIES:
            assert canary not in text
    # the canaries did reach the tasks: the masks show where they were
    assert "connect with ******** then ******** and ********" in drill["report"]


def test_failed_run_without_a_run_id_fact(tmp_path):
    proc, line = run_playbook(tmp_path, tmp_path / "out", "-e", "fail_at_end=true")
    assert proc.returncode == 2
    [run_dir] = list((tmp_path / "out").iterdir())
    assert run_dir.name.startswith("pb-") and str(run_dir) in line[0]
    doc = json.loads((run_dir / "timeline.json").read_text())
    assert doc["status"] == "failed" and doc["run_id"] == run_dir.name
    assert doc["entries"][0] == dict(doc["entries"][0], phase="prerequisites", status="skipped")
    last = doc["failed_tasks"][-1]
    assert last["task"] == "Steps | Give up" and not last["rescued"] and last["msg"] == "still broken"
    report = (run_dir / "report.md").read_text()
    assert " failed in " in report and "2 failed task(s) (1 rescued)" in report
    for path in run_dir.iterdir():
        assert not any(c in path.read_text() for c in CANARIES)


def test_check_mode_is_recorded(tmp_path):
    proc, _line = run_playbook(tmp_path, tmp_path / "out", "--check", "-e", "run_id=check-1")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    doc = json.loads((tmp_path / "out" / "check-1" / "timeline.json").read_text())
    assert doc["check_mode"] is True
    assert "(check mode: nothing was changed)" in (tmp_path / "out" / "check-1" / "report.md").read_text()
