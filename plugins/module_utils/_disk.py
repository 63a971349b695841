# -*- coding: utf-8 -*-
# Copyright: sqlsynth.runbooks contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Disk usage and the rotated-file inventory of a logrotate policy (private to this collection).

The plan mirrors what logrotate does with C(dateext): rotated files of a log are its name plus
the date suffix (plus the compression extension), sorted by name (the date format sorts), the
oldest removed so that C(rotate) remain after the new one is added, and the uncompressed ones
compressed (all but the newest with C(delaycompress)). Which logs are due is logrotate's own
decision, read from C(logrotate -d) (debug mode changes nothing).
"""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import os
import re

_DATE_FIELDS = {'Y': r'\d{4}', 'm': r'\d{2}', 'd': r'\d{2}', 'H': r'\d{2}', 'M': r'\d{2}', 'S': r'\d{2}',
                'V': r'\d{2}', 's': r'\d+'}


def dateext_regex(dateformat):
    """'-%Y%m%d-%H%M%S' -> regex source for the suffix; ValueError on a specifier logrotate refuses."""
    parts, i = [], 0
    while i < len(dateformat):
        char = dateformat[i]
        if char == '%' and i + 1 < len(dateformat):
            field = dateformat[i + 1]
            if field not in _DATE_FIELDS:
                raise ValueError('dateformat %r: logrotate allows only %%Y %%m %%d %%H %%M %%S %%V %%s, not %%%s'
                                 % (dateformat, field))
            parts.append(_DATE_FIELDS[field])
            i += 2
        else:
            parts.append(re.escape(char))
            i += 1
    return ''.join(parts)


def _file(path):
    st = os.stat(path)
    return {'path': path, 'size': st.st_size, 'mtime': int(st.st_mtime)}


def rotated_files(log_path, dateformat, compressext='.gz'):
    """The rotated files of one log (its name + the date suffix [+ compressext]), oldest first."""
    directory, base = os.path.split(log_path)
    pattern = re.compile('^%s%s(%s)?$' % (re.escape(base), dateext_regex(dateformat), re.escape(compressext)))
    try:
        names = sorted(n for n in os.listdir(directory or '.') if pattern.match(n))
    except OSError:
        return []
    return [_file(os.path.join(directory, n)) for n in names]


def plan_log(log_path, due, rotate, dateformat, compress=True, delaycompress=True, compressext='.gz'):
    """Inventory and plan for one log file: live file, rotated files, what would be compressed/removed."""
    live = _file(log_path) if os.path.isfile(log_path) else None
    rotated = rotated_files(log_path, dateformat, compressext)
    entry = {'path': log_path, 'live': live, 'rotated': rotated, 'due': bool(due and live),
             'compress': [], 'remove': []}
    if not entry['due']:
        return entry
    excess = max(0, len(rotated) + 1 - max(rotate, 0))
    entry['remove'] = [f['path'] for f in rotated[:excess]]
    if compress:
        entry['compress'] = [f['path'] for f in rotated[excess:] if not f['path'].endswith(compressext)]
        if not delaycompress:
            entry['compress'].append(log_path + '-<date>')
    return entry


_CONSIDER = re.compile(r'^considering log (.+)$')


def due_logs(debug_output):
    """Paths logrotate -d says need rotating ('considering log X' followed by 'log needs rotating')."""
    due, current = set(), None
    for line in debug_output.splitlines():
        line = line.strip()
        match = _CONSIDER.match(line)
        if match:
            current = match.group(1)
        elif current and line == 'log needs rotating':
            due.add(current)
    return due


def dir_usage(path):
    """Bytes of the regular files below path and the free/total bytes of its filesystem."""
    total, count = 0, 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            try:
                st = os.lstat(os.path.join(root, name))
            except OSError:
                continue
            total += st.st_size
            count += 1
    fs = os.statvfs(path)
    free, size = fs.f_bavail * fs.f_frsize, fs.f_blocks * fs.f_frsize
    return {'path': path, 'bytes': total, 'files': count, 'fs_free_bytes': free, 'fs_total_bytes': size,
            'fs_free_percent': round(100.0 * free / size, 2) if size else 0.0}


def summarize(entries):
    """Totals over per-log plans: files that would rotate, be compressed, be removed; bytes freed (estimate)."""
    sizes = {}
    for entry in entries:
        for f in entry['rotated']:
            sizes[f['path']] = f['size']
    plan = {'rotate': [e['path'] for e in entries if e['due']],
            'compress': [p for e in entries for p in e['compress']],
            'remove': [p for e in entries for p in e['remove']]}
    plan['freeable_bytes'] = sum(sizes.get(p, 0) for p in plan['remove'] + plan['compress'])
    return plan
