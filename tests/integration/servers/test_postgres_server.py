# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""postgres_health_info against a real, throwaway PostgreSQL 15 cluster."""
import json
import threading
import time

import psycopg
import pytest

from ansible_collections.sqlsynth.runbooks.plugins.module_utils import _postgres


def test_healthy_server_reports_version_and_connections(pg_server, run_module):
    result, output = run_module('postgres_health_info', pg_server.module_args())
    assert result['reachable'] is True and result['ok'] is True and result['failures'] == []
    assert result['server_version'].startswith('15.')
    conns = result['connections']
    assert conns['max'] == 20 and conns['used'] >= 1
    assert conns['ratio'] == round(conns['used'] / 20.0, 4)
    assert conns['by_application'].get('sqlsynth_runbooks') == 1  # the check's own session
    assert sum(conns['by_state'].values()) == conns['used']
    assert result['changed'] is False
    assert pg_server.password not in output


def test_wrong_password_is_reported_without_the_password(pg_server, run_module):
    wrong = 'not-the-Password-42'
    result, output = run_module('postgres_health_info', pg_server.module_args(login_password=wrong))
    assert (result['reachable'], result['ok'], result['error_kind']) == (False, False, 'auth')
    assert result['failures'] == ['authentication failed for user health_tester at 127.0.0.1:%d '
                                  '(password wrong or missing)' % pg_server.port]
    assert wrong not in output and pg_server.password not in output
    # The module's own data, before Ansible's no_log masking, holds no password either.
    raw = _postgres.health(pg_server.params(login_password=wrong))
    assert raw['error_kind'] == 'auth' and wrong not in json.dumps(raw)


def test_stopped_server_is_refused_and_comes_back(pg_server):
    pg_server.stop()
    try:
        result = _postgres.health(pg_server.params())
        assert result == {'reachable': False, 'ok': False, 'error_kind': 'refused',
                          'error': 'connection refused at 127.0.0.1:%d' % pg_server.port,
                          'failures': ['connection refused at 127.0.0.1:%d' % pg_server.port]}
    finally:
        pg_server.start()
    assert _postgres.health(pg_server.params())['ok'] is True


def test_session_idle_in_transaction_shows_up_past_threshold(pg_server):
    with pg_server.connect() as idle:
        idle.execute('SELECT 1 AS forgotten_transaction')  # opens a transaction and leaves it open
        time.sleep(1.5)
        result = _postgres.health(pg_server.params(idle_in_transaction_seconds=1))
        default = _postgres.health(pg_server.params())
        pid = idle.info.backend_pid
        idle.rollback()
    (session,) = [s for s in result['idle_in_transaction'] if s['pid'] == pid]
    assert session['state'] == 'idle in transaction' and session['usename'] == pg_server.user
    assert session['duration_seconds'] >= 1 and session['client_addr'] == '127.0.0.1'
    assert session['query'] == 'SELECT 1 AS forgotten_transaction'
    assert result['ok'] is False
    assert '1 session idle in transaction longer than 1 s' in result['failures']
    assert default['idle_in_transaction'] == [] and default['ok'] is True  # 300 s threshold: not yet


def test_long_running_query_shows_up_with_truncated_text(pg_server, wait_for):
    comment = 'x' * 300
    with pg_server.connect(autocommit=True) as busy:
        pid = busy.info.backend_pid

        def sleep():
            try:
                busy.execute('SELECT pg_sleep(60) /* %s */' % comment)
            except psycopg.errors.QueryCanceled:
                pass
        worker = threading.Thread(target=sleep)
        worker.start()
        try:
            with pg_server.admin() as admin:
                wait_for(lambda: admin.execute(
                    "SELECT now() - query_start > interval '1.2 s' FROM pg_stat_activity "
                    "WHERE pid = %s AND state = 'active'", (pid,)).fetchone()[0], 'pg_sleep running')
            result = _postgres.health(pg_server.params(long_running_seconds=1))
        finally:
            busy.cancel_safe()
            worker.join(timeout=30)
    (query,) = [s for s in result['long_running'] if s['pid'] == pid]
    assert query['state'] == 'active' and query['duration_seconds'] >= 1
    assert query['query'].startswith('SELECT pg_sleep(60)') and len(query['query']) == 200
    assert result['failures'] == ['1 query running longer than 1 s']


def test_connections_above_ratio_fail(pg_server):
    sessions = [pg_server.connect() for dummy in range(5)]
    try:
        result = _postgres.health(pg_server.params(connections_max_ratio=0.25))
    finally:
        for conn in sessions:
            conn.close()
    used = result['connections']['used']
    assert used >= 6 and result['connections']['by_state'].get('idle', 0) >= 5
    assert result['failures'] == ['connections %d/20 above 25%%' % used]


def test_module_session_is_read_only_with_statement_timeout(pg_server):
    with _postgres.connect(pg_server.params(), statement_timeout_ms=1000) as conn:
        with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
            conn.execute('CREATE TABLE must_not_exist (id int)')
        with pytest.raises(psycopg.errors.QueryCanceled):
            conn.execute('SELECT pg_sleep(5)')
