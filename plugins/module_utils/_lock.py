# Copyright (c) 2026 sqlsynth.runbooks contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""A lock per maintenance target that outlives one task: a file created with O_EXCL.

The file records who holds it (owner, the pid of the ansible-playbook process, since when).
A holder whose process is gone is stale and is taken over, so a killed run does not block
the next one forever; a live holder makes the caller wait a bounded time and then fail.
"""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import errno
import json
import os
import re
import time

RUNNER_NAMES = ("ansible-playbook", "ansible-runner", "ansible-navigator", "molecule")


def lock_path(lock_dir, name):
    """File name for the lock ``name`` (any text) inside ``lock_dir``."""
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_") or "lock"
    return os.path.join(lock_dir, safe + ".lock")


def _cmdline(pid):
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as handle:
            return handle.read().replace(b"\0", b" ").decode("utf-8", "replace")
    except (IOError, OSError):
        return ""


def _parent(pid):
    try:
        with open("/proc/%d/stat" % pid) as handle:
            return int(handle.read().rsplit(")", 1)[1].split()[1])
    except (IOError, OSError, ValueError, IndexError):
        return 0


def run_pid(start=None):
    """The pid of the ansible-playbook (or runner) process this module runs under, else our parent.

    Ansible runs each task in a short-lived fork of ansible-playbook whose command line is the
    same, so the walk goes on to the topmost matching ancestor: the run itself.
    """
    pid = start or os.getpid()
    first_parent = _parent(pid)
    found = 0
    while pid > 1:
        if any(name in _cmdline(pid) for name in RUNNER_NAMES):
            found = pid
        elif found:
            break
        pid = _parent(pid)
    return found or first_parent or os.getpid()


def alive(pid):
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except OSError as exc:
        return exc.errno == errno.EPERM
    return True


def read_holder(path):
    try:
        with open(path) as handle:
            return json.load(handle)
    except (IOError, OSError, ValueError):
        return None


def _publish(path, record):
    """Create ``path`` holding ``record`` atomically: it never exists empty or half written.

    The record goes to a private temporary file first, which is then hard-linked to the lock
    name; link() fails with EEXIST when someone else holds the lock.
    """
    tmp = "%s.%d.%d.tmp" % (path, os.getpid(), int(time.time() * 1e6))
    with open(tmp, "w") as handle:
        json.dump(record, handle)
    try:
        os.link(tmp, path)
        return True
    except OSError as exc:
        if exc.errno != errno.EEXIST:
            raise
        return False
    finally:
        os.unlink(tmp)


def try_acquire(path, owner, pid, now=None):
    """One attempt. Returns (acquired, holder, took_over_stale)."""
    record = {"owner": owner, "pid": pid, "since": now or time.time()}
    stale = False
    for dummy in range(2):
        if _publish(path, record):
            return True, record, stale
        holder = read_holder(path)
        if holder and holder.get("owner") == owner:
            return True, holder, False
        if holder is None and os.path.exists(path):
            # Unreadable but present: never half written (see _publish), so it is damaged; treat
            # it as held until it is older than a minute, then as stale.
            try:
                if time.time() - os.path.getmtime(path) < 60:
                    return False, {"owner": "unknown (unreadable lock file)", "pid": None}, False
            except OSError:
                continue
        elif holder and alive(holder.get("pid")):
            return False, holder, False
        # The holder's run is gone: take the lock over. Renaming it aside first means that of
        # two runs racing to take over, only one removes it.
        aside = "%s.stale.%d" % (path, os.getpid())
        try:
            os.rename(path, aside)
            os.unlink(aside)
        except OSError:
            pass
        stale = True
    return False, read_holder(path), False


def acquire(path, owner, pid, timeout, interval=0.5, clock=time.monotonic, sleep=time.sleep):
    """Wait up to ``timeout`` seconds. Returns (acquired, holder, waited_seconds, took_over_stale)."""
    started = clock()
    while True:
        ok, holder, stale = try_acquire(path, owner, pid)
        waited = round(clock() - started, 2)
        if ok or waited >= timeout:
            return ok, holder, waited, stale
        sleep(min(interval, max(0.0, timeout - waited)))


def release(path, owner):
    """Remove the lock if ``owner`` holds it. Returns (released, holder)."""
    holder = read_holder(path)
    if holder is None:
        return False, None
    if holder.get("owner") != owner:
        return False, holder
    os.unlink(path)
    return True, holder
