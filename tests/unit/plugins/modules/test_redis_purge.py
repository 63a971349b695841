# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""redis_purge, redis_cache_info and _redis_maint against a real, throwaway redis-server (never the lab's).

The server is started with KEYS renamed away, so any use of KEYS fails these tests.
"""
import json
import shutil
import socket
import subprocess
import tempfile
import time

import pytest
import redis
from ansible.module_utils.testing import patch_module_args

from ansible_collections.sqlsynth.runbooks.plugins.module_utils import _redis_maint
from ansible_collections.sqlsynth.runbooks.plugins.modules import redis_cache_info, redis_purge

PASSWORD = 'purge-T3st-secret'
LAB_PORTS = {5000, 5432, 6379, 8443, 8080, 9090, 9093, 9099, 14000, 15000}
PAGES = '*|page=*|page_size=*'


def free_port():
    while True:
        with socket.socket() as sock:
            sock.bind(('127.0.0.1', 0))
            port = sock.getsockname()[1]
        if port not in LAB_PORTS:
            return port


@pytest.fixture(scope='module')
def server():
    if not shutil.which('redis-server'):
        pytest.fail('redis-server is not installed (apt-get install redis-server)')
    port, workdir = free_port(), tempfile.mkdtemp(prefix='sqlsynth-purge-')
    proc = subprocess.Popen(['redis-server', '--port', str(port), '--bind', '127.0.0.1', '--save', '',
                             '--appendonly', 'no', '--dir', workdir, '--requirepass', PASSWORD,
                             '--rename-command', 'KEYS', ''], stdout=subprocess.DEVNULL)
    conn = redis.Redis(port=port, password=PASSWORD)
    for _attempt in range(100):
        try:
            conn.ping()
            break
        except redis.ConnectionError:
            time.sleep(0.05)
    yield port
    proc.terminate()
    proc.wait(10)
    shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture
def params(server):
    """Connection params as AnsibleModule passes them; the server starts empty with fresh command stats."""
    conn = redis.Redis(port=server, password=PASSWORD)
    conn.flushall()
    conn.config_resetstat()
    return dict(host='127.0.0.1', port=server, db=0, username=None, password=PASSWORD, tls=False,
                validate_certs=True, ca_path=None, socket_timeout=3.0)


def fill(conn, pages=300, others=200, db_keys=None):
    """An app-shaped keyspace: result pages, question/SQL texts and the table list, with a TTL, as the app writes them (SETEX)."""
    pipe = conn.pipeline(transaction=False)
    for number in range(pages):
        pipe.set('SELECT * FROM t%d|page=%d|page_size=10' % (number, number % 3 + 1), 'rows', ex=3600)
    for number in range(others):
        pipe.set('how many users joined on day %d' % number, 'SELECT count(*) FROM users', ex=3600)
    pipe.set('tables', '["users", "orders"]', ex=3600)
    pipe.execute()


def snapshot(conn):
    """Every key with its value (the tests' keyspaces are small enough to read whole)."""
    return {key: conn.get(key) for key in conn.scan_iter(count=1000)}


def commandstats(conn):
    return {name[len('cmdstat_'):]: stats['calls'] for name, stats in conn.info('commandstats').items()}


def run_main(module, args, capsys, check=False):
    args = dict(args, _ansible_check_mode=check)
    with patch_module_args(args), pytest.raises(SystemExit) as exit_info:
        module.main()
    out = capsys.readouterr().out
    return exit_info.value.code, json.loads(out), out


def module_args(params, **extra):
    args = dict(host=params['host'], port=params['port'], password=PASSWORD)
    args.update(extra)
    return args


@pytest.mark.parametrize('pattern', ['*|page=*|page_size=*', 'user?', 'user[12]', 'user[^1]*', 'user[1-2]',
                                     'user[2-1]', 'a\\*b', 'a*', '*b', '[a-c]*', 'h?llo', 'caf?', 'caf\xe9',
                                     '*[*', '[]x', 'x[', '*'])
def test_glob_matches_exactly_what_redis_scan_match_matches(params, pattern):
    conn = _redis_maint.raw_client(params)
    keys = ['SELECT 1|page=1|page_size=10', 'SELECT 1|page=1', 'user1', 'user2', 'user3', 'user12', 'a*b', 'axb',
            'ab', 'b', 'hello', 'hallo', 'hllo', 'caf\xe9', 'cafe', 'x[', 'x', '[x', 'a[b', ']x']
    for key in keys:
        conn.set(key, 1)
    by_redis = sorted(conn.scan_iter(match=pattern, count=1000))
    regex = _redis_maint.glob_regex(pattern)
    by_us = sorted(key for key in conn.scan_iter(count=1000) if regex.match(key))
    assert by_us == by_redis


def test_purge_deletes_only_matching_keys_in_bounded_batches_without_keys(params):
    conn = _redis_maint.raw_client(params)
    fill(conn, pages=2500, others=700)
    before = snapshot(conn)
    result = _redis_maint.purge(conn, [PAGES], batch_size=100, verify=True)
    after = snapshot(conn)
    expected = {k: v for k, v in before.items() if b'|page=' not in k}
    assert after == expected, 'keys outside the pattern changed or matching keys survived'
    assert result['deleted'] == 2500 and result['patterns'] == [dict(pattern=PAGES, matched=2500, remaining=0)]
    verification = result['verification']
    assert (verification['remaining'], verification['other_keys_before'], verification['other_keys_after'],
            verification['other_keys_missing'], verification['others_untouched']) == (0, 701, 701, 0, True)
    stats = commandstats(conn)
    assert 'keys' not in stats and 'del' not in stats and 'flushdb' not in stats
    assert stats['unlink'] == result['batches'] and result['batches'] >= 2500 // 100
    assert stats['scan'] >= 3201 // 100, 'SCAN COUNT 100 should take many small calls, not one big one'


def test_purge_without_verification_uses_scan_match_per_pattern(params):
    conn = _redis_maint.raw_client(params)
    fill(conn, pages=50, others=30)
    result = _redis_maint.purge(conn, [PAGES, 'how many users joined on day 1*'], batch_size=1000, verify=False)
    assert result['deleted'] == 50 + 11 and 'verification' not in result
    assert sorted(conn.scan_iter(count=1000)) == sorted(
        [b'tables'] + [b'how many users joined on day %d' % n for n in range(30) if not str(n).startswith('1')])


def test_verification_reports_keys_outside_the_pattern_that_went_missing(params):
    conn = _redis_maint.raw_client(params)
    fill(conn, pages=10, others=10)
    tally = _redis_maint.Tally(_redis_maint.Matcher([PAGES]))
    for keys in _redis_maint.scan_all(conn, 1000):
        tally.add(keys)
    conn.delete('how many users joined on day 3')
    conn.set('SELECT late|page=1|page_size=10', 'written since')
    result = _redis_maint.verify_pass(conn, tally, 1000, 0)
    assert result['other_keys_missing'] == 1 and result['others_untouched'] is False
    assert result['remaining'] == [11]  # 10 pages were never purged here, plus the one written since


def test_pause_spaces_the_round_trips(params):
    conn = _redis_maint.raw_client(params)
    fill(conn, pages=40, others=0)
    result = _redis_maint.purge(conn, [PAGES], batch_size=10, pause=0.02, verify=False)
    assert result['deleted'] == 40 and result['elapsed_seconds'] >= 0.02 * (result['batches'] - 1)


def test_binary_keys_are_purged_and_shown_escaped(params):
    conn = _redis_maint.raw_client(params)
    conn.set(b'bin\xff|page=1|page_size=10', 1)
    conn.set(b'keep\xfe', 1)
    preview = _redis_maint.sample(conn, [PAGES], 100, 100)
    assert preview['patterns'][0]['sample_keys'] == ['bin\\xff|page=1|page_size=10']
    assert _redis_maint.purge(conn, [PAGES], 100)['deleted'] == 1
    assert list(conn.scan_iter()) == [b'keep\xfe']


def test_sample_estimates_large_keyspaces_and_is_exact_on_small_ones(params):
    conn = _redis_maint.raw_client(params)
    fill(conn, pages=6000, others=14000)
    estimate = _redis_maint.sample(conn, [PAGES, 'tables'], 2000, 500)
    pages = estimate['patterns'][0]
    assert estimate['exact'] is False and pages['exact'] is False and 2000 <= estimate['sample_size'] < 20001
    assert 6000 * 0.8 <= pages['estimated_keys'] <= 6000 * 1.2, pages
    full = _redis_maint.sample(conn, [PAGES, 'tables'], None, 1000)
    assert full['exact'] is True and [p['estimated_keys'] for p in full['patterns']] == [6000, 1]


def test_check_mode_previews_patterns_and_deletes_nothing(params, capsys):
    conn = _redis_maint.raw_client(params)
    fill(conn, pages=30, others=20)
    before = snapshot(conn)
    code, result, _out = run_main(redis_purge, module_args(params, patterns=[PAGES]), capsys, check=True)
    assert code == 0 and snapshot(conn) == before
    assert result['changed'] is True and result['deleted'] == 0 and result['would_delete'] == 30
    (pattern,) = result['patterns']
    assert pattern['exact'] is True and pattern['estimated_keys'] == 30 and len(pattern['sample_keys']) == 5
    assert all('|page=' in key for key in pattern['sample_keys'])


def test_module_purges_and_a_second_run_changes_nothing(params, capsys):
    conn = _redis_maint.raw_client(params)
    fill(conn, pages=30, others=20)
    code, first, out = run_main(redis_purge, module_args(params, patterns=[PAGES], batch_size=7), capsys)
    assert code == 0 and first['changed'] is True and first['deleted'] == 30 and first['batches'] >= 30 // 7
    assert first['verification']['others_untouched'] is True and PASSWORD not in out
    code, second, _out = run_main(redis_purge, module_args(params, patterns=[PAGES]), capsys)
    assert code == 0 and second['changed'] is False and second['deleted'] == 0
    assert conn.dbsize() == 21


def test_flush_db_empties_only_the_named_database(params, capsys):
    conn = _redis_maint.raw_client(params)
    other = _redis_maint.raw_client(dict(params, db=1))
    fill(conn, pages=5, others=5)
    fill(other, pages=5, others=5)
    code, preview, _out = run_main(redis_purge, module_args(params, flush_db=1), capsys, check=True)
    assert code == 0 and preview['would_delete'] == 11 and preview['flushed'] is False and other.dbsize() == 11
    code, result, _out = run_main(redis_purge, module_args(params, flush_db=1), capsys)
    assert code == 0 and result['changed'] is True and result['deleted'] == 11 and result['command'] == 'FLUSHDB ASYNC'
    assert other.dbsize() == 0 and conn.dbsize() == 11
    assert 'flushall' not in commandstats(conn)


@pytest.mark.parametrize('args, message', [
    (dict(), 'one of the following is required: patterns, flush_db'),
    (dict(patterns=[PAGES], flush_db=0), 'parameters are mutually exclusive: patterns|flush_db'),
    (dict(patterns=[]), 'patterns is empty'),
    (dict(patterns=['']), 'patterns must not contain empty strings'),
    (dict(patterns=[PAGES], batch_size=0), 'batch_size must be between 1 and 100000, got 0'),
    (dict(flush_db=-1), 'flush_db must not be negative, got -1'),
    (dict(patterns=[PAGES], pause_ms=-5), 'pause_ms must not be negative, got -5'),
])
def test_bad_options_fail_with_a_clear_message(params, capsys, args, message):
    code, result, _out = run_main(redis_purge, module_args(params, **args), capsys)
    assert code == 1 and result['failed'] is True and message in result['msg']


def test_wrong_password_fails_without_showing_it(params, capsys):
    wrong = 'wr0ng-Secret-99'
    code, result, out = run_main(redis_purge, dict(module_args(params, patterns=[PAGES]), password=wrong), capsys)
    assert code == 1 and 'WRONGPASS' in result['msg'] and result['error_kind'] == 'auth'
    assert wrong not in out and 'Traceback' not in out


def test_cache_info_reports_memory_ratios_patterns_and_biggest_keys(params, capsys):
    conn = _redis_maint.raw_client(params)
    conn.config_set('maxmemory', 64 * 1024 * 1024)
    try:
        fill(conn, pages=40, others=10)
        conn.set('big|page=1|page_size=10', 'x' * 50000)
        conn.get('tables')
        conn.get('missing')
        code, result, out = run_main(redis_cache_info, module_args(params, patterns=[PAGES, 'tables'],
                                                                   biggest_keys=3), capsys, check=True)
    finally:
        conn.config_set('maxmemory', 0)
    assert code == 0 and result['changed'] is False and result['reachable'] is True and PASSWORD not in out
    assert result['memory']['maxmemory_bytes'] == 64 * 1024 * 1024 and result['memory']['ratio'] > 0
    assert result['hit_ratio'] == 0.5 and result['db_keys'] == 52 and result['exact'] is True
    assert [(p['pattern'], p['estimated_keys']) for p in result['patterns']] == [(PAGES, 41), ('tables', 1)]
    assert result['biggest_keys'][0]['key'] == 'big|page=1|page_size=10' and len(result['biggest_keys']) == 3
    assert result['biggest_keys'][0]['bytes'] > 50000 and result['biggest_keys'][0]['type'] == 'string'


def test_cache_info_on_an_unreachable_server_is_a_result_not_a_crash(params, capsys):
    code, result, _out = run_main(redis_cache_info, dict(module_args(params), port=free_port()), capsys)
    assert code == 0 and result['reachable'] is False and result['error_kind'] == 'refused'
