#!/usr/bin/python
# Copyright (c) 2026 sqlsynth.runbooks contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

DOCUMENTATION = r"""
module: runbook_lock
short_description: Take or release a lock per maintenance target, waiting a bounded time
version_added: 0.1.0
author: sqlsynth.runbooks contributors (@sqlsynth)
description:
  - Makes sure two runbook runs never work on the same database, Redis or host at once.
    The lock is a file created atomically in O(lock_dir) on the host the task runs on
    (run it on the controller, delegated to localhost, so every run sees the same locks).
  - The file records the owner (the run id), the pid of the C(ansible-playbook) process and
    when it was taken. A second run waits up to O(timeout) seconds, then fails with a message
    naming the holder. A lock whose run is gone (its process no longer exists) is stale and is
    taken over, so a killed run does not block maintenance forever.
  - Release it in an C(always:) section so it is freed when the steps fail.
  - The lock file is bookkeeping, not a change to the target, so the module reports C(changed=false).
attributes:
  check_mode:
    description: Can run in check mode and report what it would do without changing the target.
    support: full
    details: In check mode the lock is not taken; the module reports who holds it, if anyone.
  diff_mode:
    description: Would return details on what has changed.
    support: none
options:
  name:
    description: What is locked, for example C(postgres:db.example.com:5432/sql_synthesizer).
    type: str
    required: true
  state:
    description: C(present) takes the lock (waiting up to O(timeout)), C(absent) releases it.
    type: str
    choices: [present, absent]
    default: present
  owner:
    description: Identifies this run; a run that already holds the lock may take it again.
    type: str
    required: true
  timeout:
    description: Seconds to wait for a lock held by another live run.
    type: int
    default: 60
  lock_dir:
    description: Directory for the lock files (created when missing).
    type: path
    default: /tmp/sqlsynth-runbooks-locks
"""

EXAMPLES = r"""
- name: Lock the database for this run
  sqlsynth.runbooks.runbook_lock:
    name: "postgres:{{ sqlsynth_db_host }}:{{ sqlsynth_db_port }}/{{ sqlsynth_db_name }}"
    owner: "{{ sqlsynth_run_id }}"
    timeout: 120
  delegate_to: localhost

- name: Release it
  sqlsynth.runbooks.runbook_lock:
    name: "postgres:{{ sqlsynth_db_host }}:{{ sqlsynth_db_port }}/{{ sqlsynth_db_name }}"
    owner: "{{ sqlsynth_run_id }}"
    state: absent
  delegate_to: localhost
"""

RETURN = r"""
acquired:
  description: Whether this run holds the lock now (always false in check mode and for O(state=absent)).
  type: bool
  returned: always
released:
  description: Whether the lock was released (O(state=absent)).
  type: bool
  returned: always
waited_seconds:
  description: How long the module waited for another run's lock.
  type: float
  returned: always
took_over_stale:
  description: The lock was held by a run whose process is gone, and was taken over.
  type: bool
  returned: always
holder:
  description: The lock's record (C(owner), C(pid), C(since) as epoch seconds), or null when free.
  type: dict
  returned: always
path:
  description: The lock file.
  type: str
  returned: always
"""

import os

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.sqlsynth.runbooks.plugins.module_utils import _lock


def main():
    module = AnsibleModule(
        argument_spec=dict(
            name=dict(type="str", required=True),
            state=dict(type="str", choices=["present", "absent"], default="present"),
            owner=dict(type="str", required=True),
            timeout=dict(type="int", default=60),
            lock_dir=dict(type="path", default="/tmp/sqlsynth-runbooks-locks"),
        ),
        supports_check_mode=True,
    )
    params = module.params
    if params["timeout"] < 0:
        module.fail_json(msg="timeout must be 0 or more seconds, got %d" % params["timeout"])
    try:
        if not os.path.isdir(params["lock_dir"]) and not module.check_mode:
            os.makedirs(params["lock_dir"], 0o755)
    except OSError as exc:
        module.fail_json(msg="cannot create lock_dir %s: %s" % (params["lock_dir"], exc.strerror))
    path = _lock.lock_path(params["lock_dir"], params["name"])
    result = dict(changed=False, acquired=False, released=False, waited_seconds=0.0, took_over_stale=False,
                  holder=_lock.read_holder(path), path=path)

    if module.check_mode:
        module.exit_json(**result)
    if params["state"] == "absent":
        released, holder = _lock.release(path, params["owner"])
        result.update(released=released, holder=holder if not released else None)
        module.exit_json(**result)

    try:
        ok, holder, waited, stale = _lock.acquire(path, params["owner"], _lock.run_pid(), params["timeout"])
    except OSError as exc:
        module.fail_json(msg="cannot write lock %s: %s" % (path, exc.strerror), **result)
    result.update(acquired=ok, holder=holder, waited_seconds=waited, took_over_stale=stale)
    if not ok:
        holder = holder or {}
        module.fail_json(
            msg="%s is locked by run %s (pid %s) since %s; waited %s s. Another maintenance run is working on "
                "this target: wait for it to finish, or if that run is gone remove %s."
                % (params["name"], holder.get("owner"), holder.get("pid"), holder.get("since"), waited, path),
            **result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
