# -*- coding: utf-8 -*-
# Copyright: sqlsynth.runbooks contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Redis cache maintenance: keyspace sampling, purge by pattern (SCAN + pipelined UNLINK), FLUSHDB ASYNC.

Nothing here sends KEYS or any other command whose cost grows with the keyspace in one call: every
round trip is one SCAN of at most `batch_size` slots, plus one UNLINK of the keys the previous SCAN found.
"""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import re
import time

from ansible_collections.sqlsynth.runbooks.plugins.module_utils import _redis
from ansible_collections.sqlsynth.runbooks.plugins.module_utils._common import check_non_negative, check_port

MASK64 = (1 << 64) - 1
MAX_BATCH = 100000
# SCAN COUNT per round trip by default: 1000 kept single commands near 10 ms on a busy 2-core host
# (bench/cache_purge.py); 200 keeps them under the 5 ms target while staying faster than redis-cli.
DEFAULT_BATCH = 200


def check_options(module, *non_negative):
    """fail_json with a clear message on options no Redis call should be made with."""
    params = module.params
    check_port(module, 'port')
    check_non_negative(module, 'db', *non_negative)
    if params['socket_timeout'] <= 0:
        module.fail_json(msg='socket_timeout must be greater than 0, got %s' % params['socket_timeout'])
    if not 0 < params['batch_size'] <= MAX_BATCH:
        module.fail_json(msg='batch_size must be between 1 and %d, got %s' % (MAX_BATCH, params['batch_size']))
    bad = [p for p in params.get('patterns') or [] if not p]
    if bad:
        module.fail_json(msg='patterns must not contain empty strings')


def raw_client(params):
    """_redis.client(params) with replies as bytes, so keys are binary safe and matched byte for byte as
    Redis matches them (the connection itself, TLS and auth are _redis.client's)."""
    conn = _redis.client(params)
    conn.connection_pool.connection_kwargs['decode_responses'] = False
    return conn


def show(key):
    """A key for humans (bytes that are not UTF-8 are shown as \\x escapes)."""
    return key.decode('utf-8', 'backslashreplace')


def glob_regex(pattern):
    """Compile a Redis glob pattern (as SCAN MATCH reads it: * ? [abc] [^a-z] and backslash escapes) into a
    bytes regex that matches the same keys."""
    pat = pattern.encode('utf-8') if not isinstance(pattern, bytes) else pattern
    out, i, n = [], 0, len(pat)
    while i < n:
        char = pat[i:i + 1]
        if char == b'*':
            out.append(b'.*')
        elif char == b'?':
            out.append(b'.')
        elif char == b'\\' and i + 1 < n:
            i += 1
            out.append(re.escape(pat[i:i + 1]))
        elif char == b'[':
            i, klass = _char_class(pat, i + 1)
            out.append(klass)
        else:
            out.append(re.escape(char))
        i += 1
    return re.compile(b''.join(out) + b'\\Z', re.S)


def _char_class(pat, i):
    """Translate a [...] class starting after '['; returns (index of its closing ']', regex)."""
    negate = pat[i:i + 1] == b'^'
    i += negate
    parts, n = [], len(pat)
    while i < n and pat[i:i + 1] != b']':
        if pat[i:i + 1] == b'\\' and i + 1 < n:
            i += 1
            parts.append(re.escape(pat[i:i + 1]))
        elif pat[i + 1:i + 2] == b'-' and i + 2 < n and pat[i + 2:i + 3] != b']':
            low, high = sorted((pat[i:i + 1], pat[i + 2:i + 3]))  # Redis accepts reversed ranges
            parts.append(re.escape(low) + b'-' + re.escape(high))
            i += 2
        else:
            parts.append(re.escape(pat[i:i + 1]))
        i += 1
    if i >= n:  # no closing bracket: Redis ends the class at the end of the pattern
        i = n - 1
    if not parts:
        return i, b'[^\\s\\S]' if not negate else b'.'
    return i, b'[' + (b'^' if negate else b'') + b''.join(parts) + b']'


class Matcher(object):
    """Which of several glob patterns (first match wins) a key falls under."""

    def __init__(self, patterns):
        self.patterns = list(patterns)
        self._regexes = [glob_regex(p).match for p in self.patterns]

    def index(self, key):
        for number, match in enumerate(self._regexes):
            if match(key):
                return number
        return None


def key_id(key):
    """A 64-bit fingerprint of a key, stable within one process (enough to compare two passes of one run)."""
    return hash(key) & MASK64


def scan_all(conn, batch_size, pause=0.0):
    """Yield the key batches of a full SCAN (no MATCH)."""
    cursor = 0
    while True:
        cursor, keys = conn.scan(cursor, count=batch_size)
        yield keys
        if cursor == 0:
            return
        if pause:
            time.sleep(pause)


def sample(conn, patterns, sample_size, batch_size, sample_keys=5):
    """Estimate key counts per pattern from the first `sample_size` keys of a SCAN (hash order, so an
    unbiased sample of the keyspace). Exact when the whole keyspace fit into the sample (or sample_size
    is None: a full pass)."""
    matcher = Matcher(patterns)
    total = int(conn.dbsize())
    keys, counts, examples = [], [0] * len(patterns), [[] for _pattern in patterns]
    cursor = None
    while cursor != 0 and (sample_size is None or len(keys) < sample_size):
        cursor, batch = conn.scan(cursor or 0, count=batch_size)
        keys.extend(batch)
    exact = cursor == 0
    seen = set()
    for key in keys:
        if key in seen:  # SCAN may return a key twice while the table rehashes
            continue
        seen.add(key)
        number = matcher.index(key)
        if number is not None:
            counts[number] += 1
            if len(examples[number]) < sample_keys:
                examples[number].append(show(key))
    sampled = len(seen)
    result = []
    for number, pattern in enumerate(patterns):
        estimate = counts[number] if exact else (int(round(counts[number] * float(total) / sampled)) if sampled else 0)
        result.append(dict(pattern=pattern, estimated_keys=estimate, sample_matches=counts[number],
                           sample_keys=examples[number], exact=exact))
    return dict(db_keys=total, sample_size=sampled, exact=exact, patterns=result, keys=list(seen))


def biggest_keys(conn, keys, top, chunk=1000):
    """MEMORY USAGE and TYPE of the given keys (pipelined in chunks); the `top` largest."""
    sized = []
    for start in range(0, len(keys), chunk):
        part = keys[start:start + chunk]
        pipe = conn.pipeline(transaction=False)
        for key in part:
            pipe.memory_usage(key)
            pipe.type(key)
        replies = pipe.execute(raise_on_error=False)
        for number, key in enumerate(part):
            size, kind = replies[2 * number], replies[2 * number + 1]
            if isinstance(size, int):  # None or an error when the key expired meanwhile
                sized.append(dict(key=show(key), bytes=size, type=show(kind) if isinstance(kind, bytes) else kind))
    sized.sort(key=lambda item: -item['bytes'])
    return sized[:top]


def cache_info(conn, patterns, sample_size, batch_size, top):
    """Memory, hit ratio and evictions (_redis.collect), key counts per pattern and biggest keys."""
    data = _redis.collect(conn)
    sampled = sample(conn, patterns, sample_size, batch_size)
    data.update(db_keys=sampled['db_keys'], sample_size=sampled['sample_size'], exact=sampled['exact'],
                patterns=sampled['patterns'], biggest_keys=biggest_keys(conn, sampled['keys'], top) if top else [])
    return data


class Tally(object):
    """Per-pattern match counts and the ids of the keys outside every pattern, over one pass."""

    def __init__(self, matcher):
        self.matcher = matcher
        self.matched = [set() for _pattern in matcher.patterns]
        self.others = set()

    def add(self, keys):
        """Sort a batch; returns the keys that match a pattern."""
        hits = []
        for key in keys:
            number = self.matcher.index(key)
            if number is None:
                self.others.add(key_id(key))
            else:
                self.matched[number].add(key_id(key))
                hits.append(key)
        return hits


def purge(conn, patterns, batch_size, pause=0.0, verify=True):
    """Delete every key matching any pattern; returns counts, timing and (with verify) the verification.

    Without verify, one SCAN MATCH pass per pattern: Redis filters, only matching keys travel.
    With verify, one SCAN pass for all patterns that also remembers the keys outside them (as 64-bit ids);
    a second pass then checks that none of those went missing and counts matching keys left.
    """
    tally = Tally(Matcher(patterns))
    started = time.perf_counter()
    if verify:
        deleted, batches = _delete_pass(conn, batch_size, pause, None, tally.add)
    else:
        deleted = batches = 0
        for pattern in patterns:
            counts = _delete_pass(conn, batch_size, pause, pattern, list)
            deleted, batches = deleted + counts[0], batches + counts[1]
    elapsed = time.perf_counter() - started
    result = dict(deleted=deleted, batches=batches, elapsed_seconds=round(elapsed, 3),
                  keys_per_second=int(deleted / elapsed) if elapsed > 0 else deleted,
                  patterns=[dict(pattern=p) for p in patterns])
    if verify:
        result['verification'] = verify_pass(conn, tally, batch_size, pause)
        for number, item in enumerate(result['patterns']):
            item.update(matched=len(tally.matched[number]), remaining=result['verification']['remaining'][number])
        result['verification']['remaining'] = sum(result['verification']['remaining'])
    return result


def _delete_pass(conn, batch_size, pause, match, select):
    """One SCAN pass deleting select(keys) of each batch. Each round trip carries the UNLINK of the previous
    batch's keys and the next SCAN, so the server never does more than one batch of work per call."""
    cursor, pending, deleted, batches = 0, [], 0, 0
    while True:
        pipe = conn.pipeline(transaction=False)
        if pending:
            pipe.unlink(*pending)
        pipe.scan(cursor, match=match, count=batch_size)
        replies = pipe.execute()
        if pending:
            deleted, batches = deleted + int(replies[0]), batches + 1
        cursor, keys = replies[-1]
        pending = select(keys)
        if cursor == 0:
            break
        if pause:
            time.sleep(pause)
    if pending:
        deleted, batches = deleted + int(conn.unlink(*pending)), batches + 1
    return deleted, batches


def verify_pass(conn, before, batch_size, pause):
    """Second SCAN pass after a purge: matching keys left per pattern, other keys missing or added."""
    after = Tally(before.matcher)
    for keys in scan_all(conn, batch_size, pause):
        after.add(keys)
    missing, added = len(before.others - after.others), len(after.others - before.others)
    return dict(remaining=[len(ids) for ids in after.matched], other_keys_before=len(before.others),
                other_keys_after=len(after.others), other_keys_missing=missing, other_keys_added=added,
                others_untouched=missing == 0, db_keys=int(conn.dbsize()))


def flush(conn, check_mode):
    """FLUSHDB ASYNC (the memory is freed in the background); returns what it did or would do."""
    before = int(conn.dbsize())
    result = dict(flushed=False, db_keys_before=before, command='FLUSHDB ASYNC')
    if check_mode or not before:
        return result
    started = time.perf_counter()
    conn.flushdb(asynchronous=True)
    elapsed = time.perf_counter() - started
    result.update(flushed=True, deleted=before, elapsed_seconds=round(elapsed, 3), db_keys_after=int(conn.dbsize()))
    return result
