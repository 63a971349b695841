# Copyright (c) 2026 sqlsynth.runbooks contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

DOCUMENTATION = r"""
name: timeline
type: notification
short_description: Record a runbook run as a timeline, an incident report and a post-mortem draft
description:
  - Records every run of a playbook - playbook, run id, start and end, and one entry per task result
    C({ts, phase, host, task, status, summary}) - together with the data published with
    M(ansible.builtin.set_stats) (C(sqlsynth_verdict), C(sqlsynth_notifications) and any other) and the failed tasks.
  - The phase comes from the task name's prefix convention of the runbooks, looked up on the task, then on its
    enclosing blocks, includes and role - C(Prerequisites)/C(Preflight) give C(prerequisites),
    C(Triage)/C(Diagnos...) give C(found), C(Step)/C(Steps) give C(done), C(Verify)/C(Verification) give
    C(verified), C(Rollback) gives C(rollback); anything else is C(other).
  - Summaries are short and come only from whitelisted result keys (C(changed), C(failed), C(msg) trimmed,
    C(verdict), C(broken), C(summary)); module arguments, stdout and facts are never copied. Values of variables
    whose names look secret (password, token, secret, key, credential, webhook) are masked in everything written,
    as are the values of secret-looking keys in set_stats data. Results of C(no_log) tasks are not summarized.
  - At the end of the playbook it writes C(<output_dir>/<run_id>/timeline.json), C(report.md) (incident report -
    summary line, verdict, timeline table, findings, actions taken, verification) and C(postmortem.md) (post-mortem
    draft following the runbooks' template - incident summary, root cause candidates from the broken components
    and failed signals of the verdict and from failed tasks, action items, lessons learned), and prints their
    paths on one line.
  - The run id is the C(sqlsynth_run_id) fact set by the C(sqlsynth.runbooks.preflight) role when the run sets it,
    else the C(SQLSYNTH_RUNBOOK_RUN_ID) environment variable (set by the sqlsynth-runbook runner), else a
    generated one.
  - Enable it with C(callbacks_enabled = sqlsynth.runbooks.timeline) in C(ansible.cfg) or
    C(ANSIBLE_CALLBACKS_ENABLED=sqlsynth.runbooks.timeline). In AWX, add the same variable to the job template's
    environment (Settings, Jobs, Extra Environment Variables) with C(SQLSYNTH_TIMELINE_DIR) pointing at a persistent
    volume, or read the files from the job's artifacts directory.
author: sqlsynth.runbooks contributors (@sqlsynth)
version_added: 0.1.0
requirements:
  - jinja2 (a dependency of ansible-core)
options:
  output_dir:
    description:
      - Directory under which each run gets a C(<run_id>) directory (created with mode 0700, files 0600).
    type: path
    default: ~/.cache/sqlsynth-runbook/timelines
    env:
      - name: SQLSYNTH_TIMELINE_DIR
    ini:
      - section: callback_timeline
        key: output_dir
"""

import datetime
import os
import uuid

from ansible import context
from ansible.plugins.callback import CallbackBase

from ansible_collections.sqlsynth.runbooks.plugins.plugin_utils._timeline import (
    Redactor, isoformat, phase_of, secret_values, status_of, summarize, utcnow, write_run,
)

RUN_ID_FACT = "sqlsynth_run_id"
RUN_ID_ENV = "SQLSYNTH_RUNBOOK_RUN_ID"
MAX_PARENTS = 50


def _result_of(result):
    data = getattr(result, "result", None)
    return data if isinstance(data, dict) else result._result


def _task_of(result):
    return getattr(result, "task", None) or result._task


def _host_of(result):
    return getattr(result, "host", None) or result._host


def _rescued(task):
    """True when a failure of this task is caught by the rescue section of an enclosing block."""
    child, parent = task, getattr(task, "_parent", None)
    for dummy in range(MAX_PARENTS):
        if parent is None:
            return False
        if getattr(parent, "rescue", None) and any(
                getattr(c, "_uuid", None) == getattr(child, "_uuid", False) for c in getattr(parent, "block", None) or []):
            return True
        child, parent = parent, getattr(parent, "_parent", None)
    return False


INCLUDE_ACTIONS = frozenset(("include_role", "import_role", "include_tasks", "import_tasks", "ansible.builtin.include_role",
                             "ansible.builtin.import_role", "ansible.builtin.include_tasks",
                             "ansible.builtin.import_tasks"))


def _plain_name(obj):
    """A task's or role's name without the collection prefix (IncludeRole.get_name takes no options)."""
    if not hasattr(obj, "get_name"):
        return str(obj)
    try:
        return str(obj.get_name(include_role_fqcn=False))
    except TypeError:
        return str(obj.get_name())


def _names(task):
    """The task's own name, then the names of its enclosing blocks and includes, then its role's name."""
    names, node, role = [], task, None
    for dummy in range(MAX_PARENTS):
        if node is None:
            break
        name = getattr(node, "name", None)
        if name:
            names.append(str(name))
        role = role or getattr(node, "_role", None)
        node = getattr(node, "_parent", None)
    if role is not None:
        names.append(_plain_name(role))
    return names


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "notification"
    CALLBACK_NAME = "sqlsynth.runbooks.timeline"
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self, *args, **kwargs):
        super(CallbackModule, self).__init__(*args, **kwargs)
        self._redactor = Redactor()
        self._last = None
        self._run = {"entries": [], "plays": [], "hosts": {}, "stats_data": {}, "run_id": None}

    def _now(self):
        """Timestamps never go backwards, even when the clock does."""
        now = utcnow()
        if self._last is not None and now < self._last:
            now = self._last
        self._last = now
        return isoformat(now)

    # -- run -----------------------------------------------------------------------------------------
    def v2_playbook_on_start(self, playbook):
        self._run["playbook"] = os.path.basename(getattr(playbook, "_file_name", "") or "") or "playbook"
        self._run["started"] = self._now()
        self._run["check_mode"] = bool((context.CLIARGS or {}).get("check"))

    def v2_playbook_on_play_start(self, play):
        self._run["plays"].append(play.get_name())
        try:
            manager = play.get_variable_manager()
            self._redactor.add(secret_values(manager.extra_vars))
            inventory = getattr(manager, "_inventory", None)
            hosts = inventory.get_hosts(play.hosts) if inventory is not None else []
            for host in hosts:
                variables = manager.get_vars(play=play, host=host)
                self._redactor.add(secret_values(dict((k, v) for k, v in variables.items()
                                                      if isinstance(k, str) and k not in ("hostvars", "vars"))))
                if not self._run["run_id"] and variables.get(RUN_ID_FACT) and "{{" not in str(
                        variables.get(RUN_ID_FACT)):
                    self._run["run_id"] = str(variables[RUN_ID_FACT])
        except Exception as exc:  # collecting secrets must never stop the run; facts are still collected below
            self._display.warning("sqlsynth.runbooks.timeline: could not read the play's variables: %s"
                                  % type(exc).__name__)

    def _record(self, result, event):
        data = _result_of(result)
        task = _task_of(result)
        facts = data.get("ansible_facts")
        if isinstance(facts, dict):
            self._redactor.add(secret_values(facts))
            if facts.get(RUN_ID_FACT):
                self._run["run_id"] = str(facts[RUN_ID_FACT])
        if getattr(task, "action", "") in INCLUDE_ACTIONS and event != "failed":
            return  # a container: the tasks it includes are recorded themselves
        status = status_of(data, event)
        entry = {
            "ts": self._now(),
            "phase": phase_of(_names(task)),
            "host": _host_of(result).get_name(),
            "task": _plain_name(task),
            "status": status,
            "summary": self._redactor.text(summarize(data, status)),
        }
        if status == "failed":
            entry["rescued"] = _rescued(task)
        self._run["entries"].append(entry)

    def v2_runner_on_ok(self, result):
        self._record(result, "ok")

    def v2_runner_on_failed(self, result, ignore_errors=False):
        self._record(result, "ignored" if ignore_errors else "failed")

    def v2_runner_on_skipped(self, result):
        self._record(result, "skipped")

    def v2_runner_on_unreachable(self, result):
        self._record(result, "unreachable")

    def v2_playbook_on_stats(self, stats):
        self._run["ended"] = self._now()
        for host in sorted(stats.processed):
            summary = stats.summarize(host)
            self._run["hosts"][host] = dict((k, summary.get(k, 0)) for k in (
                "ok", "changed", "failures", "unreachable", "skipped", "rescued", "ignored"))
        custom = getattr(stats, "custom", None) or {}
        data = dict(custom.get("_run") or {})
        per_host = dict((h, v) for h, v in custom.items() if h != "_run")
        if per_host:
            data["per_host"] = per_host
        self._run["stats_data"] = data
        self._run["run_id"] = self._run["run_id"] or os.environ.get(RUN_ID_ENV) or "%s-%s-%s" % (
            os.path.splitext(self._run.get("playbook") or "run")[0],
            datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ"), uuid.uuid4().hex[:6])
        try:
            paths = write_run(self.get_option("output_dir"), self._run, self._redactor)
        except Exception as exc:  # a full disk must not turn a finished run into a traceback
            self._display.warning("sqlsynth.runbooks.timeline: could not write the timeline: %s" % exc)
            return
        # stderr: stdout may be a machine-readable stream (json callback, ansible-runner).
        self._display.display("TIMELINE: %s  REPORT: %s  POST-MORTEM: %s" % (
            paths["timeline.json"], paths["report.md"], paths["postmortem.md"]), stderr=True)
