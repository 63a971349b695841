"""The lab's settings overrides file (overrides.env): ``KEY=VALUE`` lines, ``#`` comments.

Shared by the reference app (load_config merges it over the environment at start) and
gunicorn.conf.py (SQLSYNTH_LAB_REPLICAS, SQLSYNTH_LAB_THREADS). Values are taken as written
(no quotes, no inline comments). A line that is not ``KEY=VALUE`` with a shell-style key is
logged (line number and reason only: values may be secrets) and ignored.
"""

import logging
import os
import re

LOG = logging.getLogger("sqlsynth_lab_app")
DEFAULT_PATH = "/opt/sqlsynth-lab/app/overrides.env"
PATH_VARIABLE = "SQLSYNTH_LAB_OVERRIDES_FILE"
KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


def parse(text):
    """``(values, problems)``: the valid ``KEY=VALUE`` pairs (last wins) and ``[(line number, reason)]``."""
    values, problems = {}, []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        key = key.strip()
        if not sep:
            problems.append((number, "not KEY=VALUE"))
        elif not KEY.match(key):
            problems.append((number, "invalid key (letters, digits and _ only, not starting with a digit)"))
        else:
            values[key] = value.strip()
    return values, problems


def read(path, log=LOG):
    """The valid settings in ``path``; a missing file is an empty one, invalid lines are logged and ignored."""
    if not path:
        return {}
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            text = handle.read()
    except FileNotFoundError:
        return {}
    except OSError as exc:
        log.warning("overrides file %s unreadable (%s): no overrides applied", path, exc.strerror or exc)
        return {}
    values, problems = parse(text)
    for number, reason in problems:
        log.warning("overrides file %s line %d ignored: %s", path, number, reason)
    return values


def merged(env, log=LOG):
    """``env`` with the overrides file named by SQLSYNTH_LAB_OVERRIDES_FILE merged over it."""
    result = dict(env)
    result.update(read(env.get(PATH_VARIABLE), log=log))
    return result


def positive_int(env, name, default, log=LOG):
    """``env[name]`` as an int >= 1, else ``default`` (logged when set but invalid)."""
    value = env.get(name)
    if value is None or value == "":
        return default
    try:
        number = int(value)
    except ValueError:
        number = 0
    if number < 1:
        log.warning("ignoring invalid %s=%r, using %s", name, value, default)
        return default
    return number


def default_path(directory):
    """overrides.env next to the deployed app, when the environment does not name it."""
    return os.path.join(directory, "overrides.env")
