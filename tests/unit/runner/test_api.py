"""Runs through ansible-runner against localhost: results, events, check mode, cancel, timeout, rotation."""
import json
import os
import subprocess
import sys

import pytest

from sqlsynth_runbook import Collection, PlayStarted, RunFinished, TaskResult, TaskStarted


def test_healthy_run(collection, inventory, tmp_path):
    seen = []
    marker = tmp_path / "marker"
    extravars = {"retries": "5", "marker_path": str(marker), "greeting": "hi there"}
    result = collection.run("healthy", inventory, extravars=extravars, on_event=seen.append)
    assert (result.status, result.rc) == ("successful", 0)
    assert result.healthy
    assert result.stats == {"localhost": {"ok": 2, "changed": 1, "failures": 0, "unreachable": 0, "skipped": 0}}
    assert result.verdict["verdict"] == "healthy"
    assert result.verdict["retries"] == 5 and result.verdict["check_mode"] is False
    assert result.failed_tasks == []
    assert marker.read_text() == "hi there\n"
    assert [type(e) for e in seen] == [PlayStarted, TaskStarted, TaskResult, TaskStarted, TaskResult, RunFinished]
    assert seen[2] == TaskResult(host="localhost", task="Write the marker file", status="changed")
    assert seen[-1].result is result
    assert result.duration_seconds > 0
    # a private data dir per run under artifacts_root, with ansible-runner's artifacts inside
    assert os.path.dirname(result.private_data_dir) == collection.artifacts_root
    assert result.artifacts_dir.startswith(result.private_data_dir + os.sep)
    assert open(os.path.join(result.artifacts_dir, "status")).read() == "successful"
    assert "Publish the verdict" in result.stdout


def test_failed_run_with_unhealthy_verdict(collection, inventory):
    result = collection.run("broken", inventory)
    assert result.status == "failed" and result.rc == 2
    assert not result.healthy
    assert result.verdict["verdict"] == "unhealthy" and result.verdict["broken"] == ["database"]
    assert result.failed_tasks == [{"host": "localhost", "task": "Fail because the database is down",
                                    "msg": "database is down"}]
    assert result.stats["localhost"]["failures"] == 1


def test_check_mode_is_passed_through(collection, inventory, tmp_path):
    marker = tmp_path / "marker"
    result = collection.run("healthy", inventory, extravars={"marker_path": str(marker)}, check=True)
    assert result.status == "successful"
    assert result.verdict["check_mode"] is True
    assert not marker.exists()  # copy only reported what it would change
    assert result.stats["localhost"]["changed"] == 1
    command = json.load(open(os.path.join(result.artifacts_dir, "command")))["command"]
    assert "--check" in command


def test_limit_excluding_every_host_fails_cleanly(collection, inventory):
    result = collection.run("healthy", inventory, limit="nohost")
    assert result.status == "failed" and result.stats == {} and result.verdict is None
    assert "nohost" in result.stdout


def _sleep_running(seconds):
    out = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True, check=False).stdout
    return any(line.strip() == f"sleep {seconds}" for line in out.splitlines())


def test_start_streams_events_and_cancel_stops_the_run(collection, inventory):
    handle = collection.start("slow", inventory, extravars={"seconds": 171})
    events = handle.events(timeout=60)
    for event in events:
        if isinstance(event, TaskStarted) and event.task == "Sleep for a long time":
            break
    else:
        pytest.fail("the sleep task never started")
    assert not handle.done
    handle.cancel()
    result = handle.wait(timeout=60)  # far less than the 171 s sleep
    assert result.status == "canceled"
    assert not result.healthy
    rest = list(events)
    assert isinstance(rest[-1], RunFinished) and rest[-1].result is result
    assert not _sleep_running(171), "the playbook's sleep survived the cancel"


def test_timeout(collection, inventory):
    result = collection.run("slow", inventory, extravars={"seconds": 173}, timeout=3)
    assert result.status == "timeout"
    assert result.duration_seconds < 60
    assert not _sleep_running(173)


def test_rotation_keeps_the_last_n_runs(collection_root, inventory, tmp_path):
    coll = Collection(str(collection_root), artifacts_root=str(tmp_path / "runs"), rotate_artifacts=2)
    unrelated = tmp_path / "runs" / "not-a-run"
    unrelated.mkdir(parents=True)
    ids = [coll.run("broken", inventory).run_id for dummy in range(3)]
    assert sorted(os.listdir(tmp_path / "runs")) == sorted(ids[1:] + ["not-a-run"])


CTRL_C_ON_ANOTHER_THREAD = r"""
import signal, sys, threading, time
from sqlsynth_runbook.api import RunHandle

signal.signal(signal.SIGINT, signal.default_int_handler)  # also when this test runs as a background job
handle = RunHandle("slow", "run-1", "/nonexistent", None)
{wait}
unblocked = threading.Event()


def other_thread():
    time.sleep(0.3)
    signal.pthread_kill(threading.get_ident(), signal.SIGINT)  # the kernel's choice: not the main thread
    time.sleep(5)
    unblocked.set()  # a caller that did not notice the Ctrl-C is only woken by the run's next event
    handle._queue.put(None)
    handle._done.set()


threading.Thread(target=other_thread, daemon=True).start()
try:
    WAIT()
except KeyboardInterrupt:
    sys.exit(3 if unblocked.is_set() else 0)
sys.exit(4)
"""


@pytest.mark.parametrize("wait", ["def WAIT(): list(handle.events())", "def WAIT(): handle.wait()"],
                         ids=["events", "wait"])
def test_ctrl_c_interrupts_a_caller_waiting_on_the_run_even_when_sigint_lands_on_another_thread(wait):
    """Exit 0: KeyboardInterrupt before the next event; 3: only after it (the CLI hung until the task ended).

    Linux hands a process-wide SIGINT to the main thread when it can, so this is rare in a terminal; the test
    makes it certain with pthread_kill to another thread."""
    proc = subprocess.run([sys.executable, "-c", CTRL_C_ON_ANOTHER_THREAD.replace("{wait}", wait)],
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
