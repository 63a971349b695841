"""Secret scrubbing for run artifacts.

Values of extra variables whose key looks secret, and any value the caller names as secret, are
replaced by MASK in every file of a run's private data dir once the run has ended, and in the
texts of the events handed to callers while it runs.
"""
from __future__ import annotations

import json
import os
import re
from typing import Any, Iterable

MASK = "********"
SECRET_KEY = re.compile(r"passw|token|secret|key|credential|webhook|authorization", re.IGNORECASE)
# Notification endpoints carry their token in the URL itself (Slack-style webhooks) or in headers: under a
# key like these, every `url` and `headers` value is secret too, whatever its own name.
ENDPOINT_PARENT = re.compile(r"notify|channel|hook|receiver", re.IGNORECASE)
ENDPOINT_KEYS = ("url", "headers")
# Shorter values are not replaced: masking "1" or "no" everywhere would wreck the artifacts.
MIN_LENGTH = 4


def _leaves(value: Any) -> Iterable[str]:
    if isinstance(value, dict):
        for item in value.values():
            yield from _leaves(item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _leaves(item)
    elif value is not None and not isinstance(value, bool):
        yield str(value)


def _secret_leaves(value: Any, secret: bool = False, endpoint: bool = False) -> Iterable[str]:
    """Leaves under a secret-looking key at any depth, and endpoint URLs/headers of notification channels."""
    if isinstance(value, dict):
        for key, item in value.items():
            name = str(key)
            yield from _secret_leaves(
                item, secret or bool(SECRET_KEY.search(name)) or (endpoint and name.lower() in ENDPOINT_KEYS),
                endpoint or bool(ENDPOINT_PARENT.search(name)))
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _secret_leaves(item, secret, endpoint)
    elif secret:
        yield from _leaves(value)


def secret_values(extravars: dict | None, secrets: Iterable[Any] = ()) -> tuple[list, list]:
    """Return (values to mask, values too short to mask) from secret-looking keys and explicit secrets."""
    values = set(_secret_leaves(extravars or {}))
    for value in secrets or ():
        values.update(_leaves(value))
    values.discard("")
    keep = sorted((v for v in values if len(v) >= MIN_LENGTH), key=len, reverse=True)
    short = sorted(v for v in values if len(v) < MIN_LENGTH)
    return keep, short


class Scrubber:
    def __init__(self, values: Iterable[str]):
        forms = set()
        for value in values:
            forms.add(value)
            forms.add(json.dumps(value)[1:-1])  # as it appears inside JSON strings (job events)
            forms.add(json.dumps(value, ensure_ascii=False)[1:-1])
        self._forms = sorted(forms, key=len, reverse=True)
        self._bforms = [f.encode("utf-8") for f in self._forms]

    def __bool__(self):
        return bool(self._forms)

    def text(self, text: str) -> str:
        for form in self._forms:
            text = text.replace(form, MASK)
        return text

    def tree(self, root: str) -> int:
        """Scrub every regular file under root in place; return how many files changed."""
        changed = 0
        if not self:
            return changed
        mask = MASK.encode()
        for dirpath, _dirs, files in os.walk(root):
            for fname in files:
                path = os.path.join(dirpath, fname)
                if os.path.islink(path) or not os.path.isfile(path):
                    continue
                with open(path, "rb") as fh:
                    data = fh.read()
                new = data
                for form in self._bforms:
                    new = new.replace(form, mask)
                if new != data:
                    with open(path, "wb") as fh:
                        fh.write(new)
                    changed += 1
        return changed
