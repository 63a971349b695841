# -*- coding: utf-8 -*-
# Copyright: sqlsynth.runbooks contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""PostgreSQL connection and read-only health queries shared by the collection's modules."""

from __future__ import (absolute_import, division, print_function)
__metaclass__ = type

import re
import traceback

from ansible_collections.sqlsynth.runbooks.plugins.module_utils._common import (
    first_line, percent, ratio, scrub, unreachable)

try:
    import psycopg
    HAS_PSYCOPG = True
    PSYCOPG_IMPORT_ERROR = None
except ImportError:
    HAS_PSYCOPG = False
    PSYCOPG_IMPORT_ERROR = traceback.format_exc()

APPLICATION_NAME = 'sqlsynth_runbooks'
SSL_MODES = ['disable', 'allow', 'prefer', 'require', 'verify-ca', 'verify-full']


def connection_argument_spec():
    """Options of the sqlsynth.runbooks.postgres doc fragment."""
    return dict(
        login_host=dict(type='str', default='127.0.0.1'),
        login_port=dict(type='int', default=5432),
        login_user=dict(type='str', default='postgres'),
        login_password=dict(type='str', no_log=True),
        login_db=dict(type='str', default='postgres'),
        connect_timeout=dict(type='int', default=5),
        ssl_mode=dict(type='str', default='prefer', choices=SSL_MODES),
        ca_cert=dict(type='path'),
    )


def connect(params, statement_timeout_ms, read_only=True):
    """Open an autocommit session with statement_timeout (and read-only) set on it.

    Parameters go to libpq as separate keywords, never as a DSN string built here."""
    kwargs = dict(host=params['login_host'], port=params['login_port'], user=params['login_user'],
                  password=params['login_password'], dbname=params['login_db'],
                  connect_timeout=params['connect_timeout'], sslmode=params['ssl_mode'],
                  sslrootcert=params.get('ca_cert'), application_name=APPLICATION_NAME)
    conn = psycopg.connect(autocommit=True, **dict((k, v) for k, v in kwargs.items() if v not in (None, '')))
    conn.execute("SELECT set_config('statement_timeout', %s, false), "
                 "set_config('default_transaction_read_only', %s, false)",
                 (str(int(statement_timeout_ms)), 'on' if read_only else 'off'))
    return conn


def describe_connect_error(exc, params):
    """(short human text, kind) for a failed connection; never contains the password."""
    where = '%s:%s' % (params['login_host'], params['login_port'])
    raw = str(exc)
    low = raw.lower()
    if 'connection refused' in low:
        text, kind = 'connection refused at %s' % where, 'refused'
    elif 'password authentication failed' in low or 'no password supplied' in low \
            or 'authentication failed' in low:
        text, kind = 'authentication failed for user %s at %s (password wrong or missing)' % (
            params['login_user'], where), 'auth'
    elif 'timeout expired' in low or 'timed out' in low:
        text, kind = 'timeout after %s s connecting to %s' % (params['connect_timeout'], where), 'timeout'
    elif 'translate host name' in low or 'name or service not known' in low:
        text, kind = 'cannot resolve host %s' % params['login_host'], 'dns'
    elif re.search(r'\bssl\b|certificate', low):
        text, kind = 'TLS failure connecting to %s: %s' % (where, _detail(raw)), 'tls'
    else:
        text, kind = 'cannot connect to %s: %s' % (where, _detail(raw)), 'other'
    return scrub(text, [params.get('login_password')]), kind


def _detail(raw):
    """The server's own words without psycopg's 'connection to server at ... failed:' preamble."""
    line = first_line(raw)
    return line.rsplit(' failed: ', 1)[-1]


SESSIONS_SQL = {
    'long_running': """
        SELECT pid, usename, application_name, host(client_addr) AS client_addr, state,
               round(extract(epoch FROM now() - query_start)::numeric, 1)::float8 AS duration_seconds,
               left(query, 200) AS query
        FROM pg_stat_activity
        WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()
          AND state = 'active' AND now() - query_start > make_interval(secs => %s)
        ORDER BY query_start""",
    'idle_in_transaction': """
        SELECT pid, usename, application_name, host(client_addr) AS client_addr, state,
               round(extract(epoch FROM now() - state_change)::numeric, 1)::float8 AS duration_seconds,
               left(query, 200) AS query
        FROM pg_stat_activity
        WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()
          AND state IN ('idle in transaction', 'idle in transaction (aborted)')
          AND now() - state_change > make_interval(secs => %s)
        ORDER BY state_change""",
}
COUNTS_SQL = """
    SELECT coalesce(state, 'unknown'), coalesce(nullif(application_name, ''), '(none)'), count(*)
    FROM pg_stat_activity WHERE backend_type = 'client backend' GROUP BY 1, 2"""
SESSION_FIELDS = ('pid', 'usename', 'application_name', 'client_addr', 'state', 'duration_seconds', 'query')


def collect(conn, params):
    """Read server version, connection use and slow/idle sessions (all read-only)."""
    version, max_conn = conn.execute(
        "SELECT current_setting('server_version'), current_setting('max_connections')::int").fetchone()
    by_state, by_app = {}, {}
    for state, app, count in conn.execute(COUNTS_SQL).fetchall():
        by_state[state] = by_state.get(state, 0) + count
        by_app[app] = by_app.get(app, 0) + count
    used = sum(by_state.values())
    data = dict(server_version=version,
                connections=dict(used=used, max=max_conn, ratio=ratio(used, max_conn),
                                 by_state=by_state, by_application=by_app))
    for key, threshold in (('long_running', 'long_running_seconds'),
                           ('idle_in_transaction', 'idle_in_transaction_seconds')):
        rows = conn.execute(SESSIONS_SQL[key], (params[threshold],)).fetchall()
        data[key] = [dict(zip(SESSION_FIELDS, row)) for row in rows]
    return data


def _plural(count, one, many):
    return '%d %s' % (count, one if count == 1 else many)


def evaluate(data, params):
    """Short human failure lines for the thresholds exceeded in collected data."""
    failures = []
    conns = data['connections']
    if conns['ratio'] is not None and conns['ratio'] > params['connections_max_ratio']:
        failures.append('connections %d/%d above %s' % (
            conns['used'], conns['max'], percent(params['connections_max_ratio'])))
    if data['long_running']:
        failures.append('%s running longer than %g s' % (
            _plural(len(data['long_running']), 'query', 'queries'), params['long_running_seconds']))
    if data['idle_in_transaction']:
        failures.append('%s idle in transaction longer than %g s' % (
            _plural(len(data['idle_in_transaction']), 'session', 'sessions'),
            params['idle_in_transaction_seconds']))
    return failures


def health(params):
    """Full health result for postgres_health_info; unreachable servers are data, not exceptions."""
    secrets = [params.get('login_password')]
    try:
        conn = connect(params, statement_timeout_ms=max(1000, params['connect_timeout'] * 1000))
    except psycopg.Error as exc:
        return unreachable(*describe_connect_error(exc, params))
    try:
        with conn:
            data = collect(conn, params)
    except psycopg.Error as exc:
        error = scrub('query failed on %s:%s: %s' % (params['login_host'], params['login_port'],
                                                     first_line(exc)), secrets)
        result = unreachable(error, 'query')
        result['reachable'] = True
        return result
    for row in data['long_running'] + data['idle_in_transaction']:
        row['query'] = scrub(row['query'], secrets) if row['query'] is not None else None
    failures = evaluate(data, params)
    data.update(reachable=True, error=None, error_kind=None, ok=not failures, failures=failures)
    return data
