# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Throwaway PostgreSQL 15 and Redis servers on free loopback ports (never the lab's) for module tests."""
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
COLLECTIONS = os.path.join(ROOT, '.build', 'collections')
if COLLECTIONS not in sys.path:
    sys.path.insert(0, COLLECTIONS)

import psycopg  # noqa: E402  (after the sys.path set-up above, like the rest of this file's imports)
import redis  # noqa: E402
from psycopg import sql  # noqa: E402

from ansible_collections.sqlsynth.runbooks.plugins.module_utils import _postgres, _redis  # noqa: E402

PG_BIN = '/usr/lib/postgresql/15/bin'
LAB_PORTS = {5000, 5432, 6379, 8443, 8080, 9090, 9093, 9099, 14000, 15000}


def free_port():
    while True:
        with socket.socket() as sock:
            sock.bind(('127.0.0.1', 0))
            port = sock.getsockname()[1]
        if port not in LAB_PORTS:
            return port


def _wait_for(check, what, timeout=30):
    """Poll check() until it returns true; exceptions count as not yet."""
    deadline, last = time.monotonic() + timeout, None
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except Exception as exc:  # pylint: disable=broad-except  # server still starting
            last = exc
        time.sleep(0.1)
    raise TimeoutError('%s not ready after %s s (last error: %s)' % (what, timeout, last))


def _run_module(name, args):
    """Run sqlsynth.runbooks.<name> through `ansible localhost -m`; return (result, everything printed)."""
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=COLLECTIONS, ANSIBLE_LOAD_CALLBACK_PLUGINS='1',
               ANSIBLE_STDOUT_CALLBACK='ansible.posix.json', ANSIBLE_LOCALHOST_WARNING='0')
    proc = subprocess.run([os.path.join(ROOT, '.venv', 'bin', 'ansible'), 'localhost', '-m',
                           'sqlsynth.runbooks.' + name, '-a', json.dumps(args)],
                          capture_output=True, text=True, env=env, timeout=120, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = json.loads(proc.stdout)['plays'][0]['tasks'][0]['hosts']['localhost']
    return result, proc.stdout + proc.stderr


def module_params(spec, args):
    """Module parameters with the argument spec's defaults, as AnsibleModule would pass them."""
    params = dict((name, opt.get('default')) for name, opt in spec.items())
    params.update(args)
    return params


class PostgresServer:
    """A PostgreSQL 15 cluster in a temporary directory owned by postgres."""

    user, db = 'health_tester', 'health_db'

    def __init__(self):
        self.password = 'pg-T3st-%s' % os.urandom(6).hex()
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix='sqlsynth-pg-')
        self.data = os.path.join(self.dir, 'data')
        shutil.chown(self.dir, 'postgres', 'postgres')
        self._as_postgres(os.path.join(PG_BIN, 'initdb'), '-D', self.data, '-U', 'postgres', '-E', 'UTF8',
                          '--auth-local=trust', '--auth-host=scram-sha-256', '--no-sync')
        self.start()
        with self.admin() as conn:
            conn.execute(sql.SQL('CREATE ROLE {} LOGIN PASSWORD {} IN ROLE pg_monitor').format(
                sql.Identifier(self.user), sql.Literal(self.password)))
            conn.execute(sql.SQL('CREATE DATABASE {} OWNER {}').format(
                sql.Identifier(self.db), sql.Identifier(self.user)))

    def _as_postgres(self, *cmd):
        subprocess.run(['runuser', '-u', 'postgres', '--'] + list(cmd), check=True, capture_output=True,
                       timeout=120)

    def start(self):
        self._as_postgres(os.path.join(PG_BIN, 'pg_ctl'), '-D', self.data, '-l', os.path.join(self.dir, 'log'),
                          '-w', '-o', '-p %d -k %s -c listen_addresses=127.0.0.1 -c max_connections=20'
                          % (self.port, self.dir), 'start')

    def stop(self):
        self._as_postgres(os.path.join(PG_BIN, 'pg_ctl'), '-D', self.data, '-m', 'fast', '-w', 'stop')

    def admin(self):
        """Superuser session over the Unix socket (trust)."""
        return psycopg.connect(host=self.dir, port=self.port, user='postgres', dbname='postgres', autocommit=True)

    def connect(self, **kwargs):
        """A session as the test role over TCP, like the application's."""
        return psycopg.connect(host='127.0.0.1', port=self.port, user=self.user, password=self.password,
                               dbname=self.db, **kwargs)

    def params(self, **overrides):
        spec = _postgres.connection_argument_spec()
        spec.update(long_running_seconds=dict(default=60.0), idle_in_transaction_seconds=dict(default=300.0),
                    connections_max_ratio=dict(default=0.8))
        return module_params(spec, self.module_args(**overrides))

    def module_args(self, **overrides):
        args = dict(login_port=self.port, login_user=self.user, login_password=self.password, login_db=self.db)
        args.update(overrides)
        return args

    def destroy(self):
        try:
            self._as_postgres(os.path.join(PG_BIN, 'pg_ctl'), '-D', self.data, '-m', 'immediate', 'stop')
        except subprocess.CalledProcessError:
            pass  # already stopped
        shutil.rmtree(self.dir, ignore_errors=True)


class RedisServer:
    """redis-server in the foreground on a free port, with requirepass and maxmemory."""

    def __init__(self, maxmemory='64mb', policy='allkeys-lru'):
        self.password = 'redis-T3st-%s' % os.urandom(6).hex()
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix='sqlsynth-redis-')
        self.proc = subprocess.Popen(  # pylint: disable=consider-using-with  # stopped in stop()
            ['redis-server', '--port', str(self.port), '--bind', '127.0.0.1', '--requirepass', self.password,
             '--maxmemory', maxmemory, '--maxmemory-policy', policy, '--save', '', '--appendonly', 'no',
             '--dir', self.dir, '--logfile', os.path.join(self.dir, 'log')])
        _wait_for(lambda: self.client().ping(), 'redis-server on %d' % self.port)

    def client(self, **kwargs):
        return redis.Redis(host='127.0.0.1', port=self.port, password=self.password, decode_responses=True,
                           **kwargs)

    def params(self, **overrides):
        spec = _redis.connection_argument_spec()
        spec.update(memory_max_ratio=dict(default=0.9))
        return module_params(spec, self.module_args(**overrides))

    def module_args(self, **overrides):
        args = dict(port=self.port, password=self.password)
        args.update(overrides)
        return args

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=30)

    def destroy(self):
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope='session')
def pg_server():
    server = PostgresServer()
    yield server
    server.destroy()


@pytest.fixture
def redis_server():
    """Factory: redis_server(maxmemory=..., policy=...) starts a fresh server, removed after the test."""
    servers = []

    def start(**kwargs):
        servers.append(RedisServer(**kwargs))
        return servers[-1]
    yield start
    for server in servers:
        server.destroy()


@pytest.fixture(name='run_module')
def run_module_fixture():
    """run_module(name, args) -> (result, output) through `ansible localhost -m sqlsynth.runbooks.<name>`."""
    return _run_module


@pytest.fixture(name='wait_for')
def wait_for_fixture():
    """wait_for(check, what, timeout=30) polls until check() is true."""
    return _wait_for
