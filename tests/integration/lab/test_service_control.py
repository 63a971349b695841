"""The service_control role's lab backend against the real lab: supervisord programs, PostgreSQL, nginx, overrides.env."""
import json
import os
import subprocess
import urllib.error
import urllib.request

import pytest
import yaml

from conftest import wait_healthy
from labtools import LAB_ROOT, ROOT, assert_no_traceback, run_playbook

SUPERVISORCTL = ["/usr/bin/supervisorctl", "-c", os.path.join(LAB_ROOT, "supervisor", "supervisord.conf")]
OVERRIDES = os.path.join(LAB_ROOT, "app", "overrides.env")
SECRET = "CANARY-lab-api-key-3f9a0c"
with open(os.path.join(ROOT, "inventories", "lab", "group_vars", "all", "main.yml")) as _inventory:
    LAB_API_KEY = yaml.safe_load(_inventory)["sqlsynth_api_key"]
APP_LOG = os.path.join(LAB_ROOT, "logs", "app.log")


def run_role(tmp_path, role_vars, check=False):
    """Include sqlsynth.runbooks.service_control once on the lab inventory; returns the process with .result."""
    out = tmp_path / "result.json"
    if out.exists():
        out.unlink()
    play = [{"hosts": "localhost", "gather_facts": False, "tasks": [
        {"name": "Service control", "ansible.builtin.include_role": {"name": "sqlsynth.runbooks.service_control"},
         "vars": role_vars},
        {"name": "Save the result",
         "ansible.builtin.copy": {"content": "{{ service_control_result | to_json }}", "dest": str(out), "mode": "0600"},
         "check_mode": False, "no_log": True}]}]
    (tmp_path / "play.yml").write_text(yaml.safe_dump(play))
    proc = run_playbook(str(tmp_path / "play.yml"), check=check)
    assert_no_traceback(proc.stdout)
    proc.result = json.loads(out.read_text()) if out.exists() else None
    return proc


def program(name):
    """(state, pid) of a supervisord program as supervisorctl reports it."""
    fields = subprocess.run(SUPERVISORCTL + ["status", name], capture_output=True, text=True, check=False).stdout.split()
    pid = int(fields[3].rstrip(",")) if len(fields) > 3 and fields[2] == "pid" else None
    return fields[1], pid


def api_status(api_key):
    """HTTP status of one query sent straight to the app with this API key."""
    request = urllib.request.Request("http://127.0.0.1:5000/api/query", data=json.dumps({"question": "How many users?"}).encode(),
                                     headers={"Content-Type": "application/json", "X-API-Key": api_key}, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


def pg_ready():
    return subprocess.run(["pg_isready", "-h", "127.0.0.1", "-p", "5432"], capture_output=True, check=False).returncode == 0


def overrides():
    with open(OVERRIDES, "rb") as handle:
        return handle.read()


@pytest.fixture
def restore_overrides():
    """Put overrides.env back byte for byte (and the app on it) whatever the test did."""
    before = overrides() if os.path.exists(OVERRIDES) else None
    yield before
    if before is not None and overrides() != before:
        with open(OVERRIDES, "wb") as handle:
            handle.write(before)
        subprocess.run(SUPERVISORCTL + ["restart", "app"], check=False, capture_output=True)
        wait_healthy()


def test_status_reports_what_supervisord_and_postgres_say(tmp_path):
    for component, name in (("app", "app"), ("cache", "redis"), ("proxy", "nginx")):
        result = run_role(tmp_path, {"service_control_component": component})
        assert result.returncode == 0, result.stdout[-3000:]
        assert result.result["changed"] is False
        assert (result.result["current"]["state"], result.result["current"]["pid"]) == program(name)
    result = run_role(tmp_path, {"service_control_component": "database"})
    assert result.returncode == 0, result.stdout[-3000:]
    assert result.result["current"]["state"] == "RUNNING" and result.result["current"]["pid"] > 0


def test_restart_app_gives_a_new_pid_and_health_ok(tmp_path):
    state, old_pid = program("app")
    assert state == "RUNNING"
    result = run_role(tmp_path, {"service_control_action": "restart"})
    assert result.returncode == 0, result.stdout[-3000:]
    state, new_pid = program("app")
    assert state == "RUNNING" and new_pid != old_pid
    res = result.result
    assert res["changed"] is True and res["check_mode"] is False
    assert res["previous"]["pid"] == old_pid and res["current"]["pid"] == new_pid
    assert "restarted app (app): RUNNING pid %d -> RUNNING pid %d; /health answered 200" % (old_pid, new_pid) == res["message"]
    assert '"healthy"' in wait_healthy()


def test_configure_rate_limit_writes_overrides_restarts_and_returns_previous(tmp_path, restore_overrides):
    dummy_state, old_pid = program("app")
    before = restore_overrides
    settings = {"QUERY_AGENT_RATE_LIMIT_PER_MINUTE": 30, "QUERY_AGENT_API_KEY": SECRET}
    result = run_role(tmp_path, {"service_control_action": "configure", "service_control_settings": settings})
    assert result.returncode == 0, result.stdout[-3000:]
    lines = overrides().decode().splitlines()
    assert "QUERY_AGENT_RATE_LIMIT_PER_MINUTE=30" in lines and "QUERY_AGENT_API_KEY=" + SECRET in lines
    assert oct(os.stat(OVERRIDES).st_mode & 0o777) == "0o600"
    state, new_pid = program("app")
    assert state == "RUNNING" and new_pid != old_pid
    res = result.result
    assert res["changed"] is True and res["current"]["pid"] == new_pid
    assert res["previous"]["settings"] == {key: None for key in settings}  # the lab starts with an empty overrides.env
    assert res["current"]["settings"] == {"QUERY_AGENT_RATE_LIMIT_PER_MINUTE": "30", "QUERY_AGENT_API_KEY": SECRET}
    assert "QUERY_AGENT_RATE_LIMIT_PER_MINUTE" in res["message"] and "values not shown" in res["message"]
    assert SECRET not in res["message"] and SECRET not in result.stdout
    assert '"healthy"' in wait_healthy()
    # the restarted app runs on the new settings: the new API key is accepted, the inventory's key no longer is
    assert api_status(SECRET) != 401
    assert api_status(LAB_API_KEY) == 401

    same = run_role(tmp_path, {"service_control_action": "configure", "service_control_settings": settings})
    assert same.returncode == 0, same.stdout[-3000:]
    assert same.result["changed"] is False and program("app")[1] == new_pid
    assert same.result["previous"]["settings"] == res["current"]["settings"]

    rollback = run_role(tmp_path, {"service_control_action": "configure", "service_control_settings": res["previous"]["settings"]})
    assert rollback.returncode == 0, rollback.stdout[-3000:]
    assert overrides() == before
    assert program("app")[1] != new_pid
    assert '"healthy"' in wait_healthy()
    assert api_status(LAB_API_KEY) != 401 and api_status(SECRET) == 401


def test_check_mode_changes_nothing(tmp_path, restore_overrides):
    dummy_state, pid = program("app")
    mtime = os.stat(OVERRIDES).st_mtime_ns
    calls = [{"service_control_action": "restart"},
             {"service_control_action": "configure", "service_control_settings": {"QUERY_AGENT_RATE_LIMIT_PER_MINUTE": 5}},
             {"service_control_action": "scale", "service_control_replicas": 3},
             {"service_control_action": "stop", "service_control_component": "database"},
             {"service_control_action": "reload", "service_control_component": "proxy"}]
    for call in calls:
        result = run_role(tmp_path, call, check=True)
        assert result.returncode == 0, result.stdout[-3000:]
        assert result.result["check_mode"] is True and result.result["changed"] is True
        assert result.result["message"].startswith("check mode: would "), result.result["message"]
    assert program("app") == ("RUNNING", pid)
    assert overrides() == restore_overrides and os.stat(OVERRIDES).st_mtime_ns == mtime
    assert pg_ready()


def test_scale_sets_lab_replicas_and_restarts(tmp_path, restore_overrides):
    # an operator's hand-written file: a comment and spaces around "="
    with open(OVERRIDES, "w") as handle:
        handle.write("# set by hand\nSQLSYNTH_LAB_REPLICAS = 3\n")
    dummy_state, old_pid = program("app")
    result = run_role(tmp_path, {"service_control_action": "scale", "service_control_replicas": 2})
    assert result.returncode == 0, result.stdout[-3000:]
    assert overrides().decode().splitlines() == ["# set by hand", "SQLSYNTH_LAB_REPLICAS=2"]
    assert program("app")[1] != old_pid
    res = result.result
    assert res["changed"] is True
    assert res["previous"]["replicas"] == 3 and res["current"]["replicas"] == 2
    assert res["previous"]["settings"] == {"SQLSYNTH_LAB_REPLICAS": "3"}
    assert "scaled app from 3 to 2 replicas" in res["message"]
    assert '"healthy"' in wait_healthy()
    # the restarted app read it (its start-up line names the keys it took from overrides.env, never values)
    with open(APP_LOG) as handle:
        started = [line for line in handle if "settings from " + OVERRIDES in line]
    assert started and "SQLSYNTH_LAB_REPLICAS" in started[-1]

    rollback = run_role(tmp_path, {"service_control_action": "scale", "service_control_replicas": res["previous"]["replicas"]})
    assert rollback.returncode == 0, rollback.stdout[-3000:]
    assert overrides().decode().splitlines() == ["# set by hand", "SQLSYNTH_LAB_REPLICAS=3"]
    assert rollback.result["previous"]["replicas"] == 2 and rollback.result["current"]["replicas"] == 3

    removed = run_role(tmp_path, {"service_control_action": "configure", "service_control_settings": {"SQLSYNTH_LAB_REPLICAS": None}})
    assert removed.returncode == 0, removed.stdout[-3000:]
    assert overrides().decode().splitlines() == ["# set by hand"]
    assert '"healthy"' in wait_healthy()


def test_proxy_reload_tests_the_config_then_hups_nginx(tmp_path):
    dummy_state, pid = program("nginx")
    result = run_role(tmp_path, {"service_control_action": "reload", "service_control_component": "proxy"})
    assert result.returncode == 0, result.stdout[-3000:]
    assert result.result["changed"] is True
    assert "after nginx -t passed" in result.result["message"]
    assert program("nginx") == ("RUNNING", pid)  # HUP reloads in place: same master process
    assert '"healthy"' in wait_healthy()


def test_proxy_reload_refused_when_nginx_test_fails(tmp_path):
    dummy_state, pid = program("nginx")
    broken = tmp_path / "broken.conf"
    broken.write_text("events {}\nhttp { server { listen 127.0.0.1:1; bogus_directive on; } }\n")
    result = run_role(tmp_path, {"service_control_action": "reload", "service_control_component": "proxy",
                                 "service_control_lab_nginx_test_cmd": ["/usr/sbin/nginx", "-t", "-q", "-c", str(broken),
                                                                        "-e", str(tmp_path / "error.log")]})
    assert result.returncode != 0
    assert "nginx -t failed, nginx was not reloaded" in result.stdout and "bogus_directive" in result.stdout
    assert program("nginx") == ("RUNNING", pid)
    assert '"healthy"' in wait_healthy()


def test_database_stop_then_start(tmp_path):
    try:
        stop = run_role(tmp_path, {"service_control_action": "stop", "service_control_component": "database"})
        assert stop.returncode == 0, stop.stdout[-3000:]
        assert stop.result["changed"] is True and stop.result["current"]["state"] == "STOPPED"
        assert not pg_ready()
        again = run_role(tmp_path, {"service_control_action": "stop", "service_control_component": "database"})
        assert again.returncode == 0 and again.result["changed"] is False
        start = run_role(tmp_path, {"service_control_action": "start", "service_control_component": "database"})
        assert start.returncode == 0, start.stdout[-3000:]
        assert start.result["changed"] is True and start.result["current"]["state"] == "RUNNING"
        assert "pg_isready ok" in start.result["message"]
        assert pg_ready()
    finally:
        subprocess.run(["pg_ctlcluster", "15", "main", "start"], capture_output=True, check=False)
    assert '"healthy"' in wait_healthy(60)
