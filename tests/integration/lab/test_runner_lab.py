"""The CLI and the Python API on the real lab: progress, exit code = verdict, no secret in artifacts."""
import json
import os
import subprocess
import uuid

from labtools import ENV, ROOT, VENV_BIN, files_containing, injected

from sqlsynth_runbook import Collection

CLI = os.path.join(VENV_BIN, "sqlsynth-runbook")


def cli(*args, artifacts):
    return subprocess.run([CLI, "--root", ROOT, "run", "health_check", "-i", "inventories/lab",
                           "--artifacts-root", str(artifacts)] + list(args),
                          cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300, check=False)


def test_cli_shows_progress_and_exits_zero_on_a_healthy_lab(tmp_path):
    result = cli(artifacts=tmp_path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    output = result.stdout + result.stderr
    assert "Verify | Check PostgreSQL directly" in output, "no per-task progress line"
    assert "healthy" in output.lower()


def test_cli_exit_code_follows_an_unhealthy_verdict_and_api_returns_it_as_data(tmp_path):
    with injected("db_down"):
        result = cli(artifacts=tmp_path / "cli")
        api = Collection(root=ROOT, artifacts_root=str(tmp_path / "api")).run("health_check", inventory="inventories/lab")
    assert result.returncode == 1, result.stdout[-3000:]
    assert api.status == "failed"
    assert api.verdict["verdict"] == "unhealthy"
    assert api.verdict["broken"][0] == "database"
    assert any(t["task"].startswith("Verify | Fail the run") for t in api.failed_tasks)


def test_canary_secret_passed_as_extra_variable_is_in_no_artifact(tmp_path):
    canary = "CANARY-%s" % uuid.uuid4().hex
    # A real secret of the lab, overridden on the command line with the canary: the API key the
    # synthetic query sends. The query then fails (wrong key), which is fine: we look at artifacts.
    result = cli("-e", "sqlsynth_api_key=%s" % canary, artifacts=tmp_path)
    # The playbook did receive it: the app refused the canary as an API key.
    assert result.returncode == 1, result.stdout[-3000:]
    assert "401" in result.stdout + result.stderr
    assert os.listdir(tmp_path), "no artifacts were written"
    assert files_containing(str(tmp_path), canary) == []
    assert canary not in result.stdout + result.stderr


def test_api_run_records_a_timeline_report_and_postmortem_without_secrets(tmp_path):
    result = Collection(root=ROOT, artifacts_root=str(tmp_path)).run(
        "health_check", inventory="inventories/lab", extravars={"sqlsynth_api_key": "CANARY-timeline-key"})
    assert result.timeline_dir, "the run recorded no timeline"
    names = sorted(os.listdir(result.timeline_dir))
    assert names == ["postmortem.md", "report.md", "timeline.json"]
    with open(os.path.join(result.timeline_dir, "timeline.json")) as handle:
        timeline = json.load(handle)
    phases = {entry["phase"] for entry in timeline["entries"]}
    assert {"prerequisites", "verified"} <= phases, phases
    assert files_containing(str(tmp_path), "CANARY-timeline-key") == []
