# -*- coding: utf-8 -*-
# Copyright: sqlsynth.runbooks contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""One read-only pass of incident diagnostics over every signal, concurrently (private to this collection).

Each section runs in its own daemon thread under its own time limit; a section that fails or runs out
of time is a result (available false, error set), never an exception, so the others are unaffected.
The result has the shape of the "Diagnostics result" contract: every section is always present.
"""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import os
import shutil
import threading
import time
from concurrent.futures import Future, wait

from ansible_collections.sqlsynth.runbooks.plugins.module_utils._common import first_line, ratio, scrub
from ansible_collections.sqlsynth.runbooks.plugins.module_utils._http import describe_error, parse_json, request
from ansible_collections.sqlsynth.runbooks.plugins.module_utils._logscan import (
    mask_secrets, scan_access, scan_app, scan_audit)
from ansible_collections.sqlsynth.runbooks.plugins.module_utils._metrics import (
    HAS_PROMETHEUS_CLIENT, MetricsError, _sample_names, bucket_counts, counter_sum, found, histogram_quantile, increase, scrape)
from ansible_collections.sqlsynth.runbooks.plugins.module_utils._postgres import connect, describe_connect_error
from ansible_collections.sqlsynth.runbooks.plugins.module_utils._redis import client as redis_client
from ansible_collections.sqlsynth.runbooks.plugins.module_utils._redis import describe_error as redis_error

try:
    import psycopg
    from psycopg import sql
    HAS_PSYCOPG = True
except ImportError:
    HAS_PSYCOPG = False

try:
    import redis
    HAS_REDIS = True
except ImportError:
    HAS_REDIS = False

SECTIONS = ('metrics', 'health', 'synthetic', 'logs', 'postgres', 'redis', 'host')
QUERY_CHARS = 200


# ---------------------------------------------------------------- metrics

def metrics_section(opts):
    """Error ratio, p95 and errors by type from two /metrics samples metrics_window seconds apart."""
    window = opts['metrics_window']
    result = dict(available=False, error=None, url=opts['metrics_url'], error_ratio=None, p95_seconds=None,
                  requests=None, errors=None, window_seconds=window, errors_by_type={})
    if not HAS_PROMETHEUS_CLIENT:
        result['error'] = 'metrics not checked: the Python library prometheus-client is not installed'
        return result
    http = dict(context=opts['context'], timeout=opts['timeout'], server_name=opts.get('server_name'))
    try:
        started = time.monotonic()
        first = scrape(opts['metrics_url'], http) if window > 0 else None
        if first is not None:
            time.sleep(max(0.0, window - (time.monotonic() - started)))
        second = scrape(opts['metrics_url'], http)
    except MetricsError as exc:
        result['error'] = str(exc)
        return result
    if first is not None:
        result['window_seconds'] = round(time.monotonic() - started, 3)
    deltas = increase(first, second)
    names = opts['requests_metric'], opts['errors_metric'], opts['duration_metric']
    missing = [name for name in names if not found(second, name)]
    if found(second, names[0]):
        result['requests'] = counter_sum(deltas, names[0])
    if found(second, names[1]):
        result['errors'] = counter_sum(deltas, names[1])
        samples = _sample_names(names[1])
        for (sample, labels), value in deltas.items():
            if sample in samples and value > 0:
                kind = dict(labels).get(opts['error_type_label']) or 'unknown'
                result['errors_by_type'][kind] = result['errors_by_type'].get(kind, 0) + value
    if found(second, names[2]):
        p95 = histogram_quantile(0.95, bucket_counts(deltas, names[2]))
        result['p95_seconds'] = None if p95 is None else round(p95, 6)
    if result['requests'] and result['errors'] is not None:
        result['error_ratio'] = round(result['errors'] / result['requests'], 6)
    result['available'] = result['requests'] is not None
    if missing:
        plural = 's' if len(missing) > 1 else ''
        result['error'] = 'metric%s %s not found at %s' % (plural, ', '.join(missing), opts['metrics_url'])
    return result


# ---------------------------------------------------------------- HTTP: /health and the synthetic query

def _get_health(url, opts):
    out = dict(available=False, error=None, url=url, http_status=None, status=None, components={})
    try:
        resp = request(url, opts['context'], opts['timeout'], server_name=opts.get('server_name'))
    except Exception as exc:  # every network failure is a result
        out['error'] = 'cannot reach %s: %s' % (url, describe_error(exc, opts['timeout']))
        return out
    out['available'] = True
    out['http_status'] = resp['status']
    doc = parse_json(resp)
    if not isinstance(doc, dict):
        out['status'] = 'unknown'
        out['error'] = 'HTTP %s from %s, body is not JSON' % (resp['status'], url)
        return out
    out['status'] = str(doc.get('status') or 'unknown')
    components = doc.get('components')
    if isinstance(components, dict):
        out['components'] = dict((str(k), v) for k, v in components.items())
    if doc.get('error'):
        out['error'] = first_line(doc['error'])
    elif resp['status'] != 200:
        out['error'] = 'HTTP %s from %s' % (resp['status'], url)
    return out


def health_section(opts):
    result = _get_health(opts['app_url'].rstrip('/') + '/health', opts)
    if opts.get('app_direct_url'):
        direct = _get_health(opts['app_direct_url'].rstrip('/') + '/health', opts)
        keys = ('available', 'error', 'url', 'http_status', 'status', 'components')
        result['direct'] = dict((k, direct[k]) for k in keys)
    return result


def synthetic_section(opts):
    url = opts['app_url'].rstrip('/') + '/api/query'
    result = dict(available=False, ok=False, url=url, http_status=None, seconds=None, error=None)
    headers = {opts['api_key_header']: opts['api_key']} if opts.get('api_key') else {}
    started = time.monotonic()
    try:
        resp = request(url, opts['context'], opts['timeout'], method='POST', headers=headers,
                       body={'question': opts['synthetic_question']}, server_name=opts.get('server_name'))
    except Exception as exc:  # every network failure is a result
        result['seconds'] = round(time.monotonic() - started, 3)
        result['error'] = 'cannot reach %s: %s' % (url, describe_error(exc, opts['timeout']))
        return result
    result['seconds'] = round(time.monotonic() - started, 3)
    result['available'] = True
    result['http_status'] = resp['status']
    doc = parse_json(resp)
    if resp['status'] == 200 and isinstance(doc, dict) and 'sql' in doc:
        result['ok'] = True
    else:
        detail = doc.get('error') if isinstance(doc, dict) else None
        result['error'] = 'HTTP %s from %s%s' % (
            resp['status'], url, ': %s' % first_line(detail) if detail else '' if doc is not None else ' (not JSON)')
        if resp['status'] == 200:
            result['error'] = 'HTTP 200 from %s without a sql field in the answer' % url
    return result


# ---------------------------------------------------------------- logs

def _span(minutes):
    """A log window for people: '15 min', or '42 s' when log_since shortened it below a minute."""
    minutes = float(minutes or 0)
    return '%d s' % round(minutes * 60) if minutes < 1 else '%g min' % round(minutes, 1)


def logs_section(opts):
    paths = opts.get('log_files') or {}
    window = opts['log_window_minutes']
    secrets = opts['secrets']
    result = dict(
        app=scan_app(paths.get('app'), window, secrets=secrets),
        audit=scan_audit(paths.get('audit'), window),
        access=scan_access(paths.get('access'), window),
    )
    for name, part in result.items():
        if not paths.get(name):
            part['error'] = 'no path given (log_files.%s)' % name
    result['available'] = any(part['available'] for part in result.values() if isinstance(part, dict))
    result['error'] = None if result['available'] else 'no log file could be read'
    return result


# ---------------------------------------------------------------- PostgreSQL

ACTIVITY_SQL = """
    SELECT pid, coalesce(state, 'unknown'), coalesce(application_name, ''), host(client_addr),
           extract(epoch FROM now() - state_change)::float8,
           extract(epoch FROM now() - query_start)::float8,
           left(query, %(chars)s), pg_blocking_pids(pid)
    FROM pg_stat_activity
    WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()
    ORDER BY pid"""


def _seconds(value):
    return None if value is None else round(max(0.0, value), 1)


def postgres_section(opts):
    params = opts['postgres']
    secrets = opts['secrets']
    result = dict(available=False, error=None, reachable=False, max_connections=None,
                  connections=dict(total=0, by_state={}, app=0, ratio=None), idle_in_transaction=[],
                  long_running=[], blocked=[], slowest_statements=[], pg_stat_statements=False)
    if not HAS_PSYCOPG:
        result['error'] = 'postgres not checked: the Python library psycopg (3) is not installed'
        return result
    try:
        conn = connect(params, statement_timeout_ms=max(1000, params['connect_timeout'] * 1000))
    except psycopg.Error as exc:
        result['error'] = 'postgres unreachable: %s' % describe_connect_error(exc, params)[0]
        return result
    result['reachable'] = True
    try:
        with conn:
            _collect_postgres(conn, opts, result)
    except psycopg.Error as exc:
        result['error'] = scrub('postgres query failed: %s' % first_line(exc), secrets)
        return result
    result['available'] = True
    return result


def _collect_postgres(conn, opts, result):
    secrets = opts['secrets']
    max_conn, version = conn.execute(
        "SELECT current_setting('max_connections')::int, current_setting('server_version_num')::int").fetchone()
    result['max_connections'] = max_conn
    conns = result['connections']
    for pid, state, app, client, since_change, since_start, query, blockers in conn.execute(
            ACTIVITY_SQL, {'chars': QUERY_CHARS}).fetchall():
        conns['total'] += 1
        conns['by_state'][state] = conns['by_state'].get(state, 0) + 1
        if app == opts['app_application_name']:
            conns['app'] += 1
        query = mask_secrets(query, secrets) if query is not None else None
        if state.startswith('idle in transaction') and (since_change or 0) > opts['idle_in_transaction_seconds']:
            result['idle_in_transaction'].append(dict(pid=pid, seconds=_seconds(since_change), application_name=app,
                                                      client_addr=client, state=state, query=query))
        if state == 'active' and (since_start or 0) > opts['long_query_seconds']:
            result['long_running'].append(dict(pid=pid, seconds=_seconds(since_start), state=state,
                                               application_name=app, query=query))
        if blockers:
            result['blocked'].append(dict(pid=pid, blocking_pids=sorted(blockers), seconds=_seconds(since_start),
                                          query=query))
    conns['ratio'] = ratio(conns['total'], max_conn)
    for key in ('idle_in_transaction', 'long_running', 'blocked'):
        result[key].sort(key=lambda row: -(row['seconds'] or 0))
    row = conn.execute("SELECT n.nspname FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace "
                       "WHERE e.extname = 'pg_stat_statements'").fetchone()
    if row is None:
        return
    mean, total = ('mean_exec_time', 'total_exec_time') if version >= 130000 else ('mean_time', 'total_time')
    query = sql.SQL("SELECT left(query, %s), calls, round({mean}::numeric, 3)::float8, round({total}::numeric, 3)::float8 "
                    "FROM {schema}.pg_stat_statements ORDER BY {mean} DESC NULLS LAST LIMIT 5").format(
        mean=sql.Identifier(mean), total=sql.Identifier(total), schema=sql.Identifier(row[0]))
    try:
        rows = conn.execute(query, (QUERY_CHARS,)).fetchall()
    except psycopg.Error as exc:  # created but not in shared_preload_libraries, or no privilege
        result['pg_stat_statements_error'] = scrub(first_line(exc), secrets)
        return
    result['pg_stat_statements'] = True
    result['slowest_statements'] = [dict(query=mask_secrets(q or '', secrets), calls=calls, mean_ms=mean_ms,
                                         total_ms=total_ms) for q, calls, mean_ms, total_ms in rows]


# ---------------------------------------------------------------- Redis

def redis_section(opts):
    params = opts['redis']
    result = dict(available=False, error=None, reachable=False, used_memory=None, maxmemory=None, mem_ratio=None,
                  hit_ratio=None, connected_clients=None, evicted_keys=None, keys=None)
    if not HAS_REDIS:
        result['error'] = 'redis not checked: the Python library redis (redis-py) is not installed'
        return result
    conn = redis_client(params)
    try:
        info = {}
        for part in ('memory', 'stats', 'clients', 'keyspace'):
            info.update(conn.info(part))
        keys = int(conn.dbsize())
    except (redis.RedisError, OSError) as exc:
        result['error'] = 'redis unreachable: %s' % redis_error(exc, params)[0]
        return result
    finally:
        conn.close()
    used, maxmemory = int(info.get('used_memory', 0)), int(info.get('maxmemory', 0))
    hits, misses = int(info.get('keyspace_hits', 0)), int(info.get('keyspace_misses', 0))
    result.update(available=True, reachable=True, used_memory=used, maxmemory=maxmemory,
                  mem_ratio=ratio(used, maxmemory), hit_ratio=ratio(hits, hits + misses),
                  connected_clients=int(info.get('connected_clients', 0)), evicted_keys=int(info.get('evicted_keys', 0)),
                  keys=keys, maxmemory_policy=info.get('maxmemory_policy'))
    return result


# ---------------------------------------------------------------- host

def meminfo(path='/proc/meminfo'):
    values = {}
    with open(path) as handle:
        for line in handle:
            name, dummy, rest = line.partition(':')
            fields = rest.split()
            if fields and fields[0].isdigit():
                values[name.strip()] = int(fields[0]) * 1024
    return values


def host_section(opts):
    result = dict(available=False, error=None, cpu_count=os.cpu_count() or 1, load_1m=None, load_per_cpu=None,
                  mem_available_ratio=None, disk=[])
    errors = []
    try:
        load = os.getloadavg()[0]
        result['load_1m'] = round(load, 2)
        result['load_per_cpu'] = round(load / result['cpu_count'], 2)
    except (OSError, AttributeError) as exc:
        errors.append('load average unavailable: %s' % exc)
    try:
        mem = meminfo(opts.get('meminfo_path') or '/proc/meminfo')
        result['mem_available_ratio'] = ratio(mem.get('MemAvailable', 0), mem.get('MemTotal', 0))
    except (IOError, OSError) as exc:
        errors.append('memory unavailable: %s' % (getattr(exc, 'strerror', None) or exc))
    for path in opts['disk_paths']:
        try:
            usage = shutil.disk_usage(path)
            result['disk'].append(dict(path=path, free_ratio=ratio(usage.free, usage.total), free_bytes=usage.free,
                                       total_bytes=usage.total))
        except (IOError, OSError) as exc:
            result['disk'].append(dict(path=path, free_ratio=None, error=getattr(exc, 'strerror', None) or str(exc)))
            errors.append('disk %s: %s' % (path, getattr(exc, 'strerror', None) or exc))
    result['available'] = result['load_1m'] is not None or result['mem_available_ratio'] is not None
    result['error'] = '; '.join(errors) or None
    return result


# ---------------------------------------------------------------- problems

def _pct(value):
    return '%.1f%%' % (value * 100)


def _n(count, one, many):
    return '%d %s' % (count, one if count == 1 else many)


def problems(diag, opts):
    """Short human lines for what is abnormal, in the order a responder reads them."""
    out = []
    limits = opts['thresholds']
    wanted = opts['sections']
    metrics = diag['metrics']
    if 'metrics' in wanted:
        if not metrics['available']:
            out.append('metrics unavailable: %s' % metrics['error'])
        else:
            ratio_value, p95 = metrics['error_ratio'], metrics['p95_seconds']
            if ratio_value is not None and ratio_value > limits['error_ratio_max']:
                out.append('error ratio %s over %g s (%g errors in %g requests)' % (
                    _pct(ratio_value), metrics['window_seconds'], metrics['errors'], metrics['requests']))
            if p95 is not None and p95 > limits['p95_max_seconds']:
                out.append('p95 latency %.3f s over %g s, above %.3f s' % (
                    p95, metrics['window_seconds'], limits['p95_max_seconds']))
    health = diag['health']
    if 'health' in wanted:
        if not health['available']:
            out.append('health unreachable: %s' % health['error'])
        elif health['status'] != 'healthy' or health['http_status'] != 200:
            down = sorted(k for k, v in health['components'].items() if v is False)
            out.append('health %s (HTTP %s)%s' % (health['status'], health['http_status'],
                                                  ': %s down' % ', '.join(down) if down else
                                                  ': %s' % health['error'] if health['error'] else ''))
    synthetic = diag['synthetic']
    if 'synthetic' in wanted and not synthetic['ok']:
        out.append('synthetic query failed: %s' % synthetic['error'])
    pg = diag['postgres']
    if 'postgres' in wanted:
        if not pg['reachable']:
            out.append(pg['error'])
        elif not pg['available']:
            out.append(pg['error'])
        else:
            if pg['idle_in_transaction']:
                out.append('%s idle in transaction > %g s' % (
                    _n(len(pg['idle_in_transaction']), 'session', 'sessions'), opts['idle_in_transaction_seconds']))
            if pg['long_running']:
                count = _n(len(pg['long_running']), 'query', 'queries')
                out.append('%s running > %g s' % (count, opts['long_query_seconds']))
            if pg['blocked']:
                blockers = sorted(set(p for row in pg['blocked'] for p in row['blocking_pids']))
                out.append('%s blocked by pid %s' % (_n(len(pg['blocked']), 'session', 'sessions'),
                                                     ', '.join(str(p) for p in blockers)))
            used = pg['connections']['ratio']
            if used is not None and used > limits['connections_max_ratio']:
                out.append('postgres connections %d of max_connections %d (%s), above %s' % (
                    pg['connections']['total'], pg['max_connections'], _pct(used),
                    _pct(limits['connections_max_ratio'])))
    rd = diag['redis']
    if 'redis' in wanted:
        if not rd['available']:
            out.append(rd['error'])
        elif rd['mem_ratio'] is not None and rd['mem_ratio'] >= limits['redis_memory_max_ratio']:
            out.append('redis memory %s of maxmemory' % _pct(rd['mem_ratio']))
    if 'logs' in wanted:
        audit, app = diag['logs']['audit'], diag['logs']['app']
        for row in audit['offenders']:
            if row['injection_attempts'] >= limits['offender_min_injection_attempts']:
                out.append('client %s: %s in %s' % (row['client'], _n(
                    row['injection_attempts'], 'injection attempt', 'injection attempts'), _span(audit['window_minutes'])))
        if app['error_count']:
            out.append('app log: %s in %s' % (_n(app['error_count'], 'error line', 'error lines'),
                                              _span(app['window_minutes'])))
    host = diag['host']
    if 'host' in wanted and host['available']:
        if host['load_per_cpu'] is not None and host['load_per_cpu'] > limits['load_per_cpu_max']:
            out.append('load %.2f per CPU (%d CPUs), above %g' % (
                host['load_per_cpu'], host['cpu_count'], limits['load_per_cpu_max']))
        mem = host['mem_available_ratio']
        if mem is not None and mem < limits['mem_available_min_ratio']:
            out.append('memory available %s, below %s' % (_pct(mem), _pct(limits['mem_available_min_ratio'])))
        for disk in host['disk']:
            if disk['free_ratio'] is not None and disk['free_ratio'] < limits['disk_free_min_ratio']:
                out.append('disk %s %s free, below %s' % (disk['path'], _pct(disk['free_ratio']),
                                                          _pct(limits['disk_free_min_ratio'])))
    return [mask_secrets(line, opts['secrets']) for line in out]


# ---------------------------------------------------------------- the pass

RUNNERS = dict(metrics=metrics_section, health=health_section, synthetic=synthetic_section, logs=logs_section,
               postgres=postgres_section, redis=redis_section, host=host_section)


def _not_run(name, reason):
    """The section's shape with available false (so consumers never meet a missing key)."""
    empty = dict(
        metrics=dict(error_ratio=None, p95_seconds=None, requests=None, errors=None, window_seconds=None,
                     errors_by_type={}),
        health=dict(http_status=None, status=None, components={}),
        synthetic=dict(ok=False, http_status=None, seconds=None),
        logs=dict(app=dict(available=False, error=reason, path=None, error_count=0, recent_errors=[],
                           malformed_lines=0),
                  audit=dict(available=False, error=reason, path=None, window_minutes=None, events=0,
                             events_by_type={}, injection_attempts=0, injection_attempts_per_minute=0.0,
                             auth_failures=0, rate_limited=0, offenders=[], malformed_lines=0),
                  access=dict(available=False, error=reason, path=None, window_minutes=None, requests=0,
                              status_counts={'1xx': 0, '2xx': 0, '3xx': 0, '4xx': 0, '5xx': 0}, offenders=[],
                              malformed_lines=0)),
        postgres=dict(reachable=False, max_connections=None, connections=dict(total=0, by_state={}, app=0, ratio=None),
                      idle_in_transaction=[], long_running=[], blocked=[], slowest_statements=[],
                      pg_stat_statements=False),
        redis=dict(reachable=False, used_memory=None, maxmemory=None, mem_ratio=None, hit_ratio=None,
                   connected_clients=None, evicted_keys=None, keys=None),
        host=dict(cpu_count=None, load_1m=None, load_per_cpu=None, mem_available_ratio=None, disk=[]),
    )[name]
    empty.update(available=False, error=reason)
    return empty


def _limit(name, opts):
    extra = opts['metrics_window'] if name == 'metrics' else 0
    return extra + opts['section_timeout']


def _start(name, opts):
    """Run one section in a daemon thread (a section stuck past its limit never holds the module's exit).

    The future's seconds attribute is the section's own run time."""
    future = Future()
    future.seconds = None

    def target():
        if not future.set_running_or_notify_cancel():
            return
        begun = time.monotonic()
        try:
            value = RUNNERS[name](opts)
        except Exception as exc:  # one broken section never breaks the others
            future.seconds = round(time.monotonic() - begun, 3)
            future.set_exception(exc)
        else:
            future.seconds = round(time.monotonic() - begun, 3)
            future.set_result(value)

    thread = threading.Thread(target=target, name='diagnostics-%s' % name)
    thread.daemon = True
    thread.start()
    return future


def diagnose(opts):
    """The diagnostics dict of the contract. opts: see the module's options, plus context and secrets."""
    secrets = opts['secrets']
    started = time.monotonic()
    futures = dict((name, _start(name, opts)) for name in SECTIONS if name in opts['sections'])
    diag, durations = {}, {}
    for name in sorted(futures, key=lambda n: _limit(n, opts)):
        future = futures[name]
        done, dummy = wait([future], timeout=max(0.0, _limit(name, opts) - (time.monotonic() - started)))
        if not done:
            diag[name] = _not_run(name, '%s timed out after %g s' % (name, _limit(name, opts)))
            durations[name] = round(time.monotonic() - started, 3)
            continue
        durations[name] = future.seconds
        exc = future.exception()
        if exc is not None:
            diag[name] = _not_run(name, scrub('%s failed: %s: %s' % (name, exc.__class__.__name__,
                                                                     first_line(exc)), secrets))
        else:
            diag[name] = future.result()
    diag = dict((name, diag[name] if name in diag else _not_run(name, 'not requested (sections)'))
                for name in SECTIONS)
    diag['durations'] = dict((name, durations[name]) for name in SECTIONS if name in durations)
    diag['problems'] = problems(diag, opts)
    return diag
