# Copyright (c) 2026 sqlsynth.runbooks contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Run timeline: phases, short secret-free summaries, and the incident report and post-mortem draft.

The ``sqlsynth.runbooks.timeline`` callback feeds task results in; everything that decides what is
recorded and how it reads lives here, so it can be tested without running a playbook.

What is recorded is chosen by whitelist: a task's name, host, status, and from its result only
``msg`` (trimmed), ``verdict``, ``broken`` and ``summary``; never module arguments, stdout or facts.
Values of variables whose names look secret are collected while the run goes and replaced by MASK
in everything written, and set_stats data has the values of secret-looking keys masked.
"""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import datetime
import json
import os
import re
import tempfile

from jinja2 import ChainableUndefined, Environment

MASK = "********"
SECRET_NAME = re.compile(r"passw|token|secret|key|credential|webhook|authorization", re.IGNORECASE)
# Notification endpoints carry their token in the URL (Slack-style webhooks) or in headers: under a key like
# these, every `url` and `headers` value is secret too, whatever its own name.
ENDPOINT_PARENT = re.compile(r"notify|channel|hook|receiver", re.IGNORECASE)
ENDPOINT_KEYS = ("url", "headers")
# "password=hunter2", "token: abc" in free text: the value goes, the name stays.
SECRET_ASSIGNMENT = re.compile(r"((?:passw\w*|token|secret|api[_-]?key|credential\w*)\s*[=:]\s*)([^\s,;'\"]+)",
                               re.IGNORECASE)
# userinfo in URLs (https://user:pass@host) and query tokens (?token=..., &sig=...)
URL_USERINFO = re.compile(r"(\b[a-z][a-z0-9+.-]*://)[^/\s@:]+:[^/\s@]+@", re.IGNORECASE)
MIN_SECRET_LENGTH = 4  # masking "1" or "no" everywhere would wreck the record
MSG_LIMIT = 200

# Task-name prefixes of the runbook playbooks (CONTRIBUTING.md, engineering.md), first match wins.
PHASE_PREFIXES = (
    ("prerequisites", ("prerequisite", "preflight")),
    ("found", ("triage", "diagnos")),
    ("rollback", ("rollback",)),
    ("verified", ("verif",)),
    ("done", ("step",)),
)
PHASES = ("prerequisites", "found", "done", "verified", "rollback", "other")
SUMMARY_KEYS = ("verdict", "broken", "summary")


def utcnow():
    return datetime.datetime.now(datetime.timezone.utc)


def isoformat(moment):
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def bare_name(name):
    """'role_name : Verify | Probe' -> 'Verify | Probe'."""
    name = (name or "").strip()
    head, sep, tail = name.partition(" : ")
    return tail.strip() if sep and " " not in head.strip() else name


def phase_of(names):
    """The phase of a task from its own name, then its blocks', includes' and role's names, inside out."""
    for name in names:
        lowered = bare_name(name).lower()
        for phase, prefixes in PHASE_PREFIXES:
            if lowered.startswith(prefixes):
                return phase
    return "other"


def _leaves(value):
    if isinstance(value, dict):
        for item in value.values():
            yield from _leaves(item)
    elif isinstance(value, (list, tuple, set)):
        for item in value:
            yield from _leaves(item)
    elif value is not None and not isinstance(value, (bool, int, float)):
        yield str(value)


def _secret_leaves(value, secret=False, endpoint=False):
    """Leaves under a secret-looking name at any depth, and the endpoint URLs/headers of notification channels."""
    if isinstance(value, dict):
        for key, item in value.items():
            name = str(key)
            yield from _secret_leaves(
                item, secret or bool(SECRET_NAME.search(name)) or (endpoint and name.lower() in ENDPOINT_KEYS),
                endpoint or bool(ENDPOINT_PARENT.search(name)))
    elif isinstance(value, (list, tuple, set)):
        for item in value:
            yield from _secret_leaves(item, secret, endpoint)
    elif secret:
        yield from _leaves(value)


def secret_values(variables):
    """Values of the variables whose names look secret, at any depth (with notification endpoints), long enough to mask."""
    return set(leaf for leaf in _secret_leaves(variables or {}) if len(leaf) >= MIN_SECRET_LENGTH and "{{" not in leaf)


class Redactor:
    """Replaces known secret values and secret-looking assignments in text and in nested data."""

    def __init__(self, values=()):
        self.values = set()
        self.add(values)

    def add(self, values):
        for value in values:
            value = str(value)
            if len(value) >= MIN_SECRET_LENGTH:
                self.values.add(value)
                self.values.add(json.dumps(value)[1:-1])  # as it appears inside a JSON string

    def text(self, text):
        text = str(text)
        for value in sorted(self.values, key=len, reverse=True):
            if value in text:
                text = text.replace(value, MASK)
        text = URL_USERINFO.sub(lambda m: m.group(1) + MASK + "@", text)
        return SECRET_ASSIGNMENT.sub(lambda m: m.group(1) + MASK, text)

    def data(self, value, secret=False):
        """A copy of value with strings redacted and every leaf under a secret-looking key masked."""
        if isinstance(value, dict):
            return dict((str(k), self.data(v, secret or (isinstance(k, str) and bool(SECRET_NAME.search(k)))))
                        for k, v in value.items())
        if isinstance(value, (list, tuple, set)):
            return [self.data(v, secret) for v in value]
        if value is None or isinstance(value, (bool, int, float)):
            return value
        if secret and value != "":
            return MASK
        return self.text(value)


def _short(value, limit=MSG_LIMIT):
    if isinstance(value, (list, tuple)):
        value = "; ".join(str(v) for v in value)
    elif isinstance(value, dict):
        value = ", ".join("%s=%s" % (k, v) for k, v in value.items() if not isinstance(v, (dict, list)))
    text = " ".join(str(value).split())
    return text if len(text) <= limit else text[:limit - 3].rstrip() + "..."


def summarize(result, status):
    """A short summary of one task result, from whitelisted keys only (never module arguments)."""
    result = result or {}
    if result.get("censored") or result.get("_ansible_no_log"):
        return "output hidden (no_log)"
    parts = []
    stats = result.get("ansible_stats")
    if isinstance(stats, dict) and isinstance(stats.get("data"), dict):
        parts.append("published " + ", ".join(sorted(stats["data"])))
    facts = result.get("ansible_facts")
    if isinstance(facts, dict) and facts and "msg" not in result and not parts:
        parts.append("set " + ", ".join(sorted(facts)))
    for key in SUMMARY_KEYS:
        if key in result and result[key] not in (None, "", [], {}):
            parts.append("%s: %s" % (key, _short(result[key], 80)))
    if result.get("msg") not in (None, "", []):
        parts.append(_short(result["msg"]))
    if status == "failed" and isinstance(result.get("rc"), int):
        parts.append("rc %d" % result["rc"])
    if not parts and status == "skipped":
        reason = result.get("skip_reason") or result.get("false_condition")
        if reason:
            parts.append("skipped: %s" % _short(reason, 80))
    if not parts and isinstance(result.get("results"), list):
        items = result["results"]
        parts.append("%d item(s), %d changed, %d failed" % (
            len(items), sum(1 for i in items if isinstance(i, dict) and i.get("changed")),
            sum(1 for i in items if isinstance(i, dict) and i.get("failed"))))
    return _short(" | ".join(parts)) if parts else ""


def status_of(result, event):
    """ok | changed | failed | ignored | skipped | unreachable."""
    if event in ("failed", "ignored", "skipped", "unreachable"):
        return event
    return "changed" if (result or {}).get("changed") else "ok"


def find_key(data, wanted):
    """The first value of key `wanted` anywhere in nested data (None when absent)."""
    if isinstance(data, dict):
        if data.get(wanted) not in (None, ""):
            return data[wanted]
        values = data.values()
    elif isinstance(data, (list, tuple)):
        values = data
    else:
        return None
    for value in values:
        found = find_key(value, wanted)
        if found is not None:
            return found
    return None


def build_document(run, redactor):
    """The timeline document (what timeline.json holds) from the callback's record, redacted."""
    entries = run.get("entries") or []
    stats_data = run.get("stats_data") or {}
    hosts = run.get("hosts") or {}
    verdict = stats_data.get("sqlsynth_verdict") if isinstance(stats_data.get("sqlsynth_verdict"), dict) else None
    failed = any(h.get("failures") or h.get("unreachable") for h in hosts.values()) or run.get("interrupted")
    started, ended = run.get("started"), run.get("ended")
    duration = None
    if started and ended:
        duration = round((_parse(ended) - _parse(started)).total_seconds(), 3)
    doc = {
        "version": 1,
        "run_id": run.get("run_id"),
        "playbook": run.get("playbook"),
        "plays": run.get("plays") or [],
        "check_mode": bool(run.get("check_mode")),
        "started": started,
        "ended": ended,
        "duration_seconds": duration,
        "status": "failed" if failed else "successful",
        "hosts": hosts,
        "verdict": verdict,
        "severity": find_key(stats_data, "severity"),
        "notifications": stats_data.get("sqlsynth_notifications"),
        "incident": stats_data.get("sqlsynth_incident") if isinstance(stats_data.get("sqlsynth_incident"), dict) else None,
        "stats_data": stats_data,
        "entries": entries,
        "failed_tasks": [dict(ts=e["ts"], host=e["host"], task=e["task"], phase=e["phase"], msg=e["summary"],
                              ignored=e["status"] == "ignored", rescued=bool(e.get("rescued")))
                         for e in entries if e["status"] in ("failed", "ignored", "unreachable")],
    }
    return redactor.data(doc)


def _parse(stamp):
    return datetime.datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S.%fZ")


def _cell(value):
    text = " ".join(str("" if value is None else value).split())
    return text.replace("\\", "\\\\").replace("|", "\\|")


def _time(stamp):
    return stamp[11:19] if stamp else ""


def summary_line(doc):
    verdict = doc.get("verdict") or {}
    changes = sum(1 for e in doc["entries"] if e["status"] == "changed")
    failures = sum(1 for e in doc["failed_tasks"] if not e["ignored"])
    rescued = sum(1 for e in doc["failed_tasks"] if e["rescued"])
    text = "%s run %s %s in %ss" % (doc.get("playbook"), doc.get("run_id"), doc["status"], doc.get("duration_seconds"))
    if verdict:
        text += ": verdict %s" % verdict.get("verdict")
        if verdict.get("broken"):
            text += " (broken: %s)" % ", ".join(str(b) for b in verdict["broken"])
    else:
        text += ": no verdict published"
    text += "; %d change(s), %d failed task(s)" % (changes, failures)
    if rescued:
        text += " (%d rescued)" % rescued
    if doc.get("check_mode"):
        text += " (check mode: nothing was changed)"
    return text


def root_cause_candidates(doc):
    """Candidates, likeliest first: an incident run's findings, broken components with their failed signals, then failed tasks."""
    verdict = doc.get("verdict") or {}
    signals = [s for s in verdict.get("signals") or [] if isinstance(s, dict) and not s.get("ok")]
    incident = doc.get("incident") or {}
    reasons = ["%s: %s" % (step.get("action"), step.get("reason")) for step in incident.get("plan") or [] if isinstance(step, dict)]
    candidates = [{"what": str(problem), "evidence": reasons if i == 0 else []}
                  for i, problem in enumerate(incident.get("problems") or [])]
    for component in verdict.get("broken") or []:
        details = ["%s: %s" % (s.get("name"), s.get("detail")) for s in signals if s.get("component") == component]
        candidates.append({"what": "%s is broken" % component, "evidence": details})
    for text in verdict.get("disagreements") or []:
        candidates.append({"what": "signals disagree", "evidence": [text]})
    for failure in doc["failed_tasks"]:
        evidence = "%s on %s at %s: %s" % (failure["phase"], failure["host"], failure["ts"], failure["msg"])
        candidates.append({"what": "task failed: %s" % failure["task"], "evidence": [evidence]})
    return candidates


def first_ts(doc, phase=None, status=None):
    for entry in doc["entries"]:
        if (phase is None or entry["phase"] == phase) and (status is None or entry["status"] in status):
            return entry["ts"]
    return None


REPORT_TEMPLATE = """\
# Incident report: {{ doc.playbook }}

**{{ summary }}**

| Field | Value |
|---|---|
| Run | `{{ doc.run_id }}` |
| Playbook | {{ doc.playbook | cell }} |
| Started (UTC) | {{ doc.started }} |
| Ended (UTC) | {{ doc.ended }} ({{ doc.duration_seconds }} s) |
| Status | {{ doc.status }}{% if doc.check_mode %} (check mode){% endif %} |
| Verdict | {{ (doc.verdict or {}).get('verdict', 'none published') }} |
{% if doc.severity %}| Severity | {{ doc.severity | cell }} |
{% endif %}

## Verdict

{% if doc.verdict %}
{{ doc.verdict.summary or doc.verdict.verdict }}

{% for s in doc.verdict.signals or [] if s is mapping and not s.ok %}
- {{ s.name }} ({{ s.component }}): {{ s.detail }}
{% else %}
- every signal passed
{% endfor %}
{% else %}
No verdict was published: the run did not reach (or does not have) a verification step.
{% endif %}

## Timeline

| Time (UTC) | Phase | Host | Task | Status | Summary |
|---|---|---|---|---|---|
{% for e in shown %}
| {{ e.ts | hms }} | {{ e.phase }} | {{ e.host | cell }} | {{ e.task | cell }} | {{ e.status }} | {{ e.summary | cell }} |
{% endfor %}
{% if skipped %}

{{ skipped }} skipped task result(s) are in timeline.json only.
{% endif %}

## Findings

{% for e in doc.entries if e.phase == 'found' and e.status != 'skipped' %}
- {{ e.ts | hms }} {{ e.task }} ({{ e.host }}): {{ e.summary or e.status }}
{% else %}
- no triage or diagnostic task ran
{% endfor %}

## Actions taken

{% for e in doc.entries if e.status == 'changed' and e.phase != 'prerequisites' %}
- {{ e.ts | hms }} [{{ e.phase }}] {{ e.task }} ({{ e.host }}){% if e.summary %}: {{ e.summary }}{% endif %}

{% else %}
- no change was made{% if doc.check_mode %} (check mode){% endif %}

{% endfor %}
{% if doc.failed_tasks %}

## Failed tasks

{% for f in doc.failed_tasks %}
- {{ f.ts | hms }} [{{ f.phase }}] {{ f.task }} ({{ f.host }}){% if f.ignored %} (ignored){% elif f.rescued %} (rescued){% endif %}: {{ f.msg }}
{% endfor %}
{% endif %}

## Verification

{% for e in doc.entries if e.phase == 'verified' and e.status != 'skipped' %}
- {{ e.ts | hms }} {{ e.task }} ({{ e.host }}): {{ e.status }}{% if e.summary %} - {{ e.summary }}{% endif %}

{% else %}
- no verification task ran
{% endfor %}
{% if doc.notifications %}

## Notifications

{% for n in doc.notifications if n is mapping %}
- {% for k, v in n.items() if v is not mapping and (v is string or v is number) %}{{ k }}: {{ v }}{{ ', ' if not loop.last }}{% endfor %}

{% endfor %}
{% endif %}
"""

POSTMORTEM_TEMPLATE = """\
# Post-mortem (draft): {{ doc.playbook }} run {{ doc.run_id }}

Drafted from the run's timeline on {{ doc.ended }}. Lines in _italics_ are prompts to replace.

## 1. Incident Summary

{{ summary }}

### Timeline of events

| Time (UTC) | Phase | Task | Host | Status |
|---|---|---|---|---|
{% for e in shown %}
| {{ e.ts }} | {{ e.phase }} | {{ e.task | cell }} | {{ e.host | cell }} | {{ e.status }} |
{% endfor %}

### Impact assessment

- Verdict at the end of the run: {{ (doc.verdict or {}).get('verdict', 'none published') }}
{% if doc.verdict and doc.verdict.broken %}
- Components broken: {{ doc.verdict.broken | join(', ') }}
{% endif %}
{% if doc.severity %}
- Severity: {{ doc.severity }}
{% endif %}
- _Users and requests affected, duration of the impact, data lost or at risk:_

### Response timeline

- Run started: {{ doc.started }}
- First finding: {{ milestones.found or 'none recorded' }}
- First action: {{ milestones.action or 'none taken' }}
- Verification: {{ milestones.verified or 'none recorded' }}
- Run ended: {{ doc.ended }} ({{ doc.duration_seconds }} s, status {{ doc.status }})
- _When was the incident detected, and by whom or what?_

## 2. Root Cause Analysis

### Technical root cause

{% for c in candidates %}
{{ loop.index }}. Candidate: {{ c.what }}
{% for ev in c.evidence %}
   - {{ ev }}
{% endfor %}
{% else %}
_No candidate in the run's data (no broken component, no failed task): what caused the incident?_
{% endfor %}

_Confirm or reject each candidate; state the root cause._

### Contributing factors

- _What made it worse or harder to fix (load, a recent change, a missing limit)?_

### Why detection was delayed

- _Time from the first user impact to the alert, and to this run ({{ doc.started }})?_

## 3. Action Items

### Immediate fixes

{% for d in (doc.incident or {}).get('done') or [] if d is mapping %}
- [x] {{ d.summary }} (because {{ d.reason }})
{% endfor %}
{% for e in actions %}
- [x] {{ e.task }} ({{ e.host }}, {{ e.ts }})
{% endfor %}
{% for component in open_components %}
- [ ] Fix {{ component }}: still broken at the end of the run
{% endfor %}
{% if not actions and not open_components %}
- _None taken by the run: list the fixes made by hand._
{% endif %}

### Preventive measures

{% for c in (doc.verdict or {}).get('broken') or [] %}
- [ ] _Alerting and capacity for {{ c }} so this is caught before users notice_
{% else %}
- [ ] _Monitoring or limits that would have prevented this_
{% endfor %}

### Process improvements

{% for f in doc.failed_tasks if not f.ignored %}
- [ ] Runbook {{ doc.playbook }}: handle the failure of "{{ f.task }}"
{% endfor %}
- [ ] _Runbook, escalation or communication changes_

## 4. Lessons Learned

### What went well

- _e.g. {{ 'verification passed at ' ~ milestones.verified if milestones.verified else 'what helped' }}_

### What could be improved

- _What slowed the response?_

### Knowledge gaps identified

- _What did responders not know, and where should it be documented?_
"""


def _environment():
    env = Environment(undefined=ChainableUndefined, trim_blocks=True, lstrip_blocks=True,
                      keep_trailing_newline=True, autoescape=False)
    env.filters["cell"] = _cell
    env.filters["hms"] = _time
    return env


def render(doc, redactor=None):
    """{'report.md': text, 'postmortem.md': text} for a timeline document."""
    env = _environment()
    shown = [e for e in doc["entries"] if e["status"] != "skipped"]
    verdict = doc.get("verdict") or {}
    context = {
        "doc": doc,
        "summary": summary_line(doc),
        "shown": shown,
        "skipped": len(doc["entries"]) - len(shown),
        "candidates": root_cause_candidates(doc),
        "actions": [e for e in shown if e["status"] == "changed" and e["phase"] != "prerequisites"],
        "open_components": list(verdict.get("broken") or []) if verdict.get("verdict") != "healthy" else [],
        "milestones": {
            "found": first_ts(doc, "found"),
            "action": first_ts(doc, None, ("changed",)),
            "verified": first_ts(doc, "verified", ("ok", "changed")),
        },
    }
    out = {}
    for name, template in (("report.md", REPORT_TEMPLATE), ("postmortem.md", POSTMORTEM_TEMPLATE)):
        text = env.from_string(template).render(**context)
        out[name] = redactor.text(text) if redactor else text
    return out


def safe_name(run_id):
    """A run id usable as one directory name."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", str(run_id or "")).strip("._")
    return name or "run"


def _write(path, text):
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".tmp-")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_run(output_dir, run, redactor):
    """Write timeline.json, report.md and postmortem.md; return {name: path}."""
    doc = build_document(run, redactor)
    directory = os.path.join(os.path.abspath(os.path.expanduser(output_dir)), safe_name(doc["run_id"]))
    os.makedirs(directory, mode=0o700, exist_ok=True)
    files = {"timeline.json": redactor.text(json.dumps(doc, indent=2, sort_keys=False, default=str) + "\n")}
    files.update(render(doc, redactor))
    paths = {}
    for name, text in files.items():
        paths[name] = os.path.join(directory, name)
        _write(paths[name], text)
    return paths
