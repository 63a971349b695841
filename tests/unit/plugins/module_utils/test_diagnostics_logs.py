# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Log scans of incident_diagnostics_info on fake logs: normal, empty, missing, malformed, out of window."""
import datetime
import json

import pytest

from ansible_collections.sqlsynth.runbooks.plugins.module_utils import _logscan

NOW = datetime.datetime(2026, 12, 5, 12, 0, 0, tzinfo=datetime.timezone.utc)


def ago(minutes):
    return NOW - datetime.timedelta(minutes=minutes)


def audit_line(event_type, client, minutes_ago, stamp=None):
    return json.dumps({"event_type": event_type, "severity": "high", "message": "m",
                       "timestamp": stamp or ago(minutes_ago).isoformat(), "client_ip": client, "user_agent": "ua",
                       "trace_id": "t", "request_path": "/api/query", "request_method": "POST",
                       "additional_data": {}})


def write(tmp_path, name, lines):
    path = tmp_path / name
    path.write_text("".join(line + "\n" for line in lines))
    return str(path)


# ---------------------------------------------------------------- audit

def test_audit_counts_by_type_and_ranks_the_injecting_client_first(tmp_path):
    lines = [audit_line("query_execution", "10.0.0.1", 1) for dummy in range(50)]
    lines += [audit_line("sql_injection_attempt", "10.6.6.6", 2) for dummy in range(6)]
    lines += [audit_line("api_key_auth_failed", "10.0.0.9", 3) for dummy in range(9)]
    lines += [audit_line("rate_limit_exceeded", "10.0.0.9", 3), audit_line("xss_attempt", "10.6.6.6", 4)]
    lines += [audit_line("sql_injection_attempt", "10.7.7.7", 5, stamp=ago(5).strftime("%Y-%m-%dT%H:%M:%S.%fZ"))]
    result = _logscan.scan_audit(write(tmp_path, "audit.log", lines), 15, now=NOW)
    assert result["available"] is True and result["error"] is None and result["malformed_lines"] == 0
    assert result["events_by_type"] == {"query_execution": 50, "sql_injection_attempt": 7, "api_key_auth_failed": 9,
                                        "rate_limit_exceeded": 1, "xss_attempt": 1}
    assert (result["injection_attempts"], result["auth_failures"], result["rate_limited"]) == (7, 9, 1)
    assert result["injection_attempts_per_minute"] == round(7 / 15.0, 3)
    assert [o["client"] for o in result["offenders"]] == ["10.6.6.6", "10.7.7.7", "10.0.0.9"]
    assert result["offenders"][0] == {"client": "10.6.6.6", "events": 7, "injection_attempts": 6,
                                      "auth_failures": 0, "rate_limited": 0}
    assert result["offenders"][2]["auth_failures"] == 9 and result["offenders"][2]["rate_limited"] == 1


def test_audit_lines_outside_the_window_do_not_count(tmp_path):
    lines = [audit_line("sql_injection_attempt", "10.6.6.6", 16) for dummy in range(20)]
    lines += [audit_line("sql_injection_attempt", "10.6.6.6", 14)]
    result = _logscan.scan_audit(write(tmp_path, "audit.log", lines), 15, now=NOW)
    assert result["injection_attempts"] == 1 and result["offenders"][0]["injection_attempts"] == 1
    wider = _logscan.scan_audit(write(tmp_path, "audit.log", lines), 30, now=NOW)
    assert wider["injection_attempts"] == 21


def test_audit_malformed_lines_are_counted_not_fatal(tmp_path):
    lines = ["not json at all", "{\"event_type\": \"sql_injection_attempt\"}",  # no timestamp
             json.dumps({"timestamp": NOW.isoformat(), "client_ip": "1.2.3.4"}),  # no event_type
             json.dumps({"event_type": "xss_attempt", "timestamp": "yesterday"}),  # bad timestamp
             "[1, 2]", "", audit_line("sql_injection_attempt", "10.6.6.6", 1)]
    result = _logscan.scan_audit(write(tmp_path, "audit.log", lines), 15, now=NOW)
    assert result["malformed_lines"] == 5
    assert result["injection_attempts"] == 1 and result["offenders"][0]["client"] == "10.6.6.6"


def test_audit_empty_and_missing_files_are_results_with_a_note(tmp_path):
    empty = _logscan.scan_audit(write(tmp_path, "audit.log", []), 15, now=NOW)
    assert empty["available"] is True and empty["events"] == 0 and empty["offenders"] == []
    assert empty["note"] == "log file %s is empty" % (tmp_path / "audit.log")
    missing = _logscan.scan_audit(str(tmp_path / "nope.log"), 15, now=NOW)
    assert missing["available"] is False and missing["injection_attempts"] == 0
    assert missing["error"] == "log file %s does not exist" % (tmp_path / "nope.log")
    assert _logscan.scan_audit(str(tmp_path), 15)["error"] == "%s is not a regular file" % tmp_path


def test_only_the_tail_of_a_large_file_is_read(tmp_path):
    lines = [audit_line("sql_injection_attempt", "10.6.6.6", 1) for dummy in range(100)]
    path = write(tmp_path, "audit.log", lines)
    result = _logscan.scan_audit(path, 15, max_bytes=len(lines[0]) * 10 + 5, now=NOW)
    assert result["malformed_lines"] == 0  # the partial first line is skipped, not counted
    assert 9 <= result["injection_attempts"] <= 10
    assert result["note"].startswith("only the last ")


# ---------------------------------------------------------------- access

def combined(client, minutes_ago, status, request="GET /health HTTP/1.1"):
    stamp = ago(minutes_ago).strftime("%d/%b/%Y:%H:%M:%S +0000")
    return '%s - - [%s] "%s" %d 114 "-" "curl/8"' % (client, stamp, request, status)


def lab_json(client, minutes_ago, status):
    """The lab's nginx log_format sqlsynth_json (roles/lab/templates/nginx.conf.j2)."""
    return json.dumps({"time": ago(minutes_ago).strftime("%Y-%m-%dT%H:%M:%S+00:00"), "remote_addr": client,
                       "request_method": "POST", "request_uri": "/api/query", "status": status,
                       "body_bytes_sent": 10, "request_time": 0.003, "upstream_response_time": "0.002",
                       "http_user_agent": "x", "http_x_forwarded_for": "", "server_name": "sqlsynth.lab"})


def test_access_combined_and_lab_json_lines_give_status_classes_and_offenders(tmp_path):
    lines = [combined("10.0.0.1", 1, 200) for dummy in range(5)]
    lines += [combined("10.6.6.6", 2, 400, 'POST /api/query?q=\\x22x\\x22 HTTP/1.1') for dummy in range(4)]
    lines += [lab_json("10.0.0.2", 3, 502), lab_json("10.0.0.2", 3, 200), lab_json("10.6.6.6", 1, 401)]
    lines += [combined("10.0.0.3", 30, 500), lab_json("10.0.0.3", 30, 500)]  # out of window
    lines += ["garbage", '{"time": "x", "remote_addr": "1.1.1.1", "status": 200}', '{"remote_addr": "1.1.1.1"}',
              '10.0.0.1 - - [99/Foo/2026:00:00:00 +0000] "GET / HTTP/1.1" 200 1 "-" "-"']
    result = _logscan.scan_access(write(tmp_path, "access.log", lines), 15, now=NOW)
    assert result["requests"] == 12 and result["malformed_lines"] == 4
    assert result["status_counts"] == {"1xx": 0, "2xx": 6, "3xx": 0, "4xx": 5, "5xx": 1}
    assert result["offenders"][0] == {"client": "10.6.6.6", "requests": 5, "errors_4xx": 5, "errors_5xx": 0}
    assert [o["client"] for o in result["offenders"]] == ["10.6.6.6", "10.0.0.2", "10.0.0.1"]


def test_access_time_local_with_offset_is_compared_in_utc(tmp_path):
    # 12:55 at +0100 is 11:55 UTC: 5 minutes ago
    line = '10.0.0.1 - - [05/Dec/2026:12:55:00 +0100] "GET / HTTP/1.1" 200 1 "-" "-"'
    result = _logscan.scan_access(write(tmp_path, "access.log", [line]), 10, now=NOW)
    assert result["requests"] == 1
    assert _logscan.scan_access(write(tmp_path, "access.log", [line]), 4, now=NOW)["requests"] == 0


# ---------------------------------------------------------------- app log and masking

def test_app_log_keeps_the_last_20_error_lines_masked_and_in_window(tmp_path):
    local = NOW.astimezone()
    recent = (local - datetime.timedelta(minutes=2)).strftime("%Y-%m-%d %H:%M:%S")
    old = (local - datetime.timedelta(minutes=60)).strftime("%Y-%m-%d %H:%M:%S")
    lines = ["%s,100 ERROR old: ancient failure" % old, "Traceback (most recent call last):", '  File "x.py"']
    lines += ["%s,100 INFO app: fine" % recent]
    lines += ["%s,200 ERROR app: failure %d" % (recent, i) for i in range(25)]
    lines += ["%s,300 ERROR db: cannot connect to postgresql://sql_user:hunter2@db:5432/app" % recent,
              "%s,300 CRITICAL auth: Authorization: Bearer abc.def-ghi api_key=k3y password: pw1 token=t0k" % recent,
              "%s,300 ERROR cfg: QUERY_AGENT_REDIS_PASSWORD=r3dis \"secret\": \"s3\" known SECRET-VALUE" % recent,
              "Traceback (most recent call last):"]
    path = write(tmp_path, "app.log", lines)
    result = _logscan.scan_app(path, 15, secrets=["SECRET-VALUE"], now=NOW)
    assert result["error_count"] == 29
    assert len(result["recent_errors"]) == 20
    assert result["recent_errors"][-1] == "Traceback (most recent call last):"
    text = "\n".join(result["recent_errors"])
    assert "ancient" not in text
    for secret in ("hunter2", "abc.def-ghi", "k3y", "pw1", "t0k", "r3dis", "s3", "SECRET-VALUE"):
        assert secret not in text
    assert "postgresql://sql_user:********@db:5432/app" in text
    assert "Bearer ********" in text


@pytest.mark.parametrize("text, expected", [
    ("redis://:pw@cache:6379/0", "redis://:********@cache:6379/0"),
    ("X-API-Key: abcdef", "X-API-Key: ********"),
    ("cache_key=tables rows=3", "cache_key=tables rows=3"),
    ("{'password': 'x y'}", "{'password': ********}"),
])
def test_mask_secrets(text, expected):
    assert _logscan.mask_secrets(text) == expected


def test_app_log_without_timestamps_counts_every_error(tmp_path):
    result = _logscan.scan_app(write(tmp_path, "app.log", ["ERROR one", "fine", "CRITICAL two"]), 15, now=NOW)
    assert result["error_count"] == 2 and result["recent_errors"] == ["ERROR one", "CRITICAL two"]
    assert _logscan.scan_app(None, 15)["error"] == "no path given"


def test_iso_timestamps_with_z_short_fractions_and_no_zone_are_utc():
    assert _logscan.parse_iso("2026-12-05T11:59:00.12Z") == datetime.datetime(
        2026, 12, 5, 11, 59, 0, 120000, tzinfo=datetime.timezone.utc)
    assert _logscan.parse_iso("2026-12-05T11:59:00").tzinfo == datetime.timezone.utc
    with pytest.raises(ValueError):
        _logscan.parse_iso("12/05/2026")
