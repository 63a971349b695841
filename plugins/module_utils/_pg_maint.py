# -*- coding: utf-8 -*-
# Copyright: sqlsynth.runbooks contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""PostgreSQL maintenance by need: select tables and indexes, plan statements, run them in parallel.

Every identifier goes through psycopg.sql; every session runs under lock_timeout and
statement_timeout, so a locked table is skipped after lock_timeout instead of waited on."""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import math
import os
import re
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor

from ansible_collections.sqlsynth.runbooks.plugins.module_utils._common import first_line, scrub
from ansible_collections.sqlsynth.runbooks.plugins.module_utils._postgres import (
    HAS_PSYCOPG, SESSION_FIELDS, SESSIONS_SQL, connect)

if HAS_PSYCOPG:
    import psycopg
    from psycopg import sql

ACTIONS = ('vacuum', 'analyze', 'reindex', 'invalid_indexes')
LEFTOVER_RE = re.compile(r'_cc(new|old)[0-9]*$')
BLOCK = 8192
LOCAL_HOSTS = ('127.0.0.1', 'localhost', '::1')

TABLES_SQL = """
    SELECT s.relid, s.schemaname, s.relname, s.n_live_tup, s.n_dead_tup,
           extract(epoch FROM now() - greatest(s.last_vacuum, s.last_autovacuum))::float8 / 3600,
           extract(epoch FROM now() - greatest(s.last_analyze, s.last_autoanalyze))::float8 / 3600,
           age(c.relfrozenxid), c.relpages::bigint * %(block)s
    FROM pg_stat_user_tables s JOIN pg_class c ON c.oid = s.relid
    WHERE c.relkind IN ('r', 'm') AND pg_has_role(c.relowner, 'USAGE')
      AND (cardinality(%(schemas)s::text[]) = 0 OR s.schemaname = ANY(%(schemas)s))
      AND NOT (s.schemaname || '.' || s.relname = ANY(%(exclude)s) OR s.relname = ANY(%(exclude)s))"""
TABLE_FIELDS = ('relid', 'schema', 'table', 'n_live_tup', 'n_dead_tup', 'hours_since_vacuum',
                'hours_since_analyze', 'xid_age', 'bytes')

# Index bloat estimate without locks or extensions (see index_bloat_ratio): the key width per index
# column is the type's fixed length, else the average width from pg_stats (of the table column, or of
# the index itself for an expression column); NULL when a variable-width column has no statistics yet.
# Only btree indexes of at least index_bloat_min_bytes (by relpages) are considered.
INDEXES_SQL = """
    SELECT ct.oid, n.nspname, ct.relname, ci.relname, i.indisvalid, ci.relpages::bigint, ci.reltuples::float8,
           (SELECT CASE WHEN bool_and(k.width IS NOT NULL) THEN sum(k.width) END FROM (
              SELECT CASE WHEN a.attlen > 0 THEN a.attlen ELSE coalesce(ts.avg_width, xs.avg_width) END AS width
              FROM pg_attribute a
              LEFT JOIN pg_attribute ta ON ta.attrelid = i.indrelid AND ta.attnum = i.indkey[a.attnum - 1] AND ta.attnum > 0
              LEFT JOIN pg_stats ts ON ts.schemaname = n.nspname AND ts.tablename = ct.relname
                                    AND ts.attname = ta.attname AND NOT ts.inherited
              LEFT JOIN pg_stats xs ON ta.attnum IS NULL AND xs.schemaname = n.nspname AND xs.tablename = ci.relname
                                    AND xs.attname = a.attname AND NOT xs.inherited
              WHERE a.attrelid = i.indexrelid AND a.attnum > 0) k)::float8
    FROM pg_index i JOIN pg_class ci ON ci.oid = i.indexrelid JOIN pg_class ct ON ct.oid = i.indrelid
    JOIN pg_namespace n ON n.oid = ct.relnamespace JOIN pg_am am ON am.oid = ci.relam
    WHERE ct.relkind IN ('r', 'm') AND pg_has_role(ct.relowner, 'USAGE')
      AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname !~ '^pg_toast'
      AND (cardinality(%(schemas)s::text[]) = 0 OR n.nspname = ANY(%(schemas)s))
      AND NOT (n.nspname || '.' || ct.relname = ANY(%(exclude)s) OR ct.relname = ANY(%(exclude)s))
      AND (NOT i.indisvalid OR (am.amname = 'btree' AND ci.relpages::bigint * %(block)s >= %(min_bytes)s))"""
INDEX_SQL_FIELDS = ('relid', 'schema', 'table', 'index', 'valid', 'pages', 'tuples', 'key_width')
INDEX_FIELDS = ('relid', 'schema', 'table', 'index', 'valid', 'bytes', 'bloat_ratio')

SIZES_SQL = """
    SELECT s.n_live_tup, s.n_dead_tup, pg_table_size(s.relid), pg_indexes_size(s.relid)
    FROM pg_stat_user_tables s WHERE s.relid = %s"""
SIZE_FIELDS = ('n_live_tup', 'n_dead_tup', 'table_bytes', 'index_bytes')


def index_bloat_ratio(tuples, pages, key_width):
    """Estimated btree bloat, 1 - expected pages / actual pages (at least 0), or None when unknown.

    Expected: a freshly built btree, every leaf tuple 8 bytes of header plus the key width aligned to 8,
    plus a 4-byte line pointer, leaves filled to 90% (fillfactor) of a page less its 24-byte header,
    plus the metapage. tuples and pages are pg_class.reltuples and relpages (as of the last VACUUM,
    ANALYZE or (RE)INDEX); key_width is None when a variable-width key column has no statistics."""
    if key_width is None or tuples is None or tuples < 0 or not pages or pages <= 1:
        return None
    expected = math.ceil(tuples * (12 + 8 * math.ceil(key_width / 8.0)) / (BLOCK * 0.9 - 24)) + 1
    return max(0.0, 1 - float(expected) / pages)


def fetch_indexes(conn, args):
    """Rows of INDEX_FIELDS: the indexes INDEXES_SQL selects, with their size and bloat estimate."""
    rows = []
    for row in fetch(conn, INDEXES_SQL, INDEX_SQL_FIELDS, args):
        bloat = index_bloat_ratio(row['tuples'], row['pages'], row['key_width']) if row['valid'] else None
        row.update(bytes=(row['pages'] or 0) * BLOCK, bloat_ratio=bloat)
        rows.append(dict((k, row[k]) for k in INDEX_FIELDS))
    return rows


def table_reasons(row, p):
    """Why a table (dict of TABLE_FIELDS) needs VACUUM/ANALYZE: (vacuum reasons, analyze reasons)."""
    vacuum, analyze = [], []
    live, dead = row['n_live_tup'] or 0, row['n_dead_tup'] or 0
    ratio = float(dead) / (live + dead) if live + dead else 0.0
    if dead >= p['dead_tuples_min'] and ratio >= p['dead_ratio_min']:
        vacuum.append('dead tuples %d (%.0f%%)' % (dead, ratio * 100))
    if row['xid_age'] is not None and row['xid_age'] >= p['xid_age_max']:
        vacuum.append('xid age %d' % row['xid_age'])
    for key, hours, out in (('vacuum_max_age_hours', row['hours_since_vacuum'], vacuum),
                            ('analyze_max_age_hours', row['hours_since_analyze'], analyze)):
        if p.get(key) is not None and (hours is None or hours >= p[key]):
            out.append('%s %s' % (key.split('_', maxsplit=1)[0], 'never run' if hours is None else '%.1f h ago' % hours))
    return vacuum, analyze


def qualified(schema, name):
    return sql.Identifier(schema, name)


def plan_table(row, p):
    """Statements (psycopg.sql objects) and reasons for one table; empty when nothing is due."""
    actions = p['actions']
    vacuum, analyze = table_reasons(row, p)
    name = qualified(row['schema'], row['table'])
    if vacuum and 'vacuum' in actions:
        opts = (['FREEZE'] if any(r.startswith('xid') for r in vacuum) else []) + \
            (['ANALYZE'] if 'analyze' in actions else [])
        head = sql.SQL('VACUUM ({}) ').format(sql.SQL(', '.join(opts))) if opts else sql.SQL('VACUUM ')
        return [head + name], vacuum + analyze
    if analyze and 'analyze' in actions:
        return [sql.SQL('ANALYZE ') + name], analyze
    return [], []


def plan_index(row, p):
    """(statement, reason, irreversible) for one index row, or None when nothing is due."""
    name = qualified(row['schema'], row['index'])
    if not row['valid']:
        if 'invalid_indexes' not in p['actions']:
            return None
        if LEFTOVER_RE.search(row['index']):
            return (sql.SQL('DROP INDEX CONCURRENTLY IF EXISTS ') + name,
                    'invalid leftover of an interrupted REINDEX CONCURRENTLY', True)
        return sql.SQL('REINDEX INDEX CONCURRENTLY ') + name, 'invalid index', True
    if 'reindex' in p['actions'] and row['bloat_ratio'] is not None and row['bloat_ratio'] >= p['index_bloat_ratio_min']:
        return sql.SQL('REINDEX INDEX CONCURRENTLY ') + name, 'estimated bloat %.0f%%' % (row['bloat_ratio'] * 100), False
    return None


def build_plan(tables, indexes, p):
    """One job per table (so no two workers ever contend for the same table), biggest first."""
    jobs = {}

    def job(relid, schema, table, size):
        return jobs.setdefault(relid, dict(relid=relid, schema=schema, table=table, bytes=size or 0,
                                           reasons=[], steps=[], irreversible=False))
    for row in tables:
        stmts, reasons = plan_table(row, p)
        if stmts:
            entry = job(row['relid'], row['schema'], row['table'], row['bytes'])
            entry['reasons'] += reasons
            entry['steps'] += [(None, s, False) for s in stmts]
    for row in indexes:
        planned = plan_index(row, p)
        if planned:
            stmt, reason, irreversible = planned
            entry = job(row['relid'], row['schema'], row['table'], 0)
            entry['reasons'].append('%s: %s' % (row['index'], reason))
            entry['irreversible'] = entry['irreversible'] or irreversible
            # Invalid indexes first (they slow writes and confuse the planner), bloated ones last.
            entry['steps'].insert(0 if not row['valid'] else len(entry['steps']), (row['index'], stmt, irreversible))
    return sorted(jobs.values(), key=lambda j: -j['bytes'])


def fetch(conn, query, fields, args=None):
    return [dict(zip(fields, row)) for row in conn.execute(query, args).fetchall()]


def set_timeouts(conn, p):
    conn.execute("SELECT set_config('lock_timeout', %s, false), set_config('statement_timeout', %s, false)",
                 ('%dms' % (p['lock_timeout'] * 1000), '%dms' % (p['statement_timeout'] * 1000)))


def open_session(p, read_only):
    conn = connect(p, statement_timeout_ms=p['statement_timeout'] * 1000, read_only=read_only)
    set_timeouts(conn, p)
    return conn


def sizes(conn, relid):
    conn.execute('SELECT pg_stat_clear_snapshot()')
    rows = fetch(conn, SIZES_SQL, SIZE_FIELDS, (relid,))
    return rows[0] if rows else None


def skip_reason(exc, p):
    """Why a statement was given up instead of failing the run, or None for a real failure."""
    if isinstance(exc, psycopg.errors.LockNotAvailable):
        return 'lock not available within lock_timeout (%g s)' % p['lock_timeout']
    if isinstance(exc, psycopg.errors.QueryCanceled):
        return 'statement_timeout (%g s) reached' % p['statement_timeout']
    return None


def drop_leftovers(conn, schema, index):
    """After a failed REINDEX CONCURRENTLY, drop the invalid <index>_ccnew copy it leaves behind."""
    rows = conn.execute(
        "SELECT c.relname FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
        "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE NOT i.indisvalid AND n.nspname = %s "
        "AND left(c.relname, %s) = %s", (schema, len(index) + 6, index + '_ccnew')).fetchall()
    dropped = []
    for (name,) in rows:
        if re.match(r'^%s_ccnew[0-9]*$' % re.escape(index), name):
            conn.execute(sql.SQL('DROP INDEX CONCURRENTLY IF EXISTS ') + qualified(schema, name))
            dropped.append('%s.%s' % (schema, name))
    return dropped


def run_job(p, job, secrets):
    """Run one table's statements on its own session; returns the job's report entry."""
    report = dict(schema=job['schema'], table=job['table'], reasons=job['reasons'], status='done',
                  statements=[], before=None, after=None, skip_reason=None, error=None)
    try:
        conn = open_session(p, read_only=False)
    except psycopg.Error as exc:
        report.update(status='failed', error=scrub(first_line(exc), secrets))
        return report
    with conn:
        try:
            report['before'] = sizes(conn, job['relid'])
        except psycopg.Error as exc:
            reason = skip_reason(exc, p)
            report.update(status='skipped' if reason else 'failed', skip_reason=reason,
                          error=None if reason else scrub(first_line(exc), secrets))
            return report
        for index, stmt, _irreversible in job['steps']:
            text = stmt.as_string(conn)
            started = time.monotonic()
            try:
                conn.execute(stmt)
                report['statements'].append(dict(sql=text, duration_seconds=round(time.monotonic() - started, 3)))
            except psycopg.Error as exc:
                reason = skip_reason(exc, p)
                entry = dict(sql=text, duration_seconds=round(time.monotonic() - started, 3),
                             error=scrub(first_line(exc), secrets))
                if index and text.startswith('REINDEX'):
                    try:
                        entry['cleaned_up'] = drop_leftovers(conn, job['schema'], index)
                    except psycopg.Error as cleanup_exc:
                        entry['cleanup_error'] = scrub(first_line(cleanup_exc), secrets)
                report['statements'].append(entry)
                report['status'] = 'skipped' if reason and report['status'] == 'done' else 'failed'
                report['skip_reason'] = reason
                if not reason:
                    report['error'] = entry['error']
                break
        try:
            report['after'] = sizes(conn, job['relid'])
        except psycopg.Error:
            report['after'] = None
    return report


def sessions(conn, p, check_mode):
    idle = fetch(conn, SESSIONS_SQL['idle_in_transaction'], SESSION_FIELDS, (p['idle_in_transaction_seconds'],))
    long_running = fetch(conn, SESSIONS_SQL['long_running'], SESSION_FIELDS, (p['long_running_seconds'],))
    terminated, statements = [], []
    if p['terminate_idle'] and idle:
        # The state is checked again in the same statement: a session that moved on is left alone.
        stmt = ("SELECT pid FROM pg_stat_activity WHERE pid = ANY(%s) AND state IN "
                "('idle in transaction', 'idle in transaction (aborted)') "
                "AND now() - state_change > make_interval(secs => %s) AND pg_terminate_backend(pid)")
        statements.append('SELECT pg_terminate_backend(pid) -- pids %s' % ', '.join(str(r['pid']) for r in idle))
        if not check_mode:
            terminated = [r[0] for r in conn.execute(stmt, ([r['pid'] for r in idle],
                                                            p['idle_in_transaction_seconds'])).fetchall()]
    return dict(idle_in_transaction=idle, long_running=long_running, terminated=terminated,
                terminate_statements=statements)


def disk(conn, p):
    """Database size, pg_wal size (when the role may list it) and free space of the data dir (when local)."""
    out = dict(database_bytes=conn.execute('SELECT pg_database_size(current_database())').fetchone()[0],
               wal_bytes=None, data_directory=None, free_bytes=None, free_ratio=None, notes=[])
    try:
        out['wal_bytes'] = int(conn.execute('SELECT coalesce(sum(size), 0) FROM pg_ls_waldir()').fetchone()[0])
    except psycopg.errors.InsufficientPrivilege:
        out['notes'].append('pg_wal size not readable: the login role needs pg_monitor')
    try:
        out['data_directory'] = conn.execute('SHOW data_directory').fetchone()[0]
    except psycopg.errors.InsufficientPrivilege:
        out['notes'].append('data_directory not readable: the login role needs pg_read_all_settings')
    if out['data_directory'] and (p['login_host'] in LOCAL_HOSTS or str(p['login_host']).startswith('/')):
        try:
            st = os.statvfs(out['data_directory'])
            out['free_bytes'] = st.f_bavail * st.f_frsize
            out['free_ratio'] = round(float(st.f_bavail) / st.f_blocks, 4) if st.f_blocks else None
        except OSError:
            out['notes'].append('data directory not visible from this host')
    return out


def backup(p, pg_dump, secrets):
    """pg_dump -Fc to backup_dir/<db>-<UTC time>.dump (written under a temporary name), keep the newest N."""
    directory = p['backup_dir']
    if not os.path.isdir(directory):
        os.makedirs(directory, 0o700)
    stamp = time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())
    path = os.path.join(directory, '%s-%s.dump' % (p['login_db'], stamp))
    argv = [pg_dump, '--format=custom', '--no-password', '--host', p['login_host'], '--port', str(p['login_port']),
            '--username', p['login_user'], '--dbname', p['login_db'], '--lock-wait-timeout',
            '%ds' % max(1, int(p['lock_timeout'])), '--file', path + '.part']
    env = dict(os.environ, PGCONNECT_TIMEOUT=str(p['connect_timeout']), PGSSLMODE=p['ssl_mode'])
    if p.get('login_password'):
        env['PGPASSWORD'] = p['login_password']
    if p.get('ca_cert'):
        env['PGSSLROOTCERT'] = p['ca_cert']
    started = time.monotonic()
    proc = subprocess.run(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, check=False)
    if proc.returncode != 0:
        if os.path.exists(path + '.part'):
            os.unlink(path + '.part')
        raise RuntimeError('pg_dump failed (rc %d; a table locked by another session stops it after lock_timeout): %s' % (
            proc.returncode, scrub(first_line(proc.stderr.decode('utf-8', 'replace')), secrets)))
    os.rename(path + '.part', path)
    pattern = re.compile(r'^%s-\d{8}T\d{6}Z\.dump$' % re.escape(p['login_db']))
    dumps = sorted(f for f in os.listdir(directory) if pattern.match(f))
    removed = [os.path.join(directory, f) for f in dumps[:-p['backup_keep']]] if p['backup_keep'] else []
    for old in removed:
        os.unlink(old)
    return dict(path=path, bytes=os.path.getsize(path), seconds=round(time.monotonic() - started, 3), removed=removed)


def without_irreversible(jobs, result, reason):
    kept = []
    for job in jobs:
        name = '%s.%s' % (job['schema'], job['table'])
        for index, _stmt, irreversible in job['steps']:
            if irreversible:
                result['skipped_tables'].append(dict(table=name, index=index, reason=reason))
        job['steps'] = [s for s in job['steps'] if not s[2]]
        if job['steps']:
            kept.append(job)
    return kept


def maintain(p, check_mode, pg_dump=None):
    """Inspect, plan and (unless check_mode) act. Returns the module result (without 'failed').

    Skipped and failed tables go in skipped_tables/failed_tables: Ansible reads a truthy `skipped` key as
    "this task was skipped" and `failed` as the task's own status."""
    secrets = [p.get('login_password')]
    started = time.monotonic()
    args = dict(block=BLOCK, schemas=p['schemas'], exclude=p['exclude_tables'], min_bytes=p['index_bloat_min_bytes'])
    with open_session(p, read_only=check_mode) as conn:
        tables = fetch(conn, TABLES_SQL, TABLE_FIELDS, args)
        indexes = fetch_indexes(conn, args)
        session_report = sessions(conn, p, check_mode=True)
        disk_report = disk(conn, p)
        jobs = build_plan(tables, indexes, p)
        plan = [dict(schema=j['schema'], table=j['table'], reasons=j['reasons'],
                     statements=[s[1].as_string(conn) for s in j['steps']]) for j in jobs]
        irreversible = any(j['irreversible'] for j in jobs) or bool(session_report['terminate_statements'])
        result = dict(plan=plan, sessions=session_report, disk=disk_report, backup=None,
                      tables=[], skipped_tables=[], failed_tables=[], statements=[],
                      indexes=[dict((k, v) for k, v in i.items() if k != 'relid') for i in indexes
                               if not i['valid'] or (i['bloat_ratio'] or 0) >= p['index_bloat_ratio_min']],
                      candidates=len(tables))
        want_backup = p['backup'] == 'always' or (p['backup'] == 'auto' and irreversible)
        if check_mode:
            result.update(changed=bool(plan or session_report['terminate_statements']),
                          backup=dict(planned=want_backup, dir=p['backup_dir']),
                          elapsed_seconds=round(time.monotonic() - started, 3))
            return result
        if want_backup:
            if not pg_dump:
                raise RuntimeError('a backup is needed before an irreversible step but pg_dump was not found: '
                                   'install the PostgreSQL client, set pg_dump_path, or backup=never')
            try:
                result['backup'] = backup(p, pg_dump, secrets)
            except RuntimeError as exc:
                # No backup, no irreversible step: those are skipped and reported, the rest proceeds.
                result['backup'] = dict(error=str(exc))
                jobs = without_irreversible(jobs, result, 'no backup (%s)' % exc)
        # Idle-in-transaction sessions hold back the xmin horizon: end them before VACUUM.
        result['sessions'] = sessions(conn, p, check_mode='error' in (result['backup'] or {}))
    if jobs:
        with ThreadPoolExecutor(max_workers=max(1, min(p['workers'], len(jobs)))) as pool:
            reports = list(pool.map(lambda j: run_job(p, j, secrets), jobs))
    else:
        reports = []
    for rep in reports:
        result['tables'].append(rep)
        result['statements'] += [dict(s, table='%s.%s' % (rep['schema'], rep['table'])) for s in rep['statements']]
        if rep['status'] == 'skipped':
            result['skipped_tables'].append(dict(table='%s.%s' % (rep['schema'], rep['table']), reason=rep['skip_reason']))
        elif rep['status'] == 'failed':
            result['failed_tables'].append(dict(table='%s.%s' % (rep['schema'], rep['table']), error=rep['error']))
    ran = [s for s in result['statements'] if not s.get('error')]
    result.update(changed=bool(ran or result['sessions']['terminated'] or 'path' in (result['backup'] or {})),
                  elapsed_seconds=round(time.monotonic() - started, 3))
    return result
