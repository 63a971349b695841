# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Unit tests for redis_health_info: ratio maths, policy fallback, failure text, password scrubbing."""
import json

import pytest
import redis
from ansible.module_utils.testing import patch_module_args

from ansible_collections.sqlsynth.runbooks.plugins.module_utils import _redis
from ansible_collections.sqlsynth.runbooks.plugins.modules import redis_health_info

PASSWORD = 'c4che-Secret!'
PARAMS = dict(host='cache.example', port=6379, db=0, username=None, password=PASSWORD, tls=False,
              validate_certs=True, ca_path=None, socket_timeout=3.0, memory_max_ratio=0.9)


def run_main(args, capsys):
    """Run the module's main() with args; return (exit code, JSON result)."""
    with patch_module_args(args), pytest.raises(SystemExit) as exit_info:
        redis_health_info.main()
    return exit_info.value.code, json.loads(capsys.readouterr().out)


class FakeRedis:
    """Answers like a server; CONFIG can be forbidden as on managed Redis."""

    def __init__(self, info, config_error=None):
        self._info, self._config_error = info, config_error

    def ping(self):
        return True

    def info(self):
        return self._info

    def dbsize(self):
        return 7

    def config_get(self, name):
        if self._config_error:
            raise self._config_error
        return {name: 'volatile-lru'}


INFO = dict(redis_version='7.0.15', used_memory=900, maxmemory=1000, maxmemory_policy='allkeys-lru',
            mem_fragmentation_ratio=1.5, evicted_keys=4, keyspace_hits=30, keyspace_misses=10,
            connected_clients=3)


def test_collect_computes_ratios_from_info():
    result = _redis.collect(FakeRedis(INFO))
    assert result['memory'] == dict(used_bytes=900, maxmemory_bytes=1000, ratio=0.9, policy='volatile-lru',
                                    fragmentation_ratio=1.5)
    assert (result['hit_ratio'], result['evictions'], result['keys'], result['version']) == (0.75, 4, 7, '7.0.15')


def test_ratios_are_null_without_maxmemory_or_lookups():
    result = _redis.collect(FakeRedis(dict(INFO, maxmemory=0, keyspace_hits=0, keyspace_misses=0)))
    assert result['memory']['ratio'] is None and result['hit_ratio'] is None
    assert _redis.evaluate(result, PARAMS) == []


@pytest.mark.parametrize('error', [redis.exceptions.NoPermissionError('no permissions to run CONFIG'),
                                   redis.ResponseError("unknown command 'CONFIG'")])
def test_policy_falls_back_to_info_when_config_is_forbidden(error):
    assert _redis.collect(FakeRedis(INFO, config_error=error))['memory']['policy'] == 'allkeys-lru'


def test_memory_failure_at_threshold_names_the_percentage():
    result = _redis.collect(FakeRedis(dict(INFO, used_memory=953)))
    assert _redis.evaluate(result, PARAMS) == ['memory 95% of maxmemory (953 of 1000 bytes, limit 90%)']
    assert _redis.evaluate(result, dict(PARAMS, memory_max_ratio=0.96)) == []


@pytest.mark.parametrize('exc, password, expected', [
    (redis.AuthenticationError('invalid username-password pair or user is disabled.'), PASSWORD,
     ('WRONGPASS: password wrong or user disabled at cache.example:6379', 'auth')),
    (redis.AuthenticationError('Authentication required.'), None,
     ('NOAUTH: cache.example:6379 requires a password and none was given', 'auth')),
    (redis.ConnectionError('Error 111 connecting to cache.example:6379. Connection refused.'), PASSWORD,
     ('connection refused at cache.example:6379', 'refused')),
    (redis.TimeoutError('Timeout connecting to server'), PASSWORD,
     ('timeout after 3 s talking to cache.example:6379', 'timeout')),
])
def test_errors_become_short_text(exc, password, expected):
    assert _redis.describe_error(exc, dict(PARAMS, password=password)) == expected


def test_password_echoed_by_server_is_scrubbed():
    exc = redis.ResponseError('ERR unexpected argument %s' % PASSWORD)
    text, kind = _redis.describe_error(exc, PARAMS)
    assert PASSWORD not in text and kind == 'command'


@pytest.mark.parametrize('args, message', [
    ({'memory_max_ratio': 0}, 'memory_max_ratio must be greater than 0.0 and at most 1, got 0.0'),
    ({'port': 0}, 'port must be between 1 and 65535, got 0'),
    ({'db': -1}, 'db must not be negative, got -1'),
    ({'socket_timeout': 0}, 'socket_timeout must be greater than 0, got 0.0'),
])
def test_bad_options_fail_with_a_clear_message(args, message, capsys):
    code, result = run_main(dict(args, password=PASSWORD), capsys)
    assert code == 1 and result['msg'] == message


def test_refused_connection_is_data_not_a_failure(capsys):
    code, result = run_main(dict(port=1, password=PASSWORD), capsys)
    assert code == 0 and not result.get('failed')
    assert (result['reachable'], result['ok'], result['error_kind']) == (False, False, 'refused')
    assert result['failures'] == ['connection refused at 127.0.0.1:1']
