"""Typed events built from ansible-runner's event dicts."""
from __future__ import annotations

import dataclasses
from typing import Any, Callable

_RESULT_EVENTS = {
    "runner_on_ok": "ok",
    "runner_on_failed": "failed",
    "runner_on_skipped": "skipped",
    "runner_on_unreachable": "unreachable",
}


@dataclasses.dataclass
class PlayStarted:
    play: str


@dataclasses.dataclass
class TaskStarted:
    play: str
    task: str


@dataclasses.dataclass
class TaskResult:
    host: str
    task: str
    status: str  # ok | changed | failed | skipped | unreachable
    msg: str = ""
    ignored: bool = False  # failed with ignore_errors


@dataclasses.dataclass
class RunFinished:
    result: Any  # RunResult


Event = PlayStarted | TaskStarted | TaskResult | RunFinished


def _message(res: dict) -> str:
    for key in ("msg", "reason", "stderr", "skip_reason"):
        value = res.get(key)
        if value:
            return value if isinstance(value, str) else str(value)
    return ""


def convert(raw: dict, scrub: Callable[[str], str]) -> Event | None:
    """Turn one ansible-runner event into a typed event (None for events we do not surface).

    Every text taken from the event passes through scrub so secrets never reach callers.
    """
    name = raw.get("event")
    data = raw.get("event_data") or {}
    if name == "playbook_on_play_start":
        return PlayStarted(play=scrub(data.get("play", "")))
    if name in ("playbook_on_task_start", "playbook_on_handler_task_start"):
        return TaskStarted(play=scrub(data.get("play", "")), task=scrub(data.get("task", "")))
    if name in _RESULT_EVENTS:
        res = data.get("res") or {}
        status = _RESULT_EVENTS[name]
        if status == "ok" and isinstance(res, dict) and res.get("changed"):
            status = "changed"
        msg = _message(res) if isinstance(res, dict) else ""
        return TaskResult(host=data.get("host", ""), task=scrub(data.get("task", "")), status=status,
                          msg=scrub(msg), ignored=bool(data.get("ignore_errors")))
    return None
