# -*- coding: utf-8 -*-
# Copyright: sqlsynth.runbooks contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Redis connection and read-only health checks shared by the collection's modules."""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import re
import time
import traceback

from ansible_collections.sqlsynth.runbooks.plugins.module_utils._common import (
    first_line, percent, ratio, scrub, unreachable)

try:
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry
    HAS_REDIS = True
    REDIS_IMPORT_ERROR = None
except ImportError:
    HAS_REDIS = False
    REDIS_IMPORT_ERROR = traceback.format_exc()


def connection_argument_spec():
    """Options of the sqlsynth.runbooks.redis doc fragment."""
    return dict(
        host=dict(type='str', default='127.0.0.1'),
        port=dict(type='int', default=6379),
        db=dict(type='int', default=0),
        username=dict(type='str'),
        password=dict(type='str', no_log=True),
        tls=dict(type='bool', default=False),
        validate_certs=dict(type='bool', default=True),
        ca_path=dict(type='path'),
        socket_timeout=dict(type='float', default=3),
    )


def client(params):
    """A redis.Redis for the connection options; TLS verifies certificate and host name by default.

    No retries: a health check reports what one attempt within socket_timeout saw."""
    kwargs = dict(host=params['host'], port=params['port'], db=params['db'], retry=Retry(NoBackoff(), 0),
                  username=params.get('username'), password=params.get('password'),
                  socket_timeout=params['socket_timeout'], socket_connect_timeout=params['socket_timeout'],
                  decode_responses=True)
    if params['tls']:
        kwargs.update(ssl=True, ssl_ca_certs=params.get('ca_path'),
                      ssl_cert_reqs='required' if params['validate_certs'] else 'none',
                      ssl_check_hostname=bool(params['validate_certs']))
    return redis.Redis(**kwargs)


def describe_error(exc, params):
    """(short human text, kind) for a failed Redis call; never contains the password."""
    where = '%s:%s' % (params['host'], params['port'])
    raw = str(exc)
    low = raw.lower()
    if isinstance(exc, redis.AuthenticationError) or low.startswith(('noauth', 'wrongpass')) \
            or 'authentication required' in low:
        if 'without any password configured' in low or 'no password is set' in low:
            text = 'AUTH: a password was given but %s has none configured' % where
        elif params.get('password'):
            text = 'WRONGPASS: password wrong or user disabled at %s' % where
        else:
            text = 'NOAUTH: %s requires a password and none was given' % where
        kind = 'auth'
    elif isinstance(exc, redis.TimeoutError) or 'timed out' in low:
        text, kind = 'timeout after %g s talking to %s' % (params['socket_timeout'], where), 'timeout'
    elif 'connection refused' in low:
        text, kind = 'connection refused at %s' % where, 'refused'
    elif 'name or service not known' in low or 'name resolution' in low or 'nodename nor servname' in low:
        text, kind = 'cannot resolve host %s' % params['host'], 'dns'
    elif re.search(r'\bssl\b|certificate', low):
        text, kind = 'TLS failure talking to %s: %s' % (where, first_line(raw)), 'tls'
    elif isinstance(exc, redis.ConnectionError):
        text, kind = 'cannot connect to %s: %s' % (where, first_line(raw)), 'other'
    else:
        text, kind = 'command failed on %s: %s' % (where, first_line(raw)), 'command'
    return scrub(text, [params.get('password')]), kind


def max_memory_policy(conn, info):
    """CONFIG GET maxmemory-policy, or INFO's maxmemory_policy where CONFIG is forbidden (managed Redis, ACL)."""
    try:
        return conn.config_get('maxmemory-policy').get('maxmemory-policy') or info.get('maxmemory_policy')
    except redis.ResponseError:
        return info.get('maxmemory_policy')


def collect(conn):
    """PING, INFO, DBSIZE and the eviction policy; nothing that writes."""
    started = time.perf_counter()
    conn.ping()
    ping_ms = round((time.perf_counter() - started) * 1000, 3)
    info = conn.info()
    used, maxmemory = int(info.get('used_memory', 0)), int(info.get('maxmemory', 0))
    hits, misses = int(info.get('keyspace_hits', 0)), int(info.get('keyspace_misses', 0))
    return dict(
        ping_ms=ping_ms,
        version=info.get('redis_version'),
        memory=dict(used_bytes=used, maxmemory_bytes=maxmemory, ratio=ratio(used, maxmemory),
                    policy=max_memory_policy(conn, info),
                    fragmentation_ratio=info.get('mem_fragmentation_ratio')),
        evictions=int(info.get('evicted_keys', 0)),
        keyspace_hits=hits,
        keyspace_misses=misses,
        hit_ratio=ratio(hits, hits + misses),
        keys=int(conn.dbsize()),
        connected_clients=int(info.get('connected_clients', 0)),
    )


def evaluate(data, params):
    """Short human failure lines for the thresholds exceeded in collected data."""
    failures = []
    mem_ratio = data['memory']['ratio']
    if mem_ratio is not None and mem_ratio >= params['memory_max_ratio']:
        failures.append('memory %s of maxmemory (%d of %d bytes, limit %s)' % (
            percent(mem_ratio), data['memory']['used_bytes'], data['memory']['maxmemory_bytes'],
            percent(params['memory_max_ratio'])))
    return failures


def health(params):
    """Full health result for redis_health_info; unreachable servers are data, not exceptions."""
    conn = client(params)
    try:
        data = collect(conn)
    except (redis.RedisError, OSError) as exc:
        return unreachable(*describe_error(exc, params))
    finally:
        conn.close()
    failures = evaluate(data, params)
    data.update(reachable=True, error=None, error_kind=None, ok=not failures, failures=failures)
    return data
