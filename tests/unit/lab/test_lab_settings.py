"""Lab settings of the reference app: overrides.env, gunicorn.conf.py, HSTS/CSRF, process-held faults, attacker.

No lab and no database: Flask's test client, the real modules, files in tmp_path.
"""
import json
import logging
import os
import runpy
import socket
import threading
import time

import pytest

import attacker
import sqlsynth_lab_app as lab
import sqlsynth_lab_overrides as overrides

from conftest import APP_DIR

GUNICORN_CONF = os.path.join(APP_DIR, "gunicorn.conf.py")
SECRET = "s3cr3t-value-never-logged"


# --------------------------------------------------------------------------- overrides.env

def test_overrides_parse_keeps_valid_lines_and_reports_invalid_ones():
    text = "\n".join([
        "# a comment",
        "",
        "QUERY_AGENT_RATE_LIMIT_PER_MINUTE=10",
        "  QUERY_AGENT_ENABLE_HSTS = true  ",
        "QUERY_AGENT_DATABASE_URL=postgresql://u:p@h/db?a=b",
        "no equals sign here",
        "1BAD=x",
        "BAD-KEY=x",
        "=novalue",
        "QUERY_AGENT_RATE_LIMIT_PER_MINUTE=5",
    ])
    values, problems = overrides.parse(text)
    assert values == {
        "QUERY_AGENT_RATE_LIMIT_PER_MINUTE": "5",  # the last line wins
        "QUERY_AGENT_ENABLE_HSTS": "true",
        "QUERY_AGENT_DATABASE_URL": "postgresql://u:p@h/db?a=b",
    }
    assert [number for number, _reason in problems] == [6, 7, 8, 9]


def test_load_config_merges_overrides_over_the_environment(tmp_path):
    path = tmp_path / "overrides.env"
    path.write_text("QUERY_AGENT_RATE_LIMIT_PER_MINUTE=5\nQUERY_AGENT_DB_POOL_SIZE=20\n"
                    "QUERY_AGENT_CACHE_BACKEND=memory\nQUERY_AGENT_API_KEY=new-key\n")
    env = {"QUERY_AGENT_RATE_LIMIT_PER_MINUTE": "60", "QUERY_AGENT_CACHE_BACKEND": "redis",
           "QUERY_AGENT_API_KEY": "old-key", "QUERY_AGENT_DB_MAX_OVERFLOW": "7",
           "SQLSYNTH_LAB_OVERRIDES_FILE": str(path)}
    cfg = lab.load_config(env)
    assert (cfg["rate_limit"], cfg["pool_size"], cfg["max_overflow"]) == (5, 20, 7)
    assert (cfg["cache_backend"], cfg["api_key"]) == ("memory", "new-key")
    assert env["QUERY_AGENT_API_KEY"] == "old-key"  # the caller's environment is not changed


def test_missing_or_empty_overrides_file_changes_nothing(tmp_path):
    env = {"QUERY_AGENT_RATE_LIMIT_PER_MINUTE": "60"}
    assert lab.load_config(dict(env, SQLSYNTH_LAB_OVERRIDES_FILE=str(tmp_path / "absent.env")))["rate_limit"] == 60
    (tmp_path / "empty.env").write_text("")
    assert lab.load_config(dict(env, SQLSYNTH_LAB_OVERRIDES_FILE=str(tmp_path / "empty.env")))["rate_limit"] == 60


def test_invalid_override_lines_are_logged_without_values_and_ignored(tmp_path, caplog):
    path = tmp_path / "overrides.env"
    path.write_text(f"QUERY_AGENT_API_KEY {SECRET}\nQUERY_AGENT_RATE_LIMIT_PER_MINUTE=7\n")
    with caplog.at_level(logging.WARNING, logger="sqlsynth_lab_app"):
        cfg = lab.load_config({"SQLSYNTH_LAB_OVERRIDES_FILE": str(path), "QUERY_AGENT_API_KEY": "env-key"})
    assert cfg["rate_limit"] == 7 and cfg["api_key"] == "env-key"
    assert f"{path} line 1 ignored" in caplog.text
    assert SECRET not in caplog.text


def test_app_started_with_overrides_enforces_the_overridden_rate_limit(make_app, fake_db, tmp_path):
    path = tmp_path / "overrides.env"
    path.write_text("QUERY_AGENT_RATE_LIMIT_PER_MINUTE=5\n")
    lab_app = make_app(SQLSYNTH_LAB_OVERRIDES_FILE=path, QUERY_AGENT_RATE_LIMIT_PER_MINUTE=60)
    fake_db(lab_app)
    statuses = [lab_app.query("how many users").status_code for _attempt in range(6)]
    assert statuses == [200] * 5 + [429]


# --------------------------------------------------------------------------- gunicorn.conf.py

def _gunicorn_settings(monkeypatch, tmp_path, text=None):
    path = tmp_path / "overrides.env"
    if text is not None:
        path.write_text(text)
    monkeypatch.setenv("SQLSYNTH_LAB_OVERRIDES_FILE", str(path))
    return runpy.run_path(GUNICORN_CONF)


def test_gunicorn_threads_follow_replicas_and_keepalive_outlasts_nginx(monkeypatch, tmp_path):
    settings = _gunicorn_settings(monkeypatch, tmp_path)
    assert (settings["workers"], settings["threads"], settings["keepalive"]) == (1, 8, 75)
    assert settings["keepalive"] > 60  # nginx's upstream keepalive_timeout default
    assert _gunicorn_settings(monkeypatch, tmp_path, "SQLSYNTH_LAB_REPLICAS=3\n")["threads"] == 24
    assert _gunicorn_settings(monkeypatch, tmp_path, "SQLSYNTH_LAB_REPLICAS=2\nSQLSYNTH_LAB_THREADS=4\n")["threads"] == 8


@pytest.mark.parametrize("value", ["0", "-2", "many", ""])
def test_gunicorn_ignores_invalid_replicas(monkeypatch, tmp_path, value):
    assert _gunicorn_settings(monkeypatch, tmp_path, f"SQLSYNTH_LAB_REPLICAS={value}\n")["threads"] == 8


# --------------------------------------------------------------------------- HSTS and CSRF

def test_hsts_header_only_when_enabled(make_app):
    assert "Strict-Transport-Security" not in make_app().client.get("/health").headers
    resp = make_app(QUERY_AGENT_ENABLE_HSTS="true").client.get("/health")
    assert resp.headers["Strict-Transport-Security"].startswith("max-age=31536000")


def test_hsts_from_overrides_file(make_app, tmp_path):
    path = tmp_path / "overrides.env"
    path.write_text("QUERY_AGENT_ENABLE_HSTS=true\n")
    resp = make_app(SQLSYNTH_LAB_OVERRIDES_FILE=path).client.get("/metrics")
    assert "max-age=" in resp.headers["Strict-Transport-Security"]


def test_csrf_setting_is_read_and_shown(make_app):
    assert make_app().client.get("/health").headers["X-CSRF-Protection"] == "disabled"
    lab_app = make_app(QUERY_AGENT_CSRF_ENABLED="true")
    assert lab_app.state.cfg["csrf_enabled"] is True
    assert lab_app.client.get("/health").headers["X-CSRF-Protection"] == "enabled"


def test_csrf_on_keeps_api_key_calls_working(make_app, fake_db):
    lab_app = make_app(QUERY_AGENT_CSRF_ENABLED="true", QUERY_AGENT_API_KEY_REQUIRED="true", QUERY_AGENT_API_KEY="k")
    fake_db(lab_app)
    assert lab_app.query("how many users", **{"X-API-Key": "k"}).status_code == 200
    assert lab_app.query("how many users", Authorization="Bearer k").status_code == 200
    assert lab_app.query("how many users").status_code == 401  # still the API key answer


def test_csrf_on_refuses_browser_calls_without_token(make_app, fake_db):
    lab_app = make_app(QUERY_AGENT_CSRF_ENABLED="true")
    fake_db(lab_app)
    resp = lab_app.query("how many users")
    assert resp.status_code == 403
    assert [e["event_type"] for e in lab_app.audit_events()] == ["csrf_validation_failed"]
    lab_app.client.set_cookie("csrf_token", "tok123")
    assert lab_app.query("how many users", **{"X-CSRF-Token": "tok123"}).status_code == 200
    assert lab_app.query("how many users", **{"X-CSRF-Token": "other"}).status_code == 403


# --------------------------------------------------------------------------- faults held by the process

def _write_faults(path, **faults):
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(faults))
    os.replace(tmp, path)


def test_error_burst_armed_after_start_applies_and_a_restart_clears_it(make_app):
    lab_app = make_app()
    _write_faults(lab_app.faults_file, error_burst=True, armed_at={"error_burst": lab_app.state.started})
    assert lab_app.client.get("/health").status_code == 500
    restarted = make_app()  # a new process reading the same faults.json, which still says on
    assert restarted.state.started > lab_app.state.started
    assert restarted.client.get("/health").status_code == 503  # the real answer: no database here
    assert json.loads(restarted.faults_file.read_text())["error_burst"] is True
    _write_faults(lab_app.faults_file, error_burst=True, armed_at={"error_burst": restarted.state.started})
    assert restarted.client.get("/health").status_code == 500  # re-armed
    _write_faults(lab_app.faults_file, error_burst=False)
    assert restarted.client.get("/health").status_code == 503  # off clears at once


def test_faults_armed_before_start_are_not_applied(tmp_path):
    path = tmp_path / "faults.json"
    started = time.time()
    _write_faults(path, error_burst=True, latency_ms=500, hang=True, pool_exhaustion=True,
                  armed_at={"error_burst": started - 10, "latency": started - 10})
    value = lab.Faults(str(path), started=started).get()
    assert (value["error_burst"], value["latency_ms"]) == (False, 0)
    assert (value["hang"], value["pool_exhaustion"]) == (True, True)  # these follow the file alone
    value = lab.Faults(str(path), started=started - 20).get()
    assert (value["error_burst"], value["latency_ms"]) == (True, 500)


def test_without_armed_at_the_file_time_decides(tmp_path):
    path = tmp_path / "faults.json"
    _write_faults(path, error_burst=True, latency_ms=100)
    past = time.time() - 3600
    os.utime(path, (past, past))
    assert lab.Faults(str(path)).get()["error_burst"] is False
    assert lab.Faults(str(path), started=past - 60).get()["latency_ms"] == 100


def test_bad_armed_at_falls_back_to_the_file_time(tmp_path):
    path = tmp_path / "faults.json"
    _write_faults(path, error_burst=True, armed_at="yesterday")
    assert lab.Faults(str(path), started=time.time() - 60).get()["error_burst"] is True
    _write_faults(path, error_burst=True, armed_at={"error_burst": "soon"})
    assert lab.Faults(str(path), started=time.time() + 60).get()["error_burst"] is False


# --------------------------------------------------------------------------- attacker

def test_attacker_refuses_a_non_https_url():
    with pytest.raises(SystemExit):
        attacker.parse_args(["--url", "http://127.0.0.1:8080/api/query"])


def test_attacker_tolerates_refused_connections_and_counts_them(free_port):
    cafile = "/etc/ssl/certs/ca-certificates.crt"  # any readable CA bundle: no TLS handshake happens
    args = attacker.parse_args(["--url", f"https://127.0.0.1:{free_port}/api/query", "--cacert", cafile,
                                "--source", "127.0.0.66", "--rate", "50", "--count", "3"])
    counts = attacker.run(args, "key")
    assert counts == {"error:refused": 3}


def test_attacker_binds_its_source_address(free_port):
    seen = []
    with socket.socket() as server:
        server.bind(("127.0.0.1", free_port))
        server.listen(1)
        server.settimeout(5)
        args = attacker.parse_args(["--url", f"https://127.0.0.1:{free_port}/api/query", "--cacert",
                                    "/etc/ssl/certs/ca-certificates.crt", "--timeout", "1", "--count", "1"])

        def accept():
            conn, peer = server.accept()
            seen.append(peer[0])
            conn.close()

        thread = threading.Thread(target=accept)
        thread.start()
        status = attacker.attack_once(args, attacker.make_context(args.cacert), attacker.QUESTIONS[0], "key")
        thread.join(5)
    assert seen == ["127.0.0.66"]
    assert status.startswith("error:")
