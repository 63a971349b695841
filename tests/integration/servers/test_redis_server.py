# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""redis_health_info against real, throwaway redis-server processes."""
import json

import pytest
import redis

from ansible_collections.sqlsynth.runbooks.plugins.module_utils import _redis


def test_healthy_server_reports_memory_against_maxmemory(redis_server, run_module):
    server = redis_server(maxmemory='64mb', policy='allkeys-lru')
    server.client().set('tables', 'users,orders')
    result, output = run_module('redis_health_info', server.module_args())
    assert result['reachable'] is True and result['ok'] is True and result['failures'] == []
    assert result['version'].startswith('7.') and result['ping_ms'] > 0
    memory = result['memory']
    assert memory['maxmemory_bytes'] == 64 * 1024 * 1024 and memory['policy'] == 'allkeys-lru'
    assert memory['ratio'] == round(memory['used_bytes'] / float(64 * 1024 * 1024), 4)
    assert result['keys'] == 1 and result['connected_clients'] >= 1 and result['changed'] is False
    assert server.password not in output


def test_wrong_or_missing_password_is_reported_without_the_password(redis_server, run_module):
    server = redis_server()
    wrong = 'not-the-Password-42'
    result, output = run_module('redis_health_info', server.module_args(password=wrong))
    where = '127.0.0.1:%d' % server.port
    assert (result['reachable'], result['ok'], result['error_kind']) == (False, False, 'auth')
    assert result['failures'] == ['WRONGPASS: password wrong or user disabled at %s' % where]
    assert wrong not in output and server.password not in output
    raw = _redis.health(server.params(password=wrong))
    assert raw['error_kind'] == 'auth' and wrong not in json.dumps(raw)
    missing = _redis.health(server.params(password=None))
    assert missing['failures'] == ['NOAUTH: %s requires a password and none was given' % where]


def test_stopped_server_is_refused(redis_server):
    server = redis_server()
    assert _redis.health(server.params())['ok'] is True
    server.stop()
    result = _redis.health(server.params())
    assert (result['reachable'], result['ok'], result['error_kind']) == (False, False, 'refused')
    assert result['failures'] == ['connection refused at 127.0.0.1:%d' % server.port]


def test_full_cache_fails_memory_ratio_and_counts_evictions(redis_server):
    server = redis_server(maxmemory='4mb', policy='allkeys-lru')
    client = server.client()
    value = 'v' * 10000
    for start in range(0, 1200, 100):  # ~12 MB into a 4 MB cache: LRU has to evict
        pipe = client.pipeline()
        for i in range(start, start + 100):
            pipe.set('question:%d' % i, value)
        pipe.execute()
    result = _redis.health(server.params(memory_max_ratio=0.5))
    memory = result['memory']
    assert memory['ratio'] >= 0.5 and memory['maxmemory_bytes'] == 4 * 1024 * 1024
    assert result['evictions'] > 0 and result['keys'] < 1200
    assert result['ok'] is False
    assert result['failures'] == ['memory %d%% of maxmemory (%d of %d bytes, limit 50%%)' % (
        int(memory['ratio'] * 100), memory['used_bytes'], memory['maxmemory_bytes'])]


def test_hit_ratio_and_keys_follow_real_lookups(redis_server):
    server = redis_server(maxmemory='0')  # no limit: no memory ratio
    client = server.client(db=1)
    client.config_resetstat()
    assert _redis.health(server.params(db=1))['hit_ratio'] is None  # no lookups yet
    client.set('tables', 'users')
    client.set('SELECT 1|page=1|page_size=10', '[]')
    for dummy in range(3):
        assert client.get('tables') == 'users'
    assert client.get('never-cached') is None
    result = _redis.health(server.params(db=1))
    assert (result['keyspace_hits'], result['keyspace_misses'], result['hit_ratio']) == (3, 1, 0.75)
    assert result['keys'] == 2 and _redis.health(server.params(db=0))['keys'] == 0
    assert result['memory']['ratio'] is None and result['memory']['maxmemory_bytes'] == 0 and result['ok']


def test_policy_comes_from_info_when_config_is_forbidden(redis_server):
    server = redis_server(policy='volatile-lru')
    server.client().acl_setuser('monitor', enabled=True, passwords=['+monitor-Pass-9'], keys=['*'],
                                commands=['+@all', '-config'])
    monitor = redis.Redis(port=server.port, username='monitor', password='monitor-Pass-9')
    with pytest.raises(redis.exceptions.NoPermissionError):
        monitor.config_get('maxmemory-policy')
    result = _redis.health(server.params(username='monitor', password='monitor-Pass-9'))
    assert result['ok'] is True and result['memory']['policy'] == 'volatile-lru'
