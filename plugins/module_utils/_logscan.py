# -*- coding: utf-8 -*-
# Copyright: sqlsynth.runbooks contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Read-only scans of the service's logs for incident diagnostics (private to this collection).

Three logs: the app log (free text, ERROR/Traceback/CRITICAL lines), the security audit log
(JSON lines, fields of service.md) and the proxy access log (nginx C(combined) or the JSON
C(log_format) of the lab, told apart line by line). Only the last C(max_bytes) of a file are
read. A line that cannot be read is counted in C(malformed_lines), never fatal; a missing or
empty file is a result with a note, not an error of the caller.
"""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import datetime
import json
import os
import re

from ansible_collections.sqlsynth.runbooks.plugins.module_utils._common import MASK, scrub

MAX_BYTES = 16 * 1024 * 1024
RECENT_ERRORS = 20
MAX_LINE = 500
OFFENDERS = 10
UTC = datetime.timezone.utc

INJECTION = 'sql_injection_attempt'
AUTH_FAILED = 'api_key_auth_failed'
RATE_LIMITED = 'rate_limit_exceeded'
# Audit events that say nothing against the client that caused them.
NOT_OFFENCES = ('query_execution', 'unexpected_error')

# ---------------------------------------------------------------- secrets in text

_SECRET_PATTERNS = (
    # scheme://user:password@host -> scheme://user:********@host
    (re.compile(r'(?i)\b([a-z][a-z0-9+.-]*://[^/\s:@]*):[^/\s@]+@'), r'\1:' + MASK + '@'),
    # Authorization: Bearer <token>
    (re.compile(r'(?i)\b(bearer\s+)[a-z0-9._~+/=-]+'), r'\1' + MASK),
    # password=..., api_key: ..., "secret": "...", QUERY_AGENT_API_KEY=..., X-API-Key: ...
    (re.compile(r'(?i)(["\']?\b[\w.-]*(?:password|passwd|pwd|secret|token|api[_-]?key|apikey|\bkey)["\']?\s*[=:]\s*)'
                r'("[^"]*"|\'[^\']*\'|[^\s,;&"\'}]+)'), r'\1' + MASK),
)


def mask_secrets(text, secrets=()):
    """text with known secrets, URL passwords, Bearer tokens and key=value secrets masked."""
    text = scrub(text, secrets)
    for pattern, replacement in _SECRET_PATTERNS:
        text = pattern.sub(replacement, text)
    return text


# ---------------------------------------------------------------- reading

def _open_tail(path, max_bytes):
    """(lines, note) of the last max_bytes of a file; lines decoded as UTF-8 with replacement."""
    size = os.path.getsize(path)
    with open(path, 'rb') as handle:
        skipped = size > max_bytes
        if skipped:
            handle.seek(size - max_bytes)
            handle.readline()  # the first line is partial
        data = handle.read()
    note = 'only the last %d bytes of %d were read' % (max_bytes, size) if skipped else None
    return data.decode('utf-8', 'replace').splitlines(), note


def _base(path, window_minutes=None):
    result = dict(available=False, error=None, note=None, path=path, malformed_lines=0)
    if window_minutes is not None:
        result['window_minutes'] = window_minutes
    return result


def _read(result, path, max_bytes):
    """Lines of the file, or None with available/error/note filled for a missing or unreadable one."""
    if not path:
        result['error'] = 'no path given'
        return None
    if not os.path.exists(path):
        result['error'] = 'log file %s does not exist' % path
        return None
    if not os.path.isfile(path):
        result['error'] = '%s is not a regular file' % path
        return None
    try:
        lines, note = _open_tail(path, max_bytes)
    except (IOError, OSError) as exc:
        result['error'] = 'cannot read %s: %s' % (path, getattr(exc, 'strerror', None) or exc)
        return None
    result['available'] = True
    result['note'] = note
    if not lines:
        result['note'] = 'log file %s is empty' % path
    return lines


def _now(now):
    return now or datetime.datetime.now(UTC)


# ---------------------------------------------------------------- timestamps

_MONTHS = dict((m, i + 1) for i, m in enumerate(
    ('jan', 'feb', 'mar', 'apr', 'may', 'jun', 'jul', 'aug', 'sep', 'oct', 'nov', 'dec')))
_TIME_LOCAL = re.compile(r'^(\d{1,2})/([A-Za-z]{3})/(\d{4}):(\d{2}):(\d{2}):(\d{2}) ([+-])(\d{2})(\d{2})$')


def parse_iso(text):
    """ISO 8601 timestamp -> aware datetime (naive ones are UTC); ValueError when it is not one."""
    if not isinstance(text, str) or not text:
        raise ValueError('not a timestamp')
    value = text.strip()
    if value.endswith(('Z', 'z')):
        value = value[:-1] + '+00:00'
    # Python < 3.11 accepts only 0, 3 or 6 fraction digits
    match = re.match(r'^(.*T\d{2}:\d{2}:\d{2})\.(\d+)(.*)$', value)
    if match:
        value = '%s.%s%s' % (match.group(1), (match.group(2) + '000000')[:6], match.group(3))
    stamp = datetime.datetime.fromisoformat(value)
    return stamp if stamp.tzinfo else stamp.replace(tzinfo=UTC)


def parse_time_local(text):
    """nginx $time_local (05/Dec/2026:18:43:37 +0000) -> aware datetime; ValueError otherwise."""
    match = _TIME_LOCAL.match(text or '')
    if not match or match.group(2).lower() not in _MONTHS:
        raise ValueError('not a $time_local timestamp')
    day, month, year, hour, minute, second, sign, off_h, off_m = match.groups()
    offset = datetime.timedelta(hours=int(off_h), minutes=int(off_m)) * (-1 if sign == '-' else 1)
    return datetime.datetime(int(year), _MONTHS[month.lower()], int(day), int(hour), int(minute), int(second),
                             tzinfo=datetime.timezone(offset))


# ---------------------------------------------------------------- app log

_APP_ERROR = re.compile(r'\b(ERROR|CRITICAL)\b|Traceback \(most recent call last\)|^Traceback\b')
_APP_TIME = re.compile(r'^\[?(\d{4}-\d{2}-\d{2}[ T]\d{2}:\d{2}:\d{2})')


def scan_app(path, window_minutes=15, secrets=(), max_bytes=MAX_BYTES, now=None):
    """ERROR/Traceback/CRITICAL lines of the app log within the window, the last 20 kept, secrets masked.

    A line that starts with a timestamp (Python logging's asctime, local time) is in the window or not;
    a line without one (a traceback's body) goes with the line before it; lines before any timestamp count."""
    result = _base(path, window_minutes)
    result.update(error_count=0, recent_errors=[])
    lines = _read(result, path, max_bytes)
    if not lines:
        return result
    cutoff = _now(now).astimezone().replace(tzinfo=None) - datetime.timedelta(minutes=window_minutes)
    in_window, recent = True, []
    for line in lines:
        match = _APP_TIME.match(line)
        if match:
            try:
                in_window = datetime.datetime.strptime(match.group(1).replace('T', ' '), '%Y-%m-%d %H:%M:%S') >= cutoff
            except ValueError:
                result['malformed_lines'] += 1
        if '\ufffd' in line:
            result['malformed_lines'] += 1
        if in_window and _APP_ERROR.search(line):
            result['error_count'] += 1
            recent.append(line)
            del recent[:-RECENT_ERRORS]
    result['recent_errors'] = [mask_secrets(line, secrets)[:MAX_LINE] for line in recent]
    return result


# ---------------------------------------------------------------- audit log

def _offender_sort(row, *keys):
    return tuple(-row[k] for k in keys) + (row['client'],)


def scan_audit(path, window_minutes=15, max_bytes=MAX_BYTES, now=None):
    """Counts by event type within the window, injection attempts per minute and offenders by client_ip."""
    result = _base(path, window_minutes)
    result.update(events=0, events_by_type={}, injection_attempts=0, injection_attempts_per_minute=0.0,
                  auth_failures=0, rate_limited=0, offenders=[])
    lines = _read(result, path, max_bytes)
    if not lines:
        return result
    now = _now(now)
    cutoff = now - datetime.timedelta(minutes=window_minutes)
    clients = {}
    for line in lines:
        if not line.strip():
            continue
        try:
            event = json.loads(line)
            kind = event['event_type']
            stamp = parse_iso(event['timestamp'])
            if not isinstance(kind, str) or not kind:
                raise ValueError('event_type')
        except (ValueError, KeyError, TypeError):
            result['malformed_lines'] += 1
            continue
        if stamp < cutoff:
            continue
        result['events'] += 1
        result['events_by_type'][kind] = result['events_by_type'].get(kind, 0) + 1
        if kind in NOT_OFFENCES:
            continue
        client = event.get('client_ip') or 'unknown'
        row = clients.setdefault(client, dict(client=client, events=0, injection_attempts=0, auth_failures=0,
                                              rate_limited=0))
        row['events'] += 1
        for key, name in (('injection_attempts', INJECTION), ('auth_failures', AUTH_FAILED),
                          ('rate_limited', RATE_LIMITED)):
            if kind == name:
                row[key] += 1
    by_type = result['events_by_type']
    result['injection_attempts'] = by_type.get(INJECTION, 0)
    result['auth_failures'] = by_type.get(AUTH_FAILED, 0)
    result['rate_limited'] = by_type.get(RATE_LIMITED, 0)
    result['injection_attempts_per_minute'] = round(result['injection_attempts'] / float(window_minutes), 3) \
        if window_minutes else 0.0
    rows = sorted(clients.values(), key=lambda r: _offender_sort(r, 'injection_attempts', 'events'))
    result['offenders'] = rows[:OFFENDERS]
    return result


# ---------------------------------------------------------------- access log

_COMBINED = re.compile(r'^(\S+) \S+ (\S+) \[([^\]]+)\] "((?:[^"\\]|\\.)*)" (\d{3}) (\S+)')


def parse_access_line(line):
    """(client, time, status) of an nginx combined line or a JSON line with time/remote_addr/status."""
    text = line.strip()
    if text.startswith('{'):
        doc = json.loads(text)
        client = doc.get('remote_addr')
        stamp = doc.get('time') or doc.get('time_iso8601') or doc.get('timestamp')
        stamp = parse_time_local(doc['time_local']) if stamp is None and 'time_local' in doc else parse_iso(stamp)
        status = int(doc['status'])
    else:
        match = _COMBINED.match(text)
        if not match:
            raise ValueError('not an access log line')
        client, stamp, status = match.group(1), parse_time_local(match.group(3)), int(match.group(5))
    if not client or not 100 <= status <= 599:
        raise ValueError('no client or status')
    return client, stamp, status


def scan_access(path, window_minutes=15, max_bytes=MAX_BYTES, now=None):
    """Requests and status classes within the window, and clients by errors."""
    result = _base(path, window_minutes)
    result.update(requests=0, status_counts={'1xx': 0, '2xx': 0, '3xx': 0, '4xx': 0, '5xx': 0}, offenders=[])
    lines = _read(result, path, max_bytes)
    if not lines:
        return result
    cutoff = _now(now) - datetime.timedelta(minutes=window_minutes)
    clients = {}
    for line in lines:
        if not line.strip():
            continue
        try:
            client, stamp, status = parse_access_line(line)
        except (ValueError, KeyError, TypeError, AttributeError):
            result['malformed_lines'] += 1
            continue
        if stamp < cutoff:
            continue
        result['requests'] += 1
        cls = '%dxx' % (status // 100)
        result['status_counts'][cls] += 1
        row = clients.setdefault(client, dict(client=client, requests=0, errors_4xx=0, errors_5xx=0))
        row['requests'] += 1
        if cls in ('4xx', '5xx'):
            row['errors_' + cls] += 1
    for row in clients.values():
        row['errors'] = row['errors_4xx'] + row['errors_5xx']
    rows = sorted(clients.values(), key=lambda r: _offender_sort(r, 'errors', 'requests'))
    for row in rows:
        del row['errors']
    result['offenders'] = rows[:OFFENDERS]
    return result
