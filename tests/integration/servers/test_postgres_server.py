# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""postgres_health_info and postgres_maintenance against a real, throwaway PostgreSQL 15 cluster."""
import json
import threading
import time

import psycopg
import pytest
from ansible.module_utils.testing import patch_module_args
from psycopg import sql

from ansible_collections.sqlsynth.runbooks.plugins.module_utils import _pg_maint, _postgres
from ansible_collections.sqlsynth.runbooks.plugins.modules import postgres_maintenance

MIB = 1024 * 1024
ROWS = 600000  # a 600k-row int4 primary key is ~13 MB: over the module's default 10 MiB index_bloat_min_bytes


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


@pytest.fixture(name='maint_schema')
def maint_schema_fixture(pg_server, request):
    """A schema of its own for each maintenance test (the module is pointed at it), dropped afterwards."""
    name = 'maint_' + request.node.name[len('test_'):][:50]
    with pg_server.connect(autocommit=True) as conn:
        conn.execute(sql.SQL('CREATE SCHEMA {}').format(sql.Identifier(name)))
    yield name
    with pg_server.connect(autocommit=True) as conn:
        conn.execute(sql.SQL('DROP SCHEMA {} CASCADE').format(sql.Identifier(name)))


def _make_table(conn, schema, table, bloat=False, text_indexes=False):
    """ROWS rows (id int primary key, code = md5(id)); with bloat, 90% of them deleted all over the key range.

    Loaded like pg_restore does, data first, then the indexes (so their relpages and reltuples, which the
    module reads, are current), and autovacuum is off: no ANALYZE ever runs, no column has statistics.
    With bloat every leaf page of the primary key keeps 1 entry in 10, so VACUUM can free none of them:
    the heap is clean, the index stays as big and 90% empty."""
    name = sql.Identifier(schema, table)
    conn.execute(sql.SQL('CREATE TABLE {} (id int NOT NULL, code text NOT NULL) WITH (autovacuum_enabled = false)').format(name))
    conn.execute(sql.SQL('INSERT INTO {} SELECT g, md5(g::text) FROM generate_series(1, %s) g').format(name), (ROWS,))
    conn.execute(sql.SQL('ALTER TABLE {} ADD PRIMARY KEY (id)').format(name))
    if text_indexes:
        conn.execute(sql.SQL('CREATE INDEX {} ON {} (code)').format(sql.Identifier(table + '_code'), name))
        conn.execute(sql.SQL('CREATE INDEX {} ON {} (lower(code))').format(sql.Identifier(table + '_lower_code'), name))
    if bloat:
        conn.execute(sql.SQL('DELETE FROM {} WHERE id % 10 <> 0').format(name))
    conn.execute(sql.SQL('VACUUM {}').format(name))


def _indexes(conn, schema, table):
    """{index name: dict(bytes=pg_relation_size, valid=indisvalid, filenode=relfilenode)} of one table."""
    rows = conn.execute(
        'SELECT c.relname, pg_relation_size(c.oid), i.indisvalid, c.relfilenode FROM pg_index i '
        'JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_class t ON t.oid = i.indrelid '
        'JOIN pg_namespace n ON n.oid = t.relnamespace WHERE n.nspname = %s AND t.relname = %s', (schema, table))
    return dict((r[0], dict(bytes=r[1], valid=r[2], filenode=r[3])) for r in rows.fetchall())


def _count(conn, schema, table):
    return conn.execute(sql.SQL('SELECT count(*) FROM {}').format(sql.Identifier(schema, table))).fetchone()[0]


def _estimates(conn, schema):
    """{index: (bytes, bloat estimate)} as the module sees them, for every btree index of the schema (no size floor)."""
    rows = _pg_maint.fetch_indexes(conn, dict(block=_pg_maint.BLOCK, schemas=[schema], exclude=[], min_bytes=0))
    return dict((r['index'], (r['bytes'], r['bloat_ratio'])) for r in rows)


def _maintenance_check_mode(args, capsys):
    """postgres_maintenance in check mode, in this process (AnsibleModule's own check mode); its result."""
    with patch_module_args(dict(args, _ansible_check_mode=True)), pytest.raises(SystemExit) as exit_info:
        postgres_maintenance.main()
    result = json.loads(capsys.readouterr().out)
    assert exit_info.value.code == 0, result
    return result


def test_reindex_rebuilds_a_really_bloated_index_and_only_that(pg_server, run_module, maint_schema, tmp_path):
    with pg_server.connect(autocommit=True) as conn:
        _make_table(conn, maint_schema, 'Event Log', bloat=True)
        _make_table(conn, maint_schema, 'clean')
        before, clean = _indexes(conn, maint_schema, 'Event Log'), _indexes(conn, maint_schema, 'clean')
        assert _count(conn, maint_schema, 'Event Log') == ROWS // 10
        estimates = _estimates(conn, maint_schema)
    # Same size, both over the default 10 MiB floor as the module sees them: only the bloat estimate tells them apart.
    assert before['Event Log_pkey']['bytes'] == clean['clean_pkey']['bytes'] >= 10 * MIB
    assert estimates['Event Log_pkey'][0] == estimates['clean_pkey'][0] == clean['clean_pkey']['bytes']
    assert estimates['Event Log_pkey'][1] >= 0.5 and estimates['clean_pkey'][1] < 0.05
    args = pg_server.module_args(schemas=[maint_schema], actions=['reindex'], backup_dir=str(tmp_path))
    result, output = run_module('postgres_maintenance', args)
    statement = 'REINDEX INDEX CONCURRENTLY "%s"."Event Log_pkey"' % maint_schema
    (index,) = result['indexes']
    assert (index['schema'], index['table'], index['index'], index['valid']) == (maint_schema, 'Event Log', 'Event Log_pkey', True)
    assert index['bytes'] == before['Event Log_pkey']['bytes'] and index['bloat_ratio'] >= 0.5
    assert result['plan'] == [dict(schema=maint_schema, table='Event Log', statements=[statement],
                                   reasons=['Event Log_pkey: estimated bloat %.0f%%' % (index['bloat_ratio'] * 100)])]
    assert [(s['table'], s['sql'], s.get('error')) for s in result['statements']] == [
        ('%s.Event Log' % maint_schema, statement, None)]
    assert [t['status'] for t in result['tables']] == ['done']
    assert (result['changed'], result['backup']) == (True, None), sorted(result)
    assert pg_server.password not in output
    with pg_server.connect(autocommit=True) as conn:
        after = _indexes(conn, maint_schema, 'Event Log')
        assert _count(conn, maint_schema, 'Event Log') == ROWS // 10
        assert _indexes(conn, maint_schema, 'clean') == clean  # not rebuilt: same file, same size
    assert list(after) == ['Event Log_pkey']  # no _ccnew/_ccold left behind
    assert after['Event Log_pkey']['valid'] is True
    assert after['Event Log_pkey']['filenode'] != before['Event Log_pkey']['filenode']
    assert after['Event Log_pkey']['bytes'] < before['Event Log_pkey']['bytes'] / 4
    again, _output = run_module('postgres_maintenance', args)
    assert (again['plan'], again['indexes'], again['statements'], again['changed']) == ([], [], [], False)


def test_clean_indexes_over_the_size_floor_are_not_selected(pg_server, maint_schema, capsys):
    args = pg_server.module_args(schemas=[maint_schema], actions=['reindex'])
    with pg_server.connect(autocommit=True) as conn:
        _make_table(conn, maint_schema, 'clean', text_indexes=True)
        sizes = dict((name, i['bytes']) for name, i in _indexes(conn, maint_schema, 'clean').items())
        assert sorted(sizes) == ['clean_code', 'clean_lower_code', 'clean_pkey']
        estimates = _estimates(conn, maint_schema)
        # The size floor lets every one through to the estimate.
        assert min(sizes.values()) >= 10 * MIB and dict((k, v[0]) for k, v in estimates.items()) == sizes
        # Never analyzed: the width of a text key is unknown, so no estimate (not a guessed 8 bytes, 62% "bloat").
        estimates = dict((k, v[1]) for k, v in estimates.items())
        assert estimates['clean_pkey'] < 0.05 and estimates['clean_code'] is None and estimates['clean_lower_code'] is None
        result = _maintenance_check_mode(args, capsys)
        assert (result['plan'], result['indexes'], result['changed']) == ([], [], False)
        # Analyzed: column widths from pg_stats, the expression's from the index's own statistics.
        conn.execute(sql.SQL('ANALYZE {}').format(sql.Identifier(maint_schema, 'clean')))
        estimates = dict((k, v[1]) for k, v in _estimates(conn, maint_schema).items())
        assert None not in estimates.values() and max(estimates.values()) < 0.05, estimates
        result = _maintenance_check_mode(args, capsys)
        assert (result['plan'], result['indexes'], result['changed']) == ([], [], False)


def test_check_mode_lists_the_reindex_and_changes_nothing(pg_server, maint_schema, capsys):
    with pg_server.connect(autocommit=True) as conn:
        _make_table(conn, maint_schema, 'Event Log', bloat=True)
        before = _indexes(conn, maint_schema, 'Event Log')
        result = _maintenance_check_mode(pg_server.module_args(schemas=[maint_schema], actions=['reindex']), capsys)
        assert _indexes(conn, maint_schema, 'Event Log') == before  # same file, same size, still valid
    statement = 'REINDEX INDEX CONCURRENTLY "%s"."Event Log_pkey"' % maint_schema
    assert [(p['table'], p['statements']) for p in result['plan']] == [('Event Log', [statement])]
    assert [(i['index'], i['bloat_ratio'] >= 0.5) for i in result['indexes']] == [('Event Log_pkey', True)]
    assert (result['changed'], result['statements'], result['tables']) == (True, [], [])
    assert result['backup'] == dict(planned=False, dir='/var/backups/sqlsynth/postgres')
