"""The maintenance lock: one holder at a time, bounded waits, stale holders taken over."""
import json
import os
import subprocess
import sys

from ansible_collections.sqlsynth.runbooks.plugins.module_utils import _lock


def test_second_owner_waits_then_fails_while_first_holds(tmp_path):
    path = _lock.lock_path(str(tmp_path), "postgres:db:5432/app")
    assert _lock.acquire(path, "run-a", os.getpid(), timeout=0)[0]
    ticks = iter(range(100))
    ok, holder, waited, dummy = _lock.acquire(path, "run-b", os.getpid(), timeout=3,
                                              clock=lambda: next(ticks), sleep=lambda s: None)
    assert not ok and holder["owner"] == "run-a" and waited >= 3


def test_release_lets_the_next_run_in_and_only_the_owner_releases(tmp_path):
    path = _lock.lock_path(str(tmp_path), "redis")
    _lock.acquire(path, "run-a", os.getpid(), timeout=0)
    assert _lock.release(path, "run-b") == (False, json.load(open(path)))
    assert _lock.release(path, "run-a")[0]
    assert _lock.acquire(path, "run-b", os.getpid(), timeout=0)[0]


def test_same_owner_may_take_it_again(tmp_path):
    path = _lock.lock_path(str(tmp_path), "host")
    assert _lock.acquire(path, "run-a", os.getpid(), timeout=0)[0]
    assert _lock.acquire(path, "run-a", os.getpid(), timeout=0)[0]


def test_lock_of_a_dead_run_is_taken_over(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    path = _lock.lock_path(str(tmp_path), "db")
    with open(path, "w") as handle:
        json.dump({"owner": "killed-run", "pid": dead.pid, "since": 0}, handle)
    ok, holder, dummy, stale = _lock.acquire(path, "run-b", os.getpid(), timeout=0)
    assert ok and stale and holder["owner"] == "run-b"


def test_lock_names_are_safe_file_names(tmp_path):
    path = _lock.lock_path(str(tmp_path), "../../etc/passwd postgres://x")
    assert os.path.dirname(path) == str(tmp_path)
    assert "/" not in os.path.basename(path)


def test_two_processes_racing_never_both_hold_the_lock(tmp_path):
    """Many rounds of two live processes acquiring at once: exactly one wins each time."""
    script = (
        "import sys, os\n"
        "sys.path.insert(0, %r)\n"
        "from ansible_collections.sqlsynth.runbooks.plugins.module_utils import _lock\n"
        "ok = _lock.try_acquire(sys.argv[1], sys.argv[2], os.getppid())[0]\n"
        "print('won' if ok else 'lost')\n" % os.environ["ANSIBLE_COLLECTIONS_PATH"])
    for round_no in range(40):
        path = _lock.lock_path(str(tmp_path), "race-%d" % round_no)
        procs = [subprocess.Popen([sys.executable, "-c", script, path, "run-%d" % i], stdout=subprocess.PIPE, text=True)
                 for i in range(2)]
        outcomes = sorted(p.communicate()[0].strip() for p in procs)
        assert outcomes == ["lost", "won"], "round %d: %s" % (round_no, outcomes)


def test_run_pid_is_the_topmost_playbook_process_not_the_task_fork(tmp_path):
    """A task runs in a fork of ansible-playbook: the lock must name the long-lived parent."""
    module = tmp_path / "module.py"
    module.write_text("import sys\nsys.path.insert(0, %r)\n"
                      "from ansible_collections.sqlsynth.runbooks.plugins.module_utils import _lock\n"
                      "print(_lock.run_pid())\n" % os.environ["ANSIBLE_COLLECTIONS_PATH"])
    fork = tmp_path / "fork.py"  # stands for the per-task worker, also named ansible-playbook
    fork.write_text("import subprocess\nsubprocess.run([%r, %r])\n" % (sys.executable, str(module)))
    top = tmp_path / "top.py"
    top.write_text("import subprocess, sys\n"
                   "subprocess.run(['bash', '-c', 'exec -a ansible-playbook %s %s'])\n" % (sys.executable, fork))
    proc = subprocess.Popen(["bash", "-c", "exec -a ansible-playbook %s %s" % (sys.executable, top)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out, err = proc.communicate()
    assert out.strip() == str(proc.pid), err
