"""The rotation plan mirrors logrotate with dateext: only the entry's own rotated files, oldest removed first."""
import pytest

from ansible_collections.sqlsynth.runbooks.plugins.module_utils import _disk

DEBUG_OUTPUT = """\
rotating pattern: /l/a.log /l/b.log  forced from command line (3 rotations)
considering log /l/a.log
  Now: 2026-11-29 08:59
  log needs rotating
considering log /l/b.log
  log does not need rotating (log is empty)
considering log /l/c.log
  log does not need rotating (log has already been rotated)
rotating log /l/a.log, log->rotateCount is 3
"""


def test_dateext_regex_matches_only_the_date_format():
    import re
    rx = re.compile("^" + _disk.dateext_regex("-%Y%m%d-%H%M%S") + "$")
    assert rx.match("-20261129-085941")
    assert not rx.match("-20261129") and not rx.match(".1") and not rx.match("-2026112-085941")


def test_dateext_regex_refuses_what_logrotate_refuses():
    with pytest.raises(ValueError, match="not %Q"):
        _disk.dateext_regex("-%Y%Q")


def test_due_logs_reads_logrotate_debug_output():
    assert _disk.due_logs(DEBUG_OUTPUT) == {"/l/a.log"}


def make(tmp_path, names, live="a.log"):
    (tmp_path / live).write_text("x" * 100)
    for name in names:
        (tmp_path / name).write_text("y" * 10)
    return str(tmp_path / live)


def test_plan_removes_oldest_beyond_retention_and_compresses_the_rest(tmp_path):
    live = make(tmp_path, ["a.log-20250101-000000.gz", "a.log-20250102-000000", "a.log-20250103-000000",
                           "b.log-20240101-000000", "a.log.1", "a.log-20240101"])
    entry = _disk.plan_log(live, True, 2, "-%Y%m%d-%H%M%S")
    assert [f["path"].rsplit("/", 1)[1] for f in entry["rotated"]] == [
        "a.log-20250101-000000.gz", "a.log-20250102-000000", "a.log-20250103-000000"]
    assert [p.rsplit("/", 1)[1] for p in entry["remove"]] == ["a.log-20250101-000000.gz", "a.log-20250102-000000"]
    assert [p.rsplit("/", 1)[1] for p in entry["compress"]] == ["a.log-20250103-000000"]
    plan = _disk.summarize([entry])
    assert plan["rotate"] == [live] and plan["freeable_bytes"] == 30


def test_plan_without_delaycompress_compresses_the_new_file_too(tmp_path):
    live = make(tmp_path, [])
    entry = _disk.plan_log(live, True, 3, "-%Y%m%d-%H%M%S", delaycompress=False)
    assert entry["remove"] == [] and entry["compress"] == [live + "-<date>"]


def test_nothing_planned_when_not_due_or_missing(tmp_path):
    live = make(tmp_path, ["a.log-20250101-000000"] * 1)
    assert _disk.plan_log(live, False, 0, "-%Y%m%d-%H%M%S")["remove"] == []
    missing = _disk.plan_log(str(tmp_path / "gone.log"), True, 1, "-%Y%m%d-%H%M%S")
    assert missing["live"] is None and not missing["due"]
    assert _disk.summarize([missing]) == {"rotate": [], "compress": [], "remove": [], "freeable_bytes": 0}


def test_dir_usage_counts_bytes_and_reports_the_filesystem(tmp_path):
    make(tmp_path, ["a.log-20250101-000000"])
    usage = _disk.dir_usage(str(tmp_path))
    assert usage["bytes"] == 110 and usage["files"] == 2
    assert 0 < usage["fs_free_bytes"] <= usage["fs_total_bytes"] and 0 <= usage["fs_free_percent"] <= 100
