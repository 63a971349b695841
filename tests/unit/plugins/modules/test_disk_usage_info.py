"""disk_usage_info with the real logrotate in debug mode against a directory of the test's own."""
import json
import os

import pytest
from ansible.module_utils.testing import patch_module_args

from ansible_collections.sqlsynth.runbooks.plugins.modules import disk_usage_info

CONF = """"{log}" {{
    daily
    rotate 2
    missingok
    notifempty
    compress
    delaycompress
    copytruncate
    dateext
    dateformat -%Y%m%d-%H%M%S
}}
"""


def run(capsys, **args):
    with patch_module_args(args):
        with pytest.raises(SystemExit):
            disk_usage_info.main()
    return json.loads(capsys.readouterr().out)


@pytest.fixture
def logs(tmp_path):
    tmp_path.chmod(0o755)
    (tmp_path / "a.log").write_text("line\n" * 100)
    for day in (1, 2, 3):
        (tmp_path / ("a.log-2025010%d-000000" % day)).write_text("old\n")
    conf = tmp_path / "policy"
    conf.write_text(CONF.format(log=tmp_path / "a.log"))
    conf.chmod(0o644)
    return tmp_path


def entry(path):
    return {"name": "a", "paths": [str(path / "a.log")], "rotate": 2}


def test_forced_plan_removes_beyond_retention_and_changes_nothing(capsys, logs):
    before = sorted((p.name, p.stat().st_mtime_ns) for p in logs.iterdir())
    result = run(capsys, paths=[str(logs)], logs=[entry(logs)], logrotate_conf=str(logs / "policy"),
                 state_file=str(logs / "status"), force=True, _ansible_check_mode=True)
    assert result["changed"] is False
    assert result["plan"]["rotate"] == [str(logs / "a.log")]
    assert [os.path.basename(p) for p in result["plan"]["remove"]] == ["a.log-20250101-000000",
                                                                       "a.log-20250102-000000"]
    assert [os.path.basename(p) for p in result["plan"]["compress"]] == ["a.log-20250103-000000"]
    assert result["dirs"][0]["files"] == 5 and result["fs_free_bytes"] > 0
    assert sorted((p.name, p.stat().st_mtime_ns) for p in logs.iterdir()) == before


def test_not_forced_nothing_is_due_without_a_state_entry(capsys, logs):
    result = run(capsys, paths=[str(logs)], logs=[entry(logs)], logrotate_conf=str(logs / "policy"),
                 state_file=str(logs / "status"))
    assert result["plan"] == {"rotate": [], "compress": [], "remove": [], "freeable_bytes": 0}
    assert len(result["logs"]["a"][0]["rotated"]) == 3


def test_logrotate_errors_fail_cleanly(capsys, logs):
    logs.chmod(0o777)
    try:
        result = run(capsys, paths=[str(logs)], logs=[entry(logs)], logrotate_conf=str(logs / "policy"),
                     state_file=str(logs / "status"), force=True)
    finally:
        logs.chmod(0o755)
    assert result["failed"] and "insecure permissions" in result["msg"]


@pytest.mark.parametrize("args, message", [
    ({"paths": ["/nonexistent-dir"]}, "not a directory: /nonexistent-dir"),
    ({"logs": [{"name": "a", "paths": ["a.log"]}]}, "log paths must be absolute"),
    ({"logs": [{"name": "a", "paths": ["/x/a.log"], "dateformat": "-%Y%Q"}]}, "policy entry a: dateformat"),
    ({"logrotate_conf": "/nonexistent.conf"}, "logrotate_conf /nonexistent.conf does not exist"),
])
def test_bad_input_fails_with_a_clear_message(capsys, logs, args, message):
    result = run(capsys, **dict({"paths": [str(logs)]}, **args))
    assert result["failed"] and message in result["msg"]
