"""The sqlsynth-runbook command, run as a user would (subprocess): output and exit codes."""
import json
import os
import signal
import subprocess
import sys
import time
import uuid

import pytest

CLI = os.path.join(os.path.dirname(sys.executable), "sqlsynth-runbook")


@pytest.fixture
def cli(collection_root, tmp_path):
    env = dict(os.environ, SQLSYNTH_COLLECTION_ROOT=str(collection_root), XDG_CACHE_HOME=str(tmp_path / "cache"))

    def run(*args, timeout=120):
        return subprocess.run([CLI, *args], capture_output=True, text=True, env=env, timeout=timeout,
                              cwd=str(tmp_path), check=False)
    run.env = env
    run.runs = tmp_path / "cache" / "sqlsynth-runbook" / "runs"
    return run


def assert_one_line_error(proc, text):
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and text in lines[0], proc.stderr


def test_list_and_describe(cli):
    proc = cli("list")
    assert proc.returncode == 0
    assert proc.stdout.splitlines() == [
        "broken   Always unhealthy and fails (test fixture).",
        "healthy  Always healthy (test fixture).",
        "secret   Receives a password (test fixture).",
        "slow     Sleeps (test fixture).",
    ]
    assert [r["name"] for r in json.loads(cli("list", "--json").stdout)] == ["broken", "healthy", "secret", "slow"]
    proc = cli("describe", "healthy")
    assert proc.returncode == 0
    for text in ("healthy: Always healthy (test fixture).", "Prerequisites:", "Rollback:", "Troubleshooting:",
                 "  retries (int, default 3)", "How often to retry.", "mode (str, default 'fast', choices"):
        assert text in proc.stdout
    spec = json.loads(cli("describe", "secret", "--json").stdout)
    assert spec["options"]["db_password"]["required"] is True


def test_run_healthy_exits_0_with_progress_and_verdict(cli, inventory):
    proc = cli("run", "healthy", "-i", inventory, "-e", "retries=4")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    assert "PLAY healthy" in out
    assert "skipped      localhost            Write the marker file" in out
    assert "ok           localhost            Publish the verdict" in out
    assert "healthy: successful (rc 0)" in out
    assert "verdict: HEALTHY" in out
    assert "health_endpoint  app        yes  200 healthy" in out
    assert f"artifacts: {cli.runs}" in out


def test_run_unhealthy_exits_1_with_failed_task_and_verdict_table(cli, inventory):
    proc = cli("run", "broken", "-i", inventory)
    assert proc.returncode == 1
    out = proc.stdout
    assert "failed       localhost            Fail because the database is down: database is down" in out
    assert "failed tasks:\n  localhost: Fail because the database is down: database is down" in out
    assert "verdict: UNHEALTHY" in out
    assert "pg_isready  database   NO  no response" in out
    assert "broken: database" in out
    assert "disagreement: /health says healthy but PostgreSQL does not answer" in out


def test_run_json_and_extravars_file_and_check(cli, inventory, tmp_path):
    varfile = tmp_path / "vars.yml"
    marker = tmp_path / "marker"
    varfile.write_text(f"retries: 9\nmarker_path: {marker}\n")
    proc = cli("run", "healthy", "-i", inventory, "-e", f"@{varfile}", "-e", "retries=6", "--check", "--json")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)  # nothing but the JSON on stdout
    assert result["status"] == "successful" and result["rc"] == 0
    assert result["verdict"]["retries"] == 6 and result["verdict"]["check_mode"] is True
    assert result["stats"]["localhost"]["changed"] == 1
    assert not marker.exists()
    assert "Write the marker file" in proc.stderr  # progress went to stderr


@pytest.mark.parametrize("args, text", [
    (["describe", "nope"], "error: unknown runbook 'nope'"),
    (["run", "nope", "-i", "INV"], "error: unknown runbook 'nope'"),
    (["run", "healthy", "-i", "INV", "-e", "retries=lots"], "error: option 'retries': expected int"),
    (["run", "healthy", "-i", "INV", "-e", "bogus=1"], "error: runbook 'healthy' has no option 'bogus'"),
    (["run", "healthy", "-i", "INV", "-e", "novalue"], "error: -e 'novalue': expected KEY=VALUE"),
    (["run", "healthy", "-i", "INV", "-e", "@/no/such.yml"], "cannot read /no/such.yml"),
    (["run", "healthy", "-i", "/no/inventory"], "error: inventory /no/inventory does not exist"),
    (["run", "healthy", "-i", "INV", "--secret-var", "greeting"], "--secret-var greeting: no such extra"),
    (["run", "healthy"], "the following arguments are required: -i/--inventory"),
])
def test_bad_input_exits_2_with_one_line(cli, inventory, args, text):
    proc = cli(*[inventory if a == "INV" else a for a in args])
    if args[0] == "run" and "-i" not in args:  # argparse prints usage plus the error line
        assert proc.returncode == 2 and text in proc.stderr and "Traceback" not in proc.stderr
        return
    assert_one_line_error(proc, text)
    assert not cli.runs.exists() or not os.listdir(cli.runs)  # refused before starting


def test_no_collection_exits_2(cli, tmp_path):
    env = {k: v for k, v in cli.env.items() if k != "SQLSYNTH_COLLECTION_ROOT"}
    env["ANSIBLE_COLLECTIONS_PATH"] = str(tmp_path / "none")
    proc = subprocess.run([CLI, "list"], capture_output=True, text=True, env=env, cwd=str(tmp_path), check=False)
    assert_one_line_error(proc, "no sqlsynth.runbooks collection found")


def test_timeout_exits_1(cli, inventory):
    proc = cli("run", "slow", "-i", inventory, "-e", "seconds=179", "--timeout", "2")
    assert proc.returncode == 1
    assert "slow: timeout" in proc.stdout


def test_ctrl_c_cancels_the_run_and_exits_130(cli, inventory):
    # Ctrl-C as in a terminal: a test run started as a background job inherits SIGINT ignored, and Python keeps
    # ignoring it, so the CLI gets SIGINT's default disposition back (Python then raises KeyboardInterrupt).
    proc = subprocess.Popen([CLI, "run", "slow", "-i", inventory, "-e", "seconds=178"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=cli.env,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        assert proc.stdout.readline().strip() == "PLAY slow"
        time.sleep(2)  # the sleep task is running now
        started = time.monotonic()
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130, out + err
    assert time.monotonic() - started < 30
    assert "canceling the run" in err and "Traceback" not in err
    assert "slow: canceled" in out


def test_canary_never_in_output_or_artifacts(cli, inventory, tmp_path, files_containing):
    canary = f"CANARY-{uuid.uuid4()}"
    proc = cli("run", "secret", "-i", inventory, "-e", f"db_password={canary}", "-e", f"hash_path={tmp_path}/h",
               "-v")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (tmp_path / "h").exists()
    assert canary not in proc.stdout + proc.stderr
    assert files_containing(cli.runs, "localhost")  # the run left its artifacts there
    assert files_containing(cli.runs, canary) == []
