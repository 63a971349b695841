"""Fixtures for the lab's reference app and webhook receiver (no lab, no database needed)."""
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

import pytest

APP_DIR = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", "..",
                                       "roles", "lab", "files", "app"))
if APP_DIR not in sys.path:
    sys.path.insert(0, APP_DIR)


def free_port():
    """A loopback port nobody listens on (bound once by the kernel, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# Importing the module builds its module-level `app` from os.environ: keep it off the lab.
_IMPORT_DIR = tempfile.mkdtemp(prefix="sqlsynth-lab-app-")
os.environ.update({
    "QUERY_AGENT_DATABASE_URL": f"postgresql://sql_user@127.0.0.1:{free_port()}/sql_synthesizer",
    "QUERY_AGENT_DB_POOL_TIMEOUT": "0.2",
    "QUERY_AGENT_AUDIT_LOG_FILE": os.path.join(_IMPORT_DIR, "audit.log"),
    "SQLSYNTH_LAB_FAULTS_FILE": os.path.join(_IMPORT_DIR, "faults.json"),
})
import sqlsynth_lab_app  # noqa: E402

sqlsynth_lab_app.app.extensions["sqlsynth_lab"].close()
shutil.rmtree(_IMPORT_DIR, ignore_errors=True)


class LabApp:
    """A reference app built from a test's environment, with helpers to inspect it."""

    def __init__(self, tmp_path, env):
        self.audit_file = tmp_path / "audit.log"
        self.faults_file = tmp_path / "faults.json"
        base = {
            "QUERY_AGENT_DATABASE_URL": f"postgresql://sql_user:pw@127.0.0.1:{free_port()}/sql_synthesizer",
            "QUERY_AGENT_DB_POOL_TIMEOUT": "0.3",
            "QUERY_AGENT_CACHE_BACKEND": "memory",
            "QUERY_AGENT_AUDIT_LOG_FILE": str(self.audit_file),
            "SQLSYNTH_LAB_FAULTS_FILE": str(self.faults_file),
        }
        base.update(env)
        self.app = sqlsynth_lab_app.create_app(base)
        self.state = self.app.extensions["sqlsynth_lab"]
        self.client = self.app.test_client()

    def faults(self, **faults):
        """Write the faults file (with a fresh mtime, as the lab's fault playbook does)."""
        tmp = self.faults_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(faults))
        os.replace(tmp, self.faults_file)

    def audit_events(self):
        if not self.audit_file.exists():
            return []
        return [json.loads(line) for line in self.audit_file.read_text().splitlines()]

    def sample(self, name, **labels):
        """Current value of one sample in the app's registry (0.0 when absent)."""
        value = self.state.metrics.registry.get_sample_value(name, labels or None)
        return 0.0 if value is None else value

    def query(self, question, **headers):
        return self.client.post("/api/query", json={"question": question}, headers=headers)


@pytest.fixture(name="free_port")
def free_port_fixture():
    return free_port()


@pytest.fixture
def make_app(tmp_path):
    apps = []

    def factory(**env):
        lab_app = LabApp(tmp_path, {k: str(v) for k, v in env.items()})
        apps.append(lab_app)
        return lab_app

    yield factory
    for lab_app in apps:
        lab_app.state.close()


@pytest.fixture
def fake_db(monkeypatch):
    """Replace only the database query function; records what was executed."""
    calls = []

    def install(lab_app):
        def fetch(query, params=(), size=sqlsynth_lab_app.PAGE_SIZE):
            calls.append((query, params))
            if query == sqlsynth_lab_app.TABLES_SQL:
                return [{"table_name": t} for t in ("orders", "products", "users")]
            return [{"user_count": 200}]
        monkeypatch.setattr(lab_app.state.db, "fetch", fetch)
        return calls

    return install


@pytest.fixture
def redis_server(tmp_path):
    """A throwaway redis-server on a free loopback port (not the lab's 6379)."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail("redis-server is required (apt-get install redis-server)")
    port = free_port()
    proc = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "no", "--dir", str(tmp_path), "--requirepass", "testpw"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            time.sleep(0.05)
    yield {"port": port, "password": "testpw", "proc": proc}
    if proc.poll() is None:
        proc.terminate()
        proc.wait(timeout=10)
