# -*- coding: utf-8 -*-
# Copyright: sqlsynth.runbooks contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Evidence preservation for incident response (private to this collection).

Copies files into a new directory <dest>/<label>/ while hashing them (SHA-256, streamed), and
writes SHA256SUMS (the format `sha256sum -c` reads) and SOURCES (where each copy came from).
Files end read-only (0400), the directory 0500. An existing evidence directory is never touched.
"""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import datetime
import errno
import hashlib
import json
import os
import shutil
import stat

CHUNK = 1024 * 1024
SUMS_FILE = 'SHA256SUMS'
SOURCES_FILE = 'SOURCES'
RESERVED = (SUMS_FILE, SOURCES_FILE)
FILE_MODE = 0o400
DIR_MODE = 0o500


class EvidenceError(Exception):
    """A problem a person can act on; the message says what and where."""


def check_label(label):
    """The label names one directory: not empty, no path separator, not . or .."""
    if label is None or not label.strip():
        raise EvidenceError('label must not be empty')
    if '/' in label or '\0' in label or label in ('.', '..'):
        raise EvidenceError('label %r must be a single directory name (no "/", not "." or "..")' % label)
    return label


def _unique_names(paths):
    """Name of each copy: the source's base name; later duplicates get -2, -3 ... before the extension."""
    taken = set(RESERVED)
    names = []
    for path in paths:
        base = os.path.basename(path.rstrip('/')) or 'file'
        name, count = base, 1
        while name in taken:
            count += 1
            stem, ext = os.path.splitext(base)
            name = '%s-%d%s' % (stem, count, ext)
        taken.add(name)
        names.append(name)
    return names


def _iso(mtime):
    return datetime.datetime.fromtimestamp(mtime, datetime.timezone.utc).strftime('%Y-%m-%dT%H:%M:%S.%fZ')


def sums_line(digest, name):
    """One line of SHA256SUMS as GNU sha256sum writes it (backslash escaping for odd names)."""
    if '\\' in name or '\n' in name or '\r' in name:
        escaped = name.replace('\\', '\\\\').replace('\n', '\\n').replace('\r', '\\r')
        return '\\%s  %s\n' % (digest, escaped)
    return '%s  %s\n' % (digest, name)


def _field(text):
    """A SOURCES field: as is, or JSON-quoted when it holds a tab, a newline or starts with a quote."""
    if '\t' in text or '\n' in text or '\r' in text or text.startswith('"'):
        return json.dumps(text)
    return text


def inspect_sources(sources):
    """Split sources into present regular files (with their stat) and missing ones.

    Returns (present: [(path, stat)], missing: [path], reasons: {path: why}).
    Raises EvidenceError for a source that exists but cannot be preserved (a directory, unreadable).
    """
    present, missing, reasons = [], [], {}
    seen = set()
    for path in sources:
        if path in seen:
            continue
        seen.add(path)
        try:
            st = os.stat(path)
        except OSError as exc:
            if exc.errno in (errno.ENOENT, errno.ENOTDIR):
                missing.append(path)
                reasons[path] = 'does not exist'
                continue
            raise EvidenceError('cannot read source %s: %s' % (path, exc.strerror or exc))
        if not stat.S_ISREG(st.st_mode):
            raise EvidenceError('source %s is not a regular file; list the files to preserve' % path)
        if not os.access(path, os.R_OK):
            raise EvidenceError('cannot read source %s: permission denied' % path)
        present.append((path, st))
    return present, missing, reasons


def _copy_hashing(src, dst):
    """Copy src to the new file dst (never an existing one), hashing the bytes copied. Returns (hex, bytes)."""
    digest = hashlib.sha256()
    size = 0
    fd = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, 'O_NOFOLLOW', 0), 0o600)
    with os.fdopen(fd, 'wb') as out:
        with open(src, 'rb') as handle:
            while True:
                chunk = handle.read(CHUNK)
                if not chunk:
                    break
                digest.update(chunk)
                out.write(chunk)
                size += len(chunk)
        out.flush()
        os.fsync(out.fileno())
    return digest.hexdigest(), size


def _write_new(path, text):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, 'O_NOFOLLOW', 0), 0o600)
    with os.fdopen(fd, 'w') as out:
        out.write(text)
        out.flush()
        os.fsync(out.fileno())


def preserve(sources, dest, label, check_mode=False):
    """Preserve sources into dest/label. Returns the module result (without changed/msg keys the caller adds)."""
    check_label(label)
    if not sources:
        raise EvidenceError('sources must list at least one file')
    target = os.path.join(dest, label)
    if os.path.lexists(target):
        raise EvidenceError('evidence directory %s already exists; evidence is never overwritten: choose another label'
                            % target)
    if os.path.lexists(dest) and not os.path.isdir(dest):
        raise EvidenceError('dest %s exists and is not a directory' % dest)
    present, missing, reasons = inspect_sources(sources)
    if not present:
        raise EvidenceError('none of the sources exist: %s' % ', '.join(
            '%s (%s)' % (path, reasons[path]) for path in missing))
    names = _unique_names([path for path, dummy in present])
    files = []
    if check_mode:
        for (path, st), name in zip(present, names):
            files.append(dict(source=path, dest=os.path.join(target, name), sha256=None, bytes=st.st_size))
        return dict(dir=target, files=files, missing=missing, sums_file=os.path.join(target, SUMS_FILE),
                    sources_file=os.path.join(target, SOURCES_FILE))

    created_dest = False
    if not os.path.isdir(dest):
        try:
            os.makedirs(dest, 0o700)
        except OSError as exc:
            raise EvidenceError('cannot create dest %s: %s' % (dest, exc.strerror or exc))
        created_dest = True
    try:
        os.mkdir(target, 0o700)
    except OSError as exc:
        if exc.errno == errno.EEXIST:
            raise EvidenceError('evidence directory %s already exists; evidence is never overwritten: choose another label'
                                % target)
        raise EvidenceError('cannot create evidence directory %s: %s' % (target, exc.strerror or exc))
    try:
        sums, rows = [], ['# source\tbytes\tmtime_utc\tsha256\n']
        for (path, st), name in zip(present, names):
            copy = os.path.join(target, name)
            try:
                digest, size = _copy_hashing(path, copy)
            except (IOError, OSError) as exc:
                raise EvidenceError('cannot copy %s to %s: %s' % (path, copy, exc.strerror or exc))
            os.chmod(copy, FILE_MODE)
            files.append(dict(source=path, dest=copy, sha256=digest, bytes=size))
            sums.append(sums_line(digest, name))
            rows.append('%s\t%d\t%s\t%s\n' % (_field(os.path.abspath(path)), size, _iso(st.st_mtime), digest))
        for name, text in ((SUMS_FILE, ''.join(sums)), (SOURCES_FILE, ''.join(rows))):
            _write_new(os.path.join(target, name), text)
            os.chmod(os.path.join(target, name), FILE_MODE)
        os.chmod(target, DIR_MODE)
    except Exception:
        # Only what this run created goes: a half-written evidence directory would mislead.
        shutil.rmtree(target, ignore_errors=True)
        if created_dest:
            shutil.rmtree(dest, ignore_errors=True)
        raise
    return dict(dir=target, files=files, missing=missing, sums_file=os.path.join(target, SUMS_FILE),
                sources_file=os.path.join(target, SOURCES_FILE))
