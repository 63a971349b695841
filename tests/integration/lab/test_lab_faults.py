"""lab_fault's process-held faults, injection_burst, the nginx blocklist and overrides.env on the real lab.

The session fixture in conftest.py holds the lab lock and switches every fault off before and after.
"""
import json
import os
import re
import subprocess
import time

import yaml

from conftest import wait_healthy
from labtools import LAB_ROOT, ROOT, lab_fault

with open(os.path.join(ROOT, "inventories", "lab", "group_vars", "all", "main.yml")) as _handle:
    LAB = yaml.safe_load(_handle)
SUPERVISORCTL = ["supervisorctl", "-c", os.path.join(LAB_ROOT, "supervisor", "supervisord.conf")]
NGINX_TEST = ["/usr/sbin/nginx", "-t", "-q", "-c", os.path.join(LAB_ROOT, "nginx", "nginx.conf"),
              "-e", os.path.join(LAB_ROOT, "logs", "nginx_error.log")]
OVERRIDES = os.path.join(LAB_ROOT, "app", "overrides.env")
BLOCKLIST = os.path.join(LAB_ROOT, "nginx", "blocklist.conf")
FAULTS = os.path.join(LAB_ROOT, "faults.json")
AUDIT_LOG = os.path.join(LAB_ROOT, "logs", "audit.log")
ACCESS_LOG = os.path.join(LAB_ROOT, "logs", "nginx_access.log")
ATTACKER_IP = "127.0.0.66"


def curl(path="/api/query", interface=None, api_key=True):
    """One request through nginx as an operator sends it; returns the HTTP status (0: no answer).

    The API key goes through curl's stdin config, never on a command line.
    """
    cmd = ["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "10", "-K", "-",
           "--cacert", os.path.join(LAB_ROOT, "ca", "ca.crt"), "--resolve", "sqlsynth.lab:8443:127.0.0.1"]
    if interface:
        cmd += ["--interface", interface]
    config = ""
    if path == "/api/query":
        cmd += ["-H", "Content-Type: application/json", "-d", '{"question": "how many users are there"}']
        if api_key:
            config = 'header = "X-API-Key: %s"\n' % LAB["sqlsynth_api_key"]
    cmd.append("https://sqlsynth.lab:8443" + path)
    result = subprocess.run(cmd, input=config, capture_output=True, text=True, check=False)
    return int(result.stdout or 0)


def supervisor(*args):
    return subprocess.run(SUPERVISORCTL + list(args), capture_output=True, text=True, check=False)


def restart_app():
    assert supervisor("restart", "app").returncode == 0
    assert '"healthy"' in wait_healthy()


def reload_nginx():
    subprocess.run(NGINX_TEST, check=True)
    assert supervisor("signal", "HUP", "nginx").returncode == 0


def write(path, text):
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(text)


def read(path):
    with open(path, encoding="utf-8") as handle:
        return handle.read()


def size(path):
    return os.path.getsize(path) if os.path.exists(path) else 0


def new_json_lines(path, offset):
    with open(path, encoding="utf-8") as handle:
        handle.seek(offset)
        lines = handle.read().splitlines()
    records = []
    for line in lines:
        try:
            records.append(json.loads(line))
        except ValueError:
            continue
    return records


def wait_for(predicate, seconds=30):
    """Poll ``predicate`` once a second until it returns something truthy; returns its last value."""
    value = predicate()
    for _attempt in range(seconds):
        if value:
            break
        time.sleep(1)
        value = predicate()
    return value


def attacker_state():
    match = re.search(r"^attacker\s+(\S+)", supervisor("status", "attacker").stdout, re.M)
    return match.group(1) if match else "UNKNOWN"


def test_error_burst_fails_queries_until_the_app_restarts():
    lab_fault("error_burst", "on")
    try:
        assert curl() == 500
        assert curl("/health") == 500
        restart_app()
        assert curl() == 200
        assert json.loads(read(FAULTS))["error_burst"] is True  # the file still says on: the process held it
        lab_fault("error_burst", "on")  # switching it on again re-arms it
        assert curl() == 500
    finally:
        lab_fault("error_burst", "off")
    assert curl() == 200


def test_injection_burst_is_audited_and_logged_from_the_attacker_address():
    audit_offset, access_offset = size(AUDIT_LOG), size(ACCESS_LOG)
    lab_fault("injection_burst", "on")
    try:
        assert attacker_state() in ("STARTING", "RUNNING")
        commands = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True, check=True).stdout
        assert "attacker.py" in commands and LAB["sqlsynth_api_key"] not in commands  # key by environment only

        def attempts():
            return [r for r in new_json_lines(AUDIT_LOG, audit_offset)
                    if r.get("event_type") == "sql_injection_attempt" and r.get("client_ip") == ATTACKER_IP]

        def access_lines():
            return [r for r in new_json_lines(ACCESS_LOG, access_offset)
                    if r.get("remote_addr") == ATTACKER_IP and r.get("request_uri") == "/api/query"]

        found = wait_for(lambda: len(attempts()) >= 3 and access_lines())
        assert found, "no injection attempts from %s in %s" % (ATTACKER_IP, AUDIT_LOG)
        assert {r["status"] for r in access_lines()} <= {400, 429}
        assert all(r["request_method"] == "POST" for r in attempts())
    finally:
        lab_fault("injection_burst", "off")
    assert attacker_state() == "STOPPED"


def test_blocklist_denies_only_the_listed_address():
    write(BLOCKLIST, "deny %s;\n" % ATTACKER_IP)
    try:
        reload_nginx()
        assert wait_for(lambda: curl("/health", interface=ATTACKER_IP) == 403, seconds=10)
        assert curl(interface=ATTACKER_IP) == 403
        assert curl("/health") == 200
        assert curl() == 200
    finally:
        write(BLOCKLIST, "")
        reload_nginx()
    assert wait_for(lambda: curl("/health", interface=ATTACKER_IP) == 200, seconds=10)


def test_overrides_env_rate_limit_applies_after_a_restart():
    write(OVERRIDES, "# lowered by test_lab_faults\nQUERY_AGENT_RATE_LIMIT_PER_MINUTE=5\nthis line is invalid\n")
    try:
        restart_app()
        statuses = [curl() for _attempt in range(6)]
        assert statuses == [200] * 5 + [429]
    finally:
        write(OVERRIDES, "")
        restart_app()
    assert curl() == 200


def test_all_off_resets_every_fault_and_setting():
    write(OVERRIDES, "QUERY_AGENT_ENABLE_HSTS=true\n")
    restart_app()
    write(BLOCKLIST, "deny 192.0.2.1;\n")
    reload_nginx()
    lab_fault("injection_burst", "on")
    lab_fault("error_burst", "on")
    lab_fault("latency", "on", latency_ms=100)

    lab_fault("all", "off")

    assert attacker_state() == "STOPPED"
    assert read(OVERRIDES) == "" and read(BLOCKLIST) == ""
    faults = json.loads(read(FAULTS))
    assert (faults["error_burst"], faults["latency_ms"], faults["hang"], faults["pool_exhaustion"]) == (False, 0, False, False)
    assert '"healthy"' in wait_healthy()
    assert curl() == 200
    headers = subprocess.run(["curl", "-sS", "-D", "-", "-o", "/dev/null", "--cacert", os.path.join(LAB_ROOT, "ca", "ca.crt"),
                              "--resolve", "sqlsynth.lab:8443:127.0.0.1", "https://sqlsynth.lab:8443/health"],
                             capture_output=True, text=True, check=True).stdout.lower()
    assert "strict-transport-security" not in headers  # the app was restarted without the override
    second = lab_fault("all", "off")
    assert "changed=0" in second.stdout
