"""The security role against the real lab: nginx denies a blocked client, the API key is rotated in the real app,
evidence of the real logs passes `sha256sum -c`. Every test leaves the lab as it found it (empty blocklist, the
original API key): `lab_fault all off` empties blocklist.conf and overrides.env and restarts the app.
"""
import json
import os
import re
import subprocess
import time

import pytest

from labtools import LAB_ROOT, assert_no_traceback, injected, lab_fault, run_playbook

CA = os.path.join(LAB_ROOT, "ca", "ca.crt")
BLOCKLIST = os.path.join(LAB_ROOT, "nginx", "blocklist.conf")
OVERRIDES = os.path.join(LAB_ROOT, "app", "overrides.env")
KEY_FILE = os.path.join(LAB_ROOT, "secrets", "api_key")  # sqlsynth_api_key_file of inventories/lab
LAB_KEY = "lab-api-key-0123456789abcdef0123456789abcdef"
SUPERVISORCTL = ["/usr/bin/supervisorctl", "-c", os.path.join(LAB_ROOT, "supervisor", "supervisord.conf")]
PLAY = """
- name: Security role on the lab
  hosts: localhost
  connection: local
  gather_facts: false
  tasks:
    - name: Run the entry point
      ansible.builtin.include_role:
        name: sqlsynth.runbooks.security
        tasks_from: "{{ entry }}"
"""


def lab_vars(tmp_path, **extra):
    """What the lab inventory should set for the role (proposed for inventories/lab/group_vars/all/incident.yml)."""
    return dict({
        "security_blocklist_file": BLOCKLIST,
        "security_blocklist_backup_dir": str(tmp_path / "blocklist-backup"),
        "security_nginx_test_cmd": ["/usr/sbin/nginx", "-t", "-q", "-c", os.path.join(LAB_ROOT, "nginx", "nginx.conf"),
                                    "-e", os.path.join(LAB_ROOT, "logs", "nginx_error.log")],
        "security_nginx_reload_cmd": SUPERVISORCTL + ["signal", "HUP", "nginx"],
    }, **extra)


def run_entry(tmp_path, entry, *args, **extra):
    play = tmp_path / "play.yml"
    play.write_text(PLAY)
    path = tmp_path / ("vars-%s.json" % time.monotonic_ns())
    path.write_text(json.dumps(dict(lab_vars(tmp_path, **extra), entry=entry)))
    result = run_playbook(str(play), "-e", "@" + str(path), *args)
    assert_no_traceback(result.stdout)
    return result


def curl(path, source=None, method="GET", key=None):
    """HTTP status of a request to the lab through nginx, sent from `source` (a local address), as an operator checks."""
    cmd = ["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "10", "--cacert", CA,
           "--resolve", "sqlsynth.lab:8443:127.0.0.1"]
    if source:
        cmd += ["--interface", source]
    if method == "POST":
        cmd += ["-X", "POST", "-H", "Content-Type: application/json", "--data", '{"question": "how many users are there"}']
    if key:
        cmd += ["-H", "X-API-Key: " + key]
    return int(subprocess.run(cmd + ["https://sqlsynth.lab:8443" + path], capture_output=True, text=True, check=False).stdout or 0)


@pytest.fixture
def restore_lab():
    """Put the lab back: empty blocklist and overrides (original key), and the key file as it was."""
    key_file = open(KEY_FILE).read() if os.path.exists(KEY_FILE) else None
    key_dir_existed = os.path.isdir(os.path.dirname(KEY_FILE))
    yield
    lab_fault("all", "off")
    if key_file is None:
        if os.path.exists(KEY_FILE):
            os.remove(KEY_FILE)
        if not key_dir_existed and os.path.isdir(os.path.dirname(KEY_FILE)):
            os.rmdir(os.path.dirname(KEY_FILE))
    else:
        with open(KEY_FILE, "w") as handle:
            handle.write(key_file)
    assert curl("/api/query", method="POST", key=LAB_KEY) == 200
    assert "deny" not in open(BLOCKLIST).read()


def access_log_statuses(client, since):
    """Statuses nginx logged for `client` in lines written after byte offset `since` of the access log."""
    with open(os.path.join(LAB_ROOT, "logs", "nginx_access.log")) as handle:
        handle.seek(since)
        lines = [json.loads(line) for line in handle if line.strip().startswith("{")]
    return [entry["status"] for entry in lines if entry.get("remote_addr") == client]


def test_block_the_injection_source_denies_it_and_lets_localhost_through(tmp_path, restore_lab):
    with injected("injection_burst"):
        result = run_entry(tmp_path, "block", security_block_clients=["127.0.0.66"])
        assert result.returncode == 0, result.stdout[-4000:]
        assert "deny 127.0.0.66;" in open(BLOCKLIST).read().splitlines()
        assert "verified: blocked 127.0.0.66, allowed 127.0.0.1" in result.stdout
        # What an operator checks by hand: curl from the blocked address and from localhost.
        assert curl("/health", source="127.0.0.66") == 403
        assert curl("/health", source="127.0.0.1") == 200
        # The attacker's own requests (injection_burst, from 127.0.0.66) are now refused by nginx.
        offset = os.path.getsize(os.path.join(LAB_ROOT, "logs", "nginx_access.log"))
        statuses = []
        for dummy in range(30):
            statuses = access_log_statuses("127.0.0.66", offset)
            if statuses:
                break
            time.sleep(1)
        assert statuses and set(statuses) == {403}, statuses
    backup = re.search(r"\(backup (\S+)\)", result.stdout).group(1)
    undo = run_entry(tmp_path, "unblock", security_blocklist_backup=backup)
    assert undo.returncode == 0, undo.stdout[-4000:]
    assert "deny" not in open(BLOCKLIST).read()
    assert curl("/health", source="127.0.0.66") == 200


def test_block_check_mode_changes_nothing(tmp_path, restore_lab):
    before = open(BLOCKLIST).read()
    result = run_entry(tmp_path, "block", "--check", "--diff", security_block_clients=["127.0.0.66"])
    assert result.returncode == 0, result.stdout[-4000:]
    assert "+deny 127.0.0.66;" in result.stdout
    assert open(BLOCKLIST).read() == before and curl("/health", source="127.0.0.66") == 200


def test_rotate_api_key_old_key_401_new_key_200_and_never_printed(tmp_path, restore_lab):
    assert curl("/api/query", method="POST", key=LAB_KEY) == 200
    result = run_entry(tmp_path, "rotate_api_key", "-vvv")
    assert result.returncode == 0, result.stdout[-4000:]
    new_key = open(KEY_FILE).read().strip()
    assert re.fullmatch(r"[0-9a-f]{64}", new_key)
    assert oct(os.stat(KEY_FILE).st_mode & 0o777) == "0o600"
    assert curl("/api/query", method="POST", key=LAB_KEY) == 401
    assert curl("/api/query", method="POST", key=new_key) == 200
    assert new_key not in result.stdout, "the new API key appears in the ansible-playbook -vvv output"
    timeline = re.search(r"TIMELINE: (\S+)", result.stdout)
    if timeline:  # the run record (timeline callback) must not hold it either
        for name in os.listdir(os.path.dirname(timeline.group(1))):
            with open(os.path.join(os.path.dirname(timeline.group(1)), name), errors="replace") as handle:
                assert new_key not in handle.read(), "the new API key appears in the run record " + name
    assert "QUERY_AGENT_API_KEY=%s" % new_key in open(OVERRIDES).read().splitlines()


def test_harden_with_rotation_in_one_restart(tmp_path, restore_lab):
    supervisor_log = os.path.join(LAB_ROOT, "logs", "supervisord.log")
    offset = os.path.getsize(supervisor_log)
    result = run_entry(tmp_path, "rate_limit_harden", security_harden_with_key_rotation=True)
    assert result.returncode == 0, result.stdout[-4000:]
    settings = dict(line.split("=", 1) for line in open(OVERRIDES).read().splitlines() if "=" in line)
    assert {k: settings[k] for k in ("QUERY_AGENT_RATE_LIMIT_PER_MINUTE", "QUERY_AGENT_ENABLE_HSTS", "QUERY_AGENT_CSRF_ENABLED",
                                     "QUERY_AGENT_MAX_REQUEST_SIZE_MB")} == {
        "QUERY_AGENT_RATE_LIMIT_PER_MINUTE": "10", "QUERY_AGENT_ENABLE_HSTS": "true", "QUERY_AGENT_CSRF_ENABLED": "true",
        "QUERY_AGENT_MAX_REQUEST_SIZE_MB": "0.5"}
    new_key = open(KEY_FILE).read().strip()
    assert settings["QUERY_AGENT_API_KEY"] == new_key
    assert curl("/api/query", method="POST", key=new_key) == 200 and curl("/api/query", method="POST", key=LAB_KEY) == 401
    headers = subprocess.run(["curl", "-sS", "-D", "-", "-o", "/dev/null", "--cacert", CA, "--resolve", "sqlsynth.lab:8443:127.0.0.1",
                              "https://sqlsynth.lab:8443/health"], capture_output=True, text=True, check=False).stdout.lower()
    assert "strict-transport-security: max-age=" in headers
    with open(supervisor_log) as handle:
        handle.seek(offset)
        assert handle.read().count("spawned: 'app'") == 1, "the key and the settings should share one app restart"
    assert new_key not in result.stdout


def test_evidence_of_the_lab_logs_passes_sha256sum(tmp_path):
    result = run_entry(tmp_path, "evidence", security_evidence_dir=str(tmp_path / "evidence"), security_evidence_label="lab-run")
    assert result.returncode == 0, result.stdout[-4000:]
    target = tmp_path / "evidence" / "lab-run"
    assert sorted(os.listdir(target)) == ["SHA256SUMS", "SOURCES", "app.log", "audit.log", "nginx_access.log"]
    check = subprocess.run(["sha256sum", "-c", "--strict", "SHA256SUMS"], cwd=target, capture_output=True, text=True, check=False)
    assert check.returncode == 0 and check.stdout.count(": OK") == 3, check.stdout + check.stderr
    assert oct(os.stat(target).st_mode & 0o777) == "0o500"
    again = run_entry(tmp_path, "evidence", security_evidence_dir=str(tmp_path / "evidence"), security_evidence_label="lab-run")
    assert again.returncode != 0 and "already exists; evidence is never overwritten" in again.stdout


def test_rotate_and_harden_check_mode_change_nothing(tmp_path, restore_lab):
    overrides = open(OVERRIDES).read()
    key_file = os.path.exists(KEY_FILE) and open(KEY_FILE).read()
    result = run_entry(tmp_path, "rate_limit_harden", "--check", security_harden_with_key_rotation=True)
    assert result.returncode == 0, result.stdout[-4000:]
    assert "check mode: would rotate the API key" in result.stdout
    assert open(OVERRIDES).read() == overrides and (os.path.exists(KEY_FILE) and open(KEY_FILE).read()) == key_file
    assert curl("/api/query", method="POST", key=LAB_KEY) == 200
