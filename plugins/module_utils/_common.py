# -*- coding: utf-8 -*-
# Copyright: sqlsynth.runbooks contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Small helpers shared by the health modules (private to this collection)."""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

MASK = '********'


def scrub(text, secrets):
    """Return text with every non-empty secret replaced by a mask."""
    text = '' if text is None else str(text)
    for secret in secrets:
        if secret:
            text = text.replace(str(secret), MASK)
    return text


def first_line(text, limit=300):
    """First non-empty line of an error text, trimmed to limit characters."""
    for line in str(text).splitlines():
        line = line.strip()
        if line:
            return line[:limit]
    return ''


def ratio(part, whole):
    """part/whole rounded to 4 places, or None when whole is 0 or unknown."""
    if not whole:
        return None
    return round(float(part) / float(whole), 4)


def percent(value):
    """0.853 -> '85%' (floor, so a reported 80% never hides a value just above the limit)."""
    return '%d%%' % int(value * 100)


def unreachable(error, kind):
    """The common result shape for a server that could not be queried."""
    return {'reachable': False, 'error': error, 'error_kind': kind, 'ok': False, 'failures': [error]}


def check_ratio_option(module, name, lowest=0.0):
    """fail_json unless module.params[name] is in (lowest, 1]."""
    value = module.params[name]
    if not lowest < value <= 1:
        module.fail_json(msg='%s must be greater than %s and at most 1, got %s' % (name, lowest, value))


def check_non_negative(module, *names):
    for name in names:
        if module.params[name] is not None and module.params[name] < 0:
            module.fail_json(msg='%s must not be negative, got %s' % (name, module.params[name]))


def check_port(module, name):
    if not 0 < module.params[name] < 65536:
        module.fail_json(msg='%s must be between 1 and 65535, got %s' % (name, module.params[name]))
