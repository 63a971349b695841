# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Unit tests for postgres_maintenance: selection by need, the SQL planned, skip reasons, backups, option checks."""
import json
import os

import psycopg
import pytest
from ansible.module_utils.testing import patch_module_args

from ansible_collections.sqlsynth.runbooks.plugins.module_utils import _pg_maint
from ansible_collections.sqlsynth.runbooks.plugins.modules import postgres_maintenance

P = dict(actions=list(_pg_maint.ACTIONS), dead_tuples_min=1000, dead_ratio_min=0.2, xid_age_max=150000000,
         vacuum_max_age_hours=None, analyze_max_age_hours=None, index_bloat_ratio_min=0.5,
         lock_timeout=2.0, statement_timeout=60.0)


def table(name='t', live=10000, dead=0, vac=1.0, ana=1.0, xid=1000, size=8192, schema='public', relid=None):
    return dict(relid=relid or hash(name) % 100000, schema=schema, table=name, n_live_tup=live, n_dead_tup=dead,
                hours_since_vacuum=vac, hours_since_analyze=ana, xid_age=xid, bytes=size)


def index(name, valid=True, bloat=None, tbl='t', relid=None):
    return dict(relid=relid or hash(tbl) % 100000, schema='public', table=tbl, index=name, valid=valid,
                bytes=0, bloat_ratio=bloat)


def sql_of(stmts):
    return [s.as_string(None) for s in stmts]


def test_clean_table_needs_nothing():
    assert _pg_maint.plan_table(table(dead=100), P) == ([], [])


def test_dead_tuples_over_both_thresholds_give_vacuum_analyze_with_quoted_name():
    stmts, reasons = _pg_maint.plan_table(table('Query "History"', live=6000, dead=4000), P)
    assert sql_of(stmts) == ['VACUUM (ANALYZE) "public"."Query ""History"""']
    assert reasons == ['dead tuples 4000 (40%)']


@pytest.mark.parametrize('live,dead', [(100, 900), (100000, 5000)], ids=['count-too-low', 'ratio-too-low'])
def test_both_count_and_ratio_are_needed(live, dead):
    assert _pg_maint.plan_table(table(live=live, dead=dead), P) == ([], [])


def test_xid_age_gives_freeze():
    stmts, reasons = _pg_maint.plan_table(table(xid=200000000), P)
    assert sql_of(stmts) == ['VACUUM (FREEZE, ANALYZE) "public"."t"']
    assert reasons == ['xid age 200000000']


def test_vacuum_without_analyze_action():
    stmts = _pg_maint.plan_table(table(dead=5000, live=100), dict(P, actions=['vacuum']))[0]
    assert sql_of(stmts) == ['VACUUM "public"."t"']


def test_ages_only_count_when_set_and_never_counts_as_due():
    assert _pg_maint.plan_table(table(vac=None, ana=None), P) == ([], [])
    p = dict(P, vacuum_max_age_hours=24, analyze_max_age_hours=12)
    stmts, reasons = _pg_maint.plan_table(table(vac=None, ana=1.0), p)
    assert sql_of(stmts) == ['VACUUM (ANALYZE) "public"."t"'] and reasons == ['vacuum never run']
    stmts, reasons = _pg_maint.plan_table(table(vac=2.0, ana=30.0), p)
    assert sql_of(stmts) == ['ANALYZE "public"."t"'] and reasons == ['analyze 30.0 h ago']


def test_ccnew_leftover_is_dropped_other_invalid_rebuilt_bloated_reindexed():
    drop = _pg_maint.plan_index(index('t_pkey_ccnew', valid=False), P)
    assert drop[0].as_string(None) == 'DROP INDEX CONCURRENTLY IF EXISTS "public"."t_pkey_ccnew"' and drop[2]
    assert _pg_maint.plan_index(index('t_pkey_ccnew1', valid=False), P)[0].as_string(None).startswith('DROP')
    rebuild = _pg_maint.plan_index(index('t_v_idx', valid=False), P)
    assert rebuild[0].as_string(None) == 'REINDEX INDEX CONCURRENTLY "public"."t_v_idx"' and rebuild[2]
    bloated = _pg_maint.plan_index(index('t_v_idx', bloat=0.7), P)
    assert bloated[0].as_string(None) == 'REINDEX INDEX CONCURRENTLY "public"."t_v_idx"'
    assert bloated[1] == 'estimated bloat 70%' and not bloated[2]
    assert _pg_maint.plan_index(index('t_v_idx', bloat=0.3), P) is None
    assert _pg_maint.plan_index(index('t_v_idx', bloat=None), P) is None


@pytest.mark.parametrize('tuples,pages,width,expected', [
    (60000, 1648, 4, 0.900),    # int4 primary key of 600k rows, 90% deleted all over the key range, VACUUMed
    (600000, 1648, 4, 0.0085),  # the same index with all its rows (as built)
    (60000, 166, 4, 0.006),     # the bloated one after REINDEX
    (600000, 4327, 33, 0.0185),  # md5 text key, analyzed (avg_width 33), as built
], ids=['bloated', 'clean', 'reindexed', 'text-key'])
def test_bloat_estimate_matches_btrees_measured_on_postgresql_15(tuples, pages, width, expected):
    assert _pg_maint.index_bloat_ratio(tuples, pages, width) == pytest.approx(expected, abs=0.001)


def test_no_bloat_estimate_without_key_width_counts_or_pages():
    # Guessing 8 bytes for the unanalyzed 33-byte text key would call the clean index 62% bloated.
    assert _pg_maint.index_bloat_ratio(600000, 4327, 8) > 0.6
    assert _pg_maint.index_bloat_ratio(600000, 4327, None) is None
    assert _pg_maint.index_bloat_ratio(-1, 4327, 4) is None  # reltuples -1: never vacuumed or analyzed
    assert _pg_maint.index_bloat_ratio(None, 4327, 4) is None
    assert _pg_maint.index_bloat_ratio(600000, 1, 4) is None and _pg_maint.index_bloat_ratio(600000, 0, 4) is None
    assert _pg_maint.index_bloat_ratio(600000, 800, 4) == 0.0  # smaller than expected (deduplicated): no bloat


class FakeConn:
    def __init__(self, rows):
        self.rows, self.calls = rows, []

    def execute(self, query, args=None):
        self.calls.append((query, args))
        return self

    def fetchall(self):
        return self.rows


def test_fetch_indexes_turns_pages_counts_and_width_into_bytes_and_estimate():
    conn = FakeConn([(7, 'public', 't', 't_pkey', True, 1648, 60000.0, 4.0),
                     (7, 'public', 't', 't_code', True, 4327, 600000.0, None),
                     (7, 'public', 't', 't_pkey_ccnew', False, 1648, 60000.0, 4.0)])
    args = dict(block=8192, schemas=[], exclude=[], min_bytes=10485760)
    rows = _pg_maint.fetch_indexes(conn, args)
    assert conn.calls == [(_pg_maint.INDEXES_SQL, args)]
    assert [sorted(r) for r in rows] == [sorted(_pg_maint.INDEX_FIELDS)] * 3
    assert [(r['index'], r['bytes']) for r in rows] == [('t_pkey', 13500416), ('t_code', 35446784), ('t_pkey_ccnew', 13500416)]
    assert rows[0]['bloat_ratio'] == pytest.approx(0.9, abs=0.001)
    assert rows[1]['bloat_ratio'] is None and rows[2]['bloat_ratio'] is None  # unknown width; invalid index
    assert _pg_maint.plan_index(rows[0], P)[1] == 'estimated bloat 90%' and _pg_maint.plan_index(rows[1], P) is None


def test_index_actions_can_be_switched_off():
    p = dict(P, actions=['vacuum', 'analyze'])
    assert _pg_maint.plan_index(index('x_ccnew', valid=False), p) is None
    assert _pg_maint.plan_index(index('x', bloat=0.9), p) is None


def test_plan_groups_by_table_invalid_first_biggest_table_first():
    tables = [table('small', dead=5000, live=100, size=10, relid=1), table('big', dead=5000, live=100, size=999, relid=2),
              table('clean', relid=3)]
    indexes = [index('small_v_idx', bloat=0.9, tbl='small', relid=1), index('small_v_idx_ccnew', False, tbl='small', relid=1)]
    plan = _pg_maint.build_plan(tables, indexes, P)
    assert [j['table'] for j in plan] == ['big', 'small']
    small = plan[1]
    assert [s[1].as_string(None) for s in small['steps']] == [
        'DROP INDEX CONCURRENTLY IF EXISTS "public"."small_v_idx_ccnew"',
        'VACUUM (ANALYZE) "public"."small"',
        'REINDEX INDEX CONCURRENTLY "public"."small_v_idx"']
    assert small['irreversible'] and not plan[0]['irreversible']


def test_without_irreversible_keeps_vacuum_and_reports_the_rest():
    plan = _pg_maint.build_plan([table('a', dead=5000, live=1, relid=1)],
                                [index('a_ccnew', False, tbl='a', relid=1), index('b_ccnew', False, tbl='b', relid=2)], P)
    result = dict(skipped_tables=[])
    kept = _pg_maint.without_irreversible(plan, result, 'no backup (x)')
    assert [[s[1].as_string(None) for s in j['steps']] for j in kept] == [['VACUUM (ANALYZE) "public"."a"']]
    assert sorted(s['index'] for s in result['skipped_tables']) == ['a_ccnew', 'b_ccnew']
    assert all(s['reason'] == 'no backup (x)' for s in result['skipped_tables'])


def test_lock_and_statement_timeouts_are_skips_other_errors_are_failures():
    assert 'lock_timeout (2 s)' in _pg_maint.skip_reason(psycopg.errors.LockNotAvailable(), P)
    assert 'statement_timeout (60 s)' in _pg_maint.skip_reason(psycopg.errors.QueryCanceled(), P)
    assert _pg_maint.skip_reason(psycopg.errors.InsufficientPrivilege(), P) is None


def test_backup_keeps_the_newest_and_never_leaks_the_password(tmp_path):
    fake = tmp_path / 'pg_dump'
    fake.write_text('#!/bin/sh\n[ -n "$PGPASSWORD" ] || exit 3\nfor a; do f=$a; done\necho dump > "$f"\n')
    fake.chmod(0o755)
    backups = tmp_path / 'b'
    backups.mkdir()
    for stamp in ('20200101T000000Z', '20200102T000000Z', '20200103T000000Z'):
        (backups / ('app-%s.dump' % stamp)).write_text('old')
    (backups / 'other.txt').write_text('keep')
    p = dict(login_host='127.0.0.1', login_port=5432, login_user='u', login_password='s3cret', login_db='app',
             connect_timeout=5, ssl_mode='prefer', ca_cert=None, lock_timeout=2, backup_dir=str(backups), backup_keep=2)
    out = _pg_maint.backup(p, str(fake), ['s3cret'])
    assert os.path.exists(out['path']) and out['bytes'] > 0
    assert sorted(os.listdir(backups)) == sorted([os.path.basename(out['path']), 'app-20200103T000000Z.dump', 'other.txt'])
    fake.write_text('#!/bin/sh\necho "FATAL: password s3cret rejected" >&2\nexit 1\n')
    with pytest.raises(RuntimeError) as err:
        _pg_maint.backup(p, str(fake), ['s3cret'])
    assert 's3cret' not in str(err.value) and 'pg_dump failed (rc 1' in str(err.value)
    assert not [f for f in os.listdir(backups) if f.endswith('.part')]


def run_main(args, capsys):
    with patch_module_args(args), pytest.raises(SystemExit) as exit_info:
        postgres_maintenance.main()
    return exit_info.value.code, json.loads(capsys.readouterr().out)


@pytest.mark.parametrize('args,text', [
    (dict(dead_ratio_min=1.5), 'dead_ratio_min must be between 0 and 1'),
    (dict(workers=0), 'workers must be greater than 0'),
    (dict(lock_timeout=0), 'lock_timeout must be greater than 0'),
    (dict(backup_keep=-1), 'backup_keep must not be negative'),
    (dict(actions=['vacuum', 'full']), 'value of actions must be one or more of'),
])
def test_bad_options_fail_with_a_clear_message(args, text, capsys):
    code, result = run_main(args, capsys)
    assert code == 1 and result['failed'] and text in result['msg']


def test_unreachable_server_is_a_clear_failure_without_password(capsys):
    code, result = run_main(dict(login_port=1, login_password='pw-XYZ', connect_timeout=2), capsys)
    assert code == 1
    assert 'could not start' in result['msg'] and 'connection refused' in result['msg']
    assert 'pw-XYZ' not in json.dumps(result)
