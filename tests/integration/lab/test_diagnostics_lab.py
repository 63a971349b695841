"""incident_diagnostics_info against the real lab: healthy, a real idle-in-transaction session, planted audit lines."""
import datetime
import json
import os
import time

import psycopg
import yaml

from labtools import LAB_ROOT, assert_no_traceback, run_playbook

LOGS = os.path.join(LAB_ROOT, "logs")
SETTINGS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..",
                        "inventories", "lab", "group_vars", "all", "main.yml")
ATTACKER = "127.0.0.99"


def lab_settings():
    with open(SETTINGS) as handle:
        return yaml.safe_load(handle)


def diagnose(tmp_path, check=False, **options):
    """Run the module through ansible-playbook on the lab inventory; returns (diagnostics, output)."""
    out_file = tmp_path / "diagnostics.json"
    args = dict(
        app_url="{{ sqlsynth_app_url }}", app_direct_url="{{ sqlsynth_app_direct_url }}",
        metrics_url="{{ sqlsynth_metrics_url }}", server_name="{{ sqlsynth_tls_server_name }}",
        ca_path="{{ sqlsynth_ca_path }}", api_key="{{ sqlsynth_api_key }}", metrics_window=2,
        login_host="{{ sqlsynth_db_host }}", login_port="{{ sqlsynth_db_port }}", login_db="{{ sqlsynth_db_name }}",
        login_user="{{ sqlsynth_db_user }}", login_password="{{ sqlsynth_db_password }}",
        host="{{ sqlsynth_redis_host }}", port="{{ sqlsynth_redis_port }}", password="{{ sqlsynth_redis_password }}",
        disk_paths=[LAB_ROOT])
    args.update(options)
    playbook = tmp_path / "diagnose.yml"
    playbook.write_text(yaml.safe_dump([{
        "name": "Diagnostics", "hosts": "localhost", "gather_facts": False, "tasks": [
            {"name": "Gather", "sqlsynth.runbooks.incident_diagnostics_info": args, "register": "incident"},
            {"name": "Keep", "check_mode": False, "ansible.builtin.copy": {
                "content": "{{ incident.diagnostics | to_json }}", "dest": str(out_file), "mode": "0600"}},
        ]}]))
    result = run_playbook(str(playbook), check=check)
    assert result.returncode == 0, result.stdout[-4000:]
    assert_no_traceback(result.stdout)
    return json.loads(out_file.read_text()), result.stdout


def test_healthy_lab_has_no_problems_and_no_secrets(tmp_path):
    diag, output = diagnose(tmp_path, log_files={"access": os.path.join(LOGS, "nginx_access.log")})
    assert diag["problems"] == [], diag
    assert diag["health"]["status"] == "healthy" and diag["health"]["direct"]["status"] == "healthy"
    assert diag["synthetic"]["ok"] is True
    assert diag["metrics"]["available"] is True and diag["metrics"]["requests"] >= 1
    pg = diag["postgres"]
    assert pg["available"] is True and pg["reachable"] is True and pg["error"] is None
    assert pg["idle_in_transaction"] == [] and pg["blocked"] == []
    assert pg["max_connections"] > 0 and pg["connections"]["app"] >= 1  # the app's pool is connected
    assert pg["pg_stat_statements"] is True  # the lab preloads it and creates it in sql_synthesizer
    assert diag["redis"]["reachable"] is True and diag["redis"]["maxmemory"] == 512 * 1024 * 1024
    # the lab's real nginx log (a JSON log_format) is read line by line without a malformed one
    access = diag["logs"]["access"]
    assert access["available"] is True and access["malformed_lines"] == 0 and access["requests"] >= 1
    settings = lab_settings()
    text = json.dumps(diag) + output
    for secret in ("sqlsynth_api_key", "sqlsynth_db_password", "sqlsynth_redis_password"):
        assert settings[secret] not in text


def test_a_session_idle_in_transaction_is_listed_with_its_pid(tmp_path):
    settings = lab_settings()
    conn = psycopg.connect(host=settings["sqlsynth_db_host"], port=settings["sqlsynth_db_port"],
                           dbname=settings["sqlsynth_db_name"], user=settings["sqlsynth_db_user"],
                           password=settings["sqlsynth_db_password"], application_name="stuck_worker")
    try:
        conn.execute("SELECT count(*) FROM users").fetchone()  # opens a transaction and leaves it open
        pid = conn.info.backend_pid
        time.sleep(2)
        diag, dummy = diagnose(tmp_path, check=True, sections=["postgres"], idle_in_transaction_seconds=1)
    finally:
        conn.rollback()
        conn.close()
    idle = diag["postgres"]["idle_in_transaction"]
    mine = [row for row in idle if row["pid"] == pid]
    assert mine, idle
    assert mine[0]["application_name"] == "stuck_worker" and mine[0]["seconds"] >= 1
    assert "SELECT count(*) FROM users" in mine[0]["query"]
    assert "%d session%s idle in transaction > 1 s" % (len(idle), "" if len(idle) == 1 else "s") in diag["problems"]
    assert diag["postgres"]["connections"]["by_state"]["idle in transaction"] >= 1


def test_planted_audit_lines_make_their_client_the_first_offender(tmp_path):
    """A fresh audit log (the lab's own may hold other tests' attackers): normal traffic, then an attacker."""
    audit = tmp_path / "audit.log"
    now = datetime.datetime.now(datetime.timezone.utc)

    def event(kind, client, seconds_ago):
        return {"event_type": kind, "severity": "high", "message": kind,
                "timestamp": (now - datetime.timedelta(seconds=seconds_ago)).isoformat(), "client_ip": client,
                "user_agent": "sqlmap/1.7", "trace_id": "t", "request_path": "/api/query",
                "request_method": "POST", "additional_data": {}}

    planted = [event("query_execution", "127.0.0.1", i) for i in range(30)]
    planted += [event("api_key_auth_failed", "127.0.0.1", i) for i in range(3)]
    planted += [event("sql_injection_attempt", ATTACKER, i) for i in range(40)]
    planted += [event("sql_injection_attempt", "127.0.0.98", 3600)]  # an hour ago: outside the window
    with open(str(audit), "w") as handle:
        handle.write("".join(json.dumps(e) + "\n" for e in planted))
        handle.write("this line is not JSON\n")
    diag, dummy = diagnose(tmp_path, sections=["logs"], log_files={
        "audit": str(audit), "app": os.path.join(LOGS, "app.log"), "access": os.path.join(LOGS, "nginx_access.log")})
    result = diag["logs"]["audit"]
    assert result["offenders"][0]["client"] == ATTACKER
    assert result["offenders"][0]["injection_attempts"] == 40
    assert result["injection_attempts"] == 40 and result["malformed_lines"] == 1
    assert [o["client"] for o in result["offenders"]] == [ATTACKER, "127.0.0.1"]
    assert "client %s: 40 injection attempts in 15 min" % ATTACKER in diag["problems"]
    assert diag["logs"]["app"]["available"] is True
