# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Unit tests for postgres_health_info: threshold maths, failure text, password scrubbing, option checks."""
import json

import psycopg
import pytest
from ansible.module_utils.testing import patch_module_args

from ansible_collections.sqlsynth.runbooks.plugins.module_utils import _common, _postgres
from ansible_collections.sqlsynth.runbooks.plugins.modules import postgres_health_info

PASSWORD = 'Tr0ub4dor&3-pg'
PARAMS = dict(login_host='db.example', login_port=5432, login_user='sql_user', login_password=PASSWORD,
              login_db='sql_synthesizer', connect_timeout=5, ssl_mode='prefer', ca_cert=None,
              long_running_seconds=60.0, idle_in_transaction_seconds=300.0, connections_max_ratio=0.8)


def run_main(args, capsys):
    """Run the module's main() with args; return (exit code, JSON result)."""
    with patch_module_args(args), pytest.raises(SystemExit) as exit_info:
        postgres_health_info.main()
    return exit_info.value.code, json.loads(capsys.readouterr().out)


def data(used=10, max_conn=100, long_running=0, idle=0):
    session = dict(pid=1, usename='u', application_name='a', client_addr=None, state='x',
                   duration_seconds=1.0, query='q')
    return dict(connections=dict(used=used, max=max_conn, ratio=_common.ratio(used, max_conn)),
                long_running=[session] * long_running, idle_in_transaction=[session] * idle)


def test_healthy_numbers_give_no_failures():
    assert _postgres.evaluate(data(used=80, max_conn=100), PARAMS) == []


def test_connections_above_ratio_reported_as_used_over_max():
    assert _postgres.evaluate(data(used=85, max_conn=100), PARAMS) == ['connections 85/100 above 80%']


def test_session_failures_counted_with_threshold_and_plural():
    failures = _postgres.evaluate(data(long_running=1, idle=3), PARAMS)
    assert failures == ['1 query running longer than 60 s', '3 sessions idle in transaction longer than 300 s']


def test_ratio_is_none_without_a_denominator_and_rounded_otherwise():
    assert _common.ratio(5, 0) is None
    assert _common.ratio(1, 3) == 0.3333
    assert _common.percent(0.859) == '85%'


@pytest.mark.parametrize('message, kind, expected', [
    ('connection failed: connection to server at "10.0.0.1", port 5432 failed: Connection refused\n\t'
     'Is the server running on that host and accepting TCP/IP connections?', 'refused',
     'connection refused at db.example:5432'),
    ('connection failed: connection to server at "10.0.0.1", port 5432 failed: FATAL:  password '
     'authentication failed for user "sql_user"', 'auth',
     'authentication failed for user sql_user at db.example:5432 (password wrong or missing)'),
    ('connection failed: timeout expired', 'timeout', 'timeout after 5 s connecting to db.example:5432'),
    ('connection failed: could not translate host name "db.example" to address: Name or service not known',
     'dns', 'cannot resolve host db.example'),
])
def test_connect_errors_become_short_text(message, kind, expected):
    assert _postgres.describe_connect_error(psycopg.OperationalError(message), PARAMS) == (expected, kind)


def test_password_in_driver_message_is_scrubbed():
    exc = psycopg.OperationalError('invalid connection option: host=db.example password=%s sslmode=x' % PASSWORD)
    text, kind = _postgres.describe_connect_error(exc, PARAMS)
    assert PASSWORD not in text
    assert kind == 'other' and _common.MASK in text


def test_scrub_ignores_empty_secrets():
    assert _common.scrub('abc', [None, '']) == 'abc'


@pytest.mark.parametrize('args, message', [
    ({'connections_max_ratio': 1.5}, 'connections_max_ratio must be greater than 0.0 and at most 1, got 1.5'),
    ({'login_port': 70000}, 'login_port must be between 1 and 65535, got 70000'),
    ({'long_running_seconds': -1}, 'long_running_seconds must not be negative, got -1.0'),
    ({'ssl_mode': 'sometimes'}, 'value of ssl_mode must be one of'),
])
def test_bad_options_fail_with_a_clear_message(args, message, capsys):
    code, result = run_main(dict(args, login_password=PASSWORD), capsys)
    assert code == 1 and result['failed']
    assert message in result['msg']
    assert PASSWORD not in json.dumps(result)


def test_unreachable_server_is_data_not_a_failure(capsys):
    # Port 1 on loopback: nothing listens there, so the connection is refused at once.
    code, result = run_main(dict(login_port=1, login_password=PASSWORD), capsys)
    assert code == 0 and not result.get('failed')
    assert result['reachable'] is False and result['ok'] is False
    assert result['failures'] == ['connection refused at 127.0.0.1:1']
    assert result['changed'] is False
