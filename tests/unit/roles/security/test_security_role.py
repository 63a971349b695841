"""The security role run through ansible-playbook against files in a temporary directory and a local HTTP server
that stands in for nginx and the app (`*_mocked_*`: no real nginx or app; the lab test covers those).

The stand-in denies (403) the clients listed in the blocklist file, as nginx would, and accepts on /api/query only
the key currently written in the overrides file, as the app does after a restart.
"""
import json
import os
import re
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[4]
OLD_KEY = "old-key-0123456789abcdef0123456789abcdef"
PLAY = """
- name: Security role
  hosts: localhost
  connection: local
  gather_facts: false
  tasks:
    - name: Run the entry point
      ansible.builtin.include_role:
        name: sqlsynth.runbooks.security
        tasks_from: "{{ entry }}"
    - name: Expose the results (no secrets)
      ansible.builtin.debug:
        msg: "{{ {'block': security_block_result | default(none), 'rotate': security_rotate_result | default(none),
                  'evidence': security_evidence | default(none), 'harden': security_harden_result | default(none),
                  'has_new_key': security_new_api_key is defined} | to_json }}"
"""


class Service:
    """nginx + app stand-in reading the blocklist and overrides files on every request."""

    def __init__(self, blocklist, overrides, deny_never=False):
        self.blocklist, self.overrides, self.deny_never = blocklist, overrides, deny_never
        service = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _send(self, status, body, headers=None):
                data = json.dumps(body).encode()
                self.send_response(status)
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _denied(self):
                text = service.blocklist.read_text() if service.blocklist.exists() else ""
                return not service.deny_never and self.client_address[0] in re.findall(r"^deny (\S+);", text, re.M)

            def _settings(self):
                text = service.overrides.read_text() if service.overrides.exists() else ""
                return dict(line.split("=", 1) for line in text.splitlines() if "=" in line)

            def do_GET(self):
                if self._denied():
                    return self._send(403, {"error": "forbidden"})
                headers = {"Strict-Transport-Security": "max-age=31536000"} if self._settings().get(
                    "QUERY_AGENT_ENABLE_HSTS") == "true" else {}
                self._send(200, {"status": "healthy", "components": {"database": True}}, headers)

            def do_POST(self):
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if self._denied():
                    return self._send(403, {"error": "forbidden"})
                key = self._settings().get("QUERY_AGENT_API_KEY", OLD_KEY)
                if self.headers.get("X-API-Key") != key:
                    return self._send(401, {"error": "invalid or missing API key"})
                self._send(200, {"sql": "SELECT 1", "data": [[1]], "question": "q"})

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = "http://127.0.0.1:%d" % self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def env(tmp_path):
    blocklist = tmp_path / "blocklist.conf"
    blocklist.write_text("# deny 192.0.2.1;  (one line per blocked address)\n")
    overrides = tmp_path / "overrides.env"
    overrides.write_text("# lab overrides\nQUERY_AGENT_DB_POOL_SIZE=10\n")
    service = Service(blocklist, overrides)
    yield tmp_path, service
    service.close()


def base_vars(tmp_path, service):
    return {
        "security_app_url": service.url, "security_blocklist_file": str(tmp_path / "blocklist.conf"),
        "security_blocklist_backup_dir": str(tmp_path / "backup"),
        "security_nginx_test_cmd": ["true"], "security_nginx_reload_cmd": ["true"],
        "security_settings_backend": "overrides_file", "security_overrides_file": str(tmp_path / "overrides.env"),
        "security_app_restart_cmd": ["true"], "security_api_key_file": str(tmp_path / "secrets" / "api_key"),
        "security_api_key_current": OLD_KEY, "security_block_verify_retries": 2, "security_app_wait_retries": 2,
        "security_evidence_dir": str(tmp_path / "evidence"),
    }


def run_role(tmp_path, entry, extra, *args):
    (tmp_path / "play.yml").write_text(PLAY)
    (tmp_path / "extra.json").write_text(json.dumps(dict(extra, entry=entry)))
    env = dict(os.environ, ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"),
               ANSIBLE_COLLECTIONS_PATH=str(ROOT / ".build" / "collections"),
               ANSIBLE_NOCOLOR="1", ANSIBLE_LOCALHOST_WARNING="0", ANSIBLE_INVENTORY_UNPARSED_WARNING="0")
    cmd = [str(Path(sys.executable).parent / "ansible-playbook"), "-i", "localhost,",
           "-e", "ansible_python_interpreter=%s" % sys.executable, "-e", "@" + str(tmp_path / "extra.json"),
           str(tmp_path / "play.yml"), *args]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, check=False, timeout=180)
    out = proc.stdout + proc.stderr
    assert "Traceback (most recent call last)" not in out, out[-4000:]
    found = re.findall(r'"msg": "(\{.*\})"', proc.stdout)
    results = json.loads(json.loads('"%s"' % found[-1])) if found else {}
    return proc, out, results


def test_block_mocked_nginx_denies_the_client_and_keeps_a_backup(env):
    tmp_path, service = env
    proc, out, results = run_role(tmp_path, "block", dict(base_vars(tmp_path, service),
                                                          security_block_clients=["127.0.0.66", "203.0.113.0/24"]))
    assert proc.returncode == 0, out[-4000:]
    assert (tmp_path / "blocklist.conf").read_text().splitlines()[1:] == ["deny 127.0.0.66;", "deny 203.0.113.0/24;"]
    block = results["block"]
    assert block["verified"] == ["blocked 127.0.0.66", "allowed 127.0.0.1"] and block["not_verifiable"] == []
    assert Path(block["backup"]).read_text() == "# deny 192.0.2.1;  (one line per blocked address)\n"
    assert oct(os.stat(block["backup"]).st_mode & 0o777) == "0o600"


def test_block_mocked_address_this_host_cannot_send_from_is_reported_not_fatal(env):
    tmp_path, service = env
    proc, out, results = run_role(tmp_path, "block", dict(base_vars(tmp_path, service), security_block_clients=["192.0.2.44"]))
    assert proc.returncode == 0, out[-4000:]
    assert results["block"]["not_verifiable"] == ["192.0.2.44"]
    assert "not verifiable from this host (address not local): 192.0.2.44" in out


def test_block_mocked_failed_verification_restores_the_previous_blocklist(tmp_path):
    blocklist, overrides = tmp_path / "blocklist.conf", tmp_path / "overrides.env"
    before = "deny 198.51.100.9;\n"
    blocklist.write_text(before)
    service = Service(blocklist, overrides, deny_never=True)  # nginx that ignores its blocklist
    try:
        proc, out, dummy = run_role(tmp_path, "block", dict(base_vars(tmp_path, service), security_block_clients=["127.0.0.66"]))
    finally:
        service.close()
    assert proc.returncode != 0
    assert blocklist.read_text() == before
    assert "Blocking 127.0.0.66 failed and the previous blocklist was restored and nginx reloaded" in out
    assert "blocked 127.0.0.66: status 200 not in [403]" in out


def test_block_mocked_nginx_test_failure_restores_and_fails_clearly(env):
    tmp_path, service = env
    before = (tmp_path / "blocklist.conf").read_text()
    proc, out, dummy = run_role(tmp_path, "block", dict(base_vars(tmp_path, service), security_block_clients=["127.0.0.66"],
                                                        security_nginx_test_cmd=["false"]))
    assert proc.returncode != 0 and (tmp_path / "blocklist.conf").read_text() == before
    assert "failed and the previous blocklist was restored, but the nginx test fails with it too" in out


@pytest.mark.parametrize("clients, message", [
    (["127.0.0.66", "evil.example"], "input entry 'evil.example' is not an IPv4 or IPv6 address or network"),
    ("127.0.0.66", "security_block_clients must be a non-empty list of IP addresses or networks"),
    ([], "security_block_clients must be a non-empty list"),
])
def test_block_mocked_invalid_clients_change_nothing(env, clients, message):
    tmp_path, service = env
    before = (tmp_path / "blocklist.conf").read_text()
    proc, out, dummy = run_role(tmp_path, "block", dict(base_vars(tmp_path, service), security_block_clients=clients))
    assert proc.returncode != 0 and message in out
    assert (tmp_path / "blocklist.conf").read_text() == before and not (tmp_path / "backup").exists()


def test_block_mocked_check_mode_shows_the_diff_and_changes_nothing(env):
    tmp_path, service = env
    before = (tmp_path / "blocklist.conf").read_text()
    proc, out, results = run_role(tmp_path, "block", dict(base_vars(tmp_path, service), security_block_clients=["127.0.0.66"]),
                                  "--check", "--diff")
    assert proc.returncode == 0, out[-4000:]
    assert "+deny 127.0.0.66;" in out and "check mode: would block 127.0.0.66" in out
    assert (tmp_path / "blocklist.conf").read_text() == before and not (tmp_path / "backup").exists()


def test_unblock_mocked_restores_the_backup(env):
    tmp_path, service = env
    before = (tmp_path / "blocklist.conf").read_text()
    proc, out, results = run_role(tmp_path, "block", dict(base_vars(tmp_path, service), security_block_clients=["127.0.0.66"]))
    assert proc.returncode == 0, out[-4000:]
    proc, out, dummy = run_role(tmp_path, "unblock", dict(base_vars(tmp_path, service),
                                                          security_blocklist_backup=results["block"]["backup"]))
    assert proc.returncode == 0, out[-4000:]
    assert (tmp_path / "blocklist.conf").read_text() == before


def test_rotate_mocked_app_new_key_works_old_fails_and_is_never_printed(env):
    tmp_path, service = env
    proc, out, results = run_role(tmp_path, "rotate_api_key", base_vars(tmp_path, service), "-vvv")
    assert proc.returncode == 0, out[-4000:]
    key = (tmp_path / "secrets" / "api_key").read_text()
    assert re.fullmatch(r"[0-9a-f]{64}\n", key)
    key = key.strip()
    assert oct(os.stat(tmp_path / "secrets" / "api_key").st_mode & 0o777) == "0o600"
    settings = (tmp_path / "overrides.env").read_text()
    assert "QUERY_AGENT_API_KEY=%s\n" % key in settings and "QUERY_AGENT_DB_POOL_SIZE=10" in settings
    assert oct(os.stat(tmp_path / "overrides.env").st_mode & 0o777) == "0o600"
    assert key not in out, "the new key was printed"
    assert results["has_new_key"] is True and results["rotate"]["settings"] == ["QUERY_AGENT_API_KEY"]
    assert key not in json.dumps(results)


def test_rotate_mocked_two_rotations_give_different_keys(env):
    tmp_path, service = env
    keys = []
    for dummy in range(2):
        proc, out, dummy2 = run_role(tmp_path, "rotate_api_key", dict(base_vars(tmp_path, service), security_api_key_current=(
            keys[-1] if keys else OLD_KEY)))
        assert proc.returncode == 0, out[-4000:]
        keys.append((tmp_path / "secrets" / "api_key").read_text().strip())
    assert keys[0] != keys[1]


def test_rotate_mocked_failed_verification_restores_settings_and_key_file(env):
    tmp_path, service = env
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "api_key").write_text("previous-file-content\n")
    overrides_before = (tmp_path / "overrides.env").read_text()
    # The app does not read QUERY_AGENT_API_KEY_X: the new key never works.
    proc, out, dummy = run_role(tmp_path, "rotate_api_key", dict(base_vars(tmp_path, service),
                                                                 security_api_key_setting="QUERY_AGENT_API_KEY_X"))
    assert proc.returncode != 0
    assert "The API key rotation failed and the previous settings and key file were restored" in out
    assert "new key: status 401 not in [200]" in out
    assert (tmp_path / "secrets" / "api_key").read_text() == "previous-file-content\n"
    assert "QUERY_AGENT_API_KEY_X" not in (tmp_path / "overrides.env").read_text()
    assert (tmp_path / "overrides.env").read_text() == overrides_before


def test_rotate_mocked_check_mode_changes_nothing_and_publishes_no_key(env):
    tmp_path, service = env
    before = (tmp_path / "overrides.env").read_text()
    proc, out, results = run_role(tmp_path, "rotate_api_key", base_vars(tmp_path, service), "--check")
    assert proc.returncode == 0, out[-4000:]
    assert (tmp_path / "overrides.env").read_text() == before and not (tmp_path / "secrets").exists()
    assert results["has_new_key"] is False and "check mode: would rotate the API key" in out


def test_harden_with_rotation_mocked_one_restart_all_settings(env):
    tmp_path, service = env
    restarts = tmp_path / "restarts"
    proc, out, results = run_role(tmp_path, "rate_limit_harden", dict(
        base_vars(tmp_path, service), security_harden_with_key_rotation=True,
        security_app_restart_cmd=["sh", "-c", "echo restart >> %s" % restarts]))
    assert proc.returncode == 0, out[-4000:]
    settings = dict(line.split("=", 1) for line in (tmp_path / "overrides.env").read_text().splitlines() if "=" in line)
    assert settings["QUERY_AGENT_RATE_LIMIT_PER_MINUTE"] == "10" and settings["QUERY_AGENT_ENABLE_HSTS"] == "true"
    assert settings["QUERY_AGENT_CSRF_ENABLED"] == "true" and settings["QUERY_AGENT_MAX_REQUEST_SIZE_MB"] == "0.5"
    assert re.fullmatch(r"[0-9a-f]{64}", settings["QUERY_AGENT_API_KEY"])
    assert restarts.read_text() == "restart\n"
    assert settings["QUERY_AGENT_API_KEY"] not in out


def test_harden_alone_mocked_keeps_the_previous_values_for_an_undo(env):
    tmp_path, service = env
    (tmp_path / "overrides.env").write_text("QUERY_AGENT_RATE_LIMIT_PER_MINUTE=60\n")
    proc, out, results = run_role(tmp_path, "rate_limit_harden", base_vars(tmp_path, service))
    assert proc.returncode == 0, out[-4000:]
    assert results["harden"]["previous"] == {"QUERY_AGENT_RATE_LIMIT_PER_MINUTE": "60", "QUERY_AGENT_ENABLE_HSTS": None,
                                             "QUERY_AGENT_CSRF_ENABLED": None, "QUERY_AGENT_MAX_REQUEST_SIZE_MB": None}
    assert "QUERY_AGENT_API_KEY" not in (tmp_path / "overrides.env").read_text()


def test_evidence_through_the_role_and_sha256sum(env):
    tmp_path, service = env
    logs = tmp_path / "logs"
    logs.mkdir()
    for name in ("app.log", "audit.log"):
        (logs / name).write_text(name * 100)
    extra = dict(base_vars(tmp_path, service), security_evidence_label="run-42",
                 security_evidence_files=[str(logs / "app.log"), str(logs / "audit.log"), str(logs / "nginx_access.log")])
    proc, out, results = run_role(tmp_path, "evidence", extra)
    assert proc.returncode == 0, out[-4000:]
    target = tmp_path / "evidence" / "run-42"
    assert results["evidence"]["missing"] == [str(logs / "nginx_access.log")]
    assert subprocess.run(["sha256sum", "-c", "SHA256SUMS"], cwd=target, capture_output=True, check=False).returncode == 0
    proc, out, dummy = run_role(tmp_path, "evidence", extra)
    assert proc.returncode != 0 and "already exists; evidence is never overwritten" in out
