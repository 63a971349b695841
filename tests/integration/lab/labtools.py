"""Helpers for tests against the real local lab: run playbooks, switch faults, hold the lab lock."""
import contextlib
import fcntl
import os
import re
import subprocess

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
VENV_BIN = os.path.join(ROOT, ".venv", "bin")
LOCK_PATH = "/tmp/sqlsynth-lab.lock"
LAB_ROOT = "/opt/sqlsynth-lab"
ENV = dict(os.environ,
           ANSIBLE_CONFIG=os.path.join(ROOT, "ansible.cfg"),
           ANSIBLE_COLLECTIONS_PATH=os.path.join(ROOT, ".build", "collections"),
           ANSIBLE_NOCOLOR="1", ANSIBLE_FORCE_COLOR="0",
           PATH=VENV_BIN + os.pathsep + os.environ.get("PATH", ""))


@contextlib.contextmanager
def lab_lock():
    """Hold the shared lab lock (other test runs and fault experiments take it too)."""
    with open(LOCK_PATH, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def run_playbook(playbook, *args, extra=None, check=False, inventory="inventories/lab", timeout=600, env=None):
    """Run ansible-playbook from the checkout; returns the CompletedProcess (stdout+stderr merged)."""
    cmd = [os.path.join(VENV_BIN, "ansible-playbook"), playbook, "-i", inventory]
    for key, value in (extra or {}).items():
        cmd += ["-e", "%s=%s" % (key, value)]
    if check:
        cmd.append("--check")
    cmd += list(args)
    return subprocess.run(cmd, cwd=ROOT, env=dict(ENV, **(env or {})), stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, timeout=timeout, check=False)


def recap(output):
    """The PLAY RECAP counters for localhost as a dict of ints."""
    match = re.search(r"^localhost\s+:\s+(.*)$", output, re.M)
    assert match, "no PLAY RECAP in output:\n" + output[-3000:]
    return {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", match.group(1))}


def lab_fault(fault, state, **extra):
    result = run_playbook("sqlsynth.runbooks.lab_fault", extra=dict(fault=fault, state=state, **extra))
    assert result.returncode == 0, "lab_fault %s=%s failed:\n%s" % (fault, state, result.stdout[-3000:])
    return result


@contextlib.contextmanager
def injected(fault, **extra):
    """Switch a lab fault on for the body of the with-block, and always back off."""
    lab_fault(fault, "on", **extra)
    try:
        yield
    finally:
        lab_fault(fault, "off")


def assert_no_traceback(output):
    assert "Traceback (most recent call last)" not in output, output[-4000:]


def files_containing(top, needles):
    """'<needle head> in <path>' for every file under top holding one of needles (a str or a list of them)."""
    needles = [needles] if isinstance(needles, str) else list(needles)
    hits = []
    for directory, _dirs, names in os.walk(top):
        for name in names:
            path = os.path.join(directory, name)
            try:
                with open(path, "rb") as handle:
                    data = handle.read().decode("utf-8", "replace")
            except OSError:
                continue
            hits += ["%s in %s" % (needle[:12], path) for needle in needles if needle in data]
    return hits
