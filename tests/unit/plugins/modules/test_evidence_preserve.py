"""evidence_preserve on real files in a temporary directory, checked with the real `sha256sum -c`."""
import hashlib
import json
import os
import stat
import subprocess

import pytest
from ansible.module_utils.testing import patch_module_args

from ansible_collections.sqlsynth.runbooks.plugins.module_utils import _evidence
from ansible_collections.sqlsynth.runbooks.plugins.modules import evidence_preserve


def run(capsys, **args):
    with patch_module_args(args):
        with pytest.raises(SystemExit):
            evidence_preserve.main()
    return json.loads(capsys.readouterr().out)


@pytest.fixture
def logs(tmp_path):
    src = tmp_path / "logs"
    src.mkdir()
    (src / "app.log").write_text("2026-12-05 ERROR boom\n" * 1000)
    (src / "audit.log").write_text('{"event_type": "sql_injection_attempt", "client_ip": "127.0.0.66"}\n' * 50)
    big = os.urandom(3 * 1024 * 1024 + 17)  # more than one copy chunk
    (src / "nginx_access.log").write_bytes(big)
    os.utime(src / "app.log", (1700000000, 1700000000))
    return src


def mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


def test_copies_hash_and_lists_that_sha256sum_accepts(capsys, tmp_path, logs):
    sources = [str(logs / n) for n in ("app.log", "audit.log", "nginx_access.log")]
    result = run(capsys, sources=sources, dest=str(tmp_path / "evidence"), label="run-1")
    target = tmp_path / "evidence" / "run-1"
    assert result["changed"] is True and result["dir"] == str(target) and result["missing"] == []
    assert [f["source"] for f in result["files"]] == sources
    for entry in result["files"]:
        data = open(entry["source"], "rb").read()
        assert open(entry["dest"], "rb").read() == data
        assert entry["sha256"] == hashlib.sha256(data).hexdigest() and entry["bytes"] == len(data)
        assert mode(entry["dest"]) == 0o400
    assert sorted(os.listdir(target)) == ["SHA256SUMS", "SOURCES", "app.log", "audit.log", "nginx_access.log"]
    assert mode(target) == 0o500 and mode(target / "SHA256SUMS") == 0o400 and mode(target / "SOURCES") == 0o400
    check = subprocess.run(["sha256sum", "-c", "--strict", "SHA256SUMS"], cwd=target, capture_output=True, text=True, check=False)
    assert check.returncode == 0, check.stdout + check.stderr
    assert check.stdout.count(": OK") == 3
    rows = (target / "SOURCES").read_text().splitlines()
    assert rows[0] == "# source\tbytes\tmtime_utc\tsha256"
    app = rows[1].split("\t")
    assert app == [sources[0], str(len("2026-12-05 ERROR boom\n") * 1000), "2023-11-14T22:13:20.000000Z",
                   result["files"][0]["sha256"]]


def test_tampering_is_detected_by_sha256sum(capsys, tmp_path, logs):
    result = run(capsys, sources=[str(logs / "app.log")], dest=str(tmp_path / "ev"), label="x")
    copy = result["files"][0]["dest"]
    os.chmod(copy, 0o600)
    with open(copy, "a") as handle:
        handle.write("forged line\n")
    check = subprocess.run(["sha256sum", "-c", "SHA256SUMS"], cwd=result["dir"], capture_output=True, text=True, check=False)
    assert check.returncode != 0 and "FAILED" in check.stdout


def test_existing_evidence_is_never_overwritten(capsys, tmp_path, logs):
    first = run(capsys, sources=[str(logs / "app.log")], dest=str(tmp_path / "ev"), label="run-1")
    before = open(first["files"][0]["dest"], "rb").read()
    (logs / "app.log").write_text("different\n")
    second = run(capsys, sources=[str(logs / "app.log")], dest=str(tmp_path / "ev"), label="run-1")
    assert second["failed"] is True
    assert "evidence directory %s already exists; evidence is never overwritten" % first["dir"] in second["msg"]
    assert open(first["files"][0]["dest"], "rb").read() == before
    assert sorted(os.listdir(first["dir"])) == ["SHA256SUMS", "SOURCES", "app.log"]


def test_missing_sources_are_reported_not_fatal(capsys, tmp_path, logs):
    gone = str(logs / "gunicorn_access.log")
    result = run(capsys, sources=[gone, str(logs / "audit.log")], dest=str(tmp_path / "ev"), label="r")
    assert result["changed"] is True and result["missing"] == [gone]
    assert [os.path.basename(f["dest"]) for f in result["files"]] == ["audit.log"]
    assert subprocess.run(["sha256sum", "-c", "SHA256SUMS"], cwd=result["dir"], capture_output=True, check=False).returncode == 0


def test_all_sources_missing_fails_and_creates_nothing(capsys, tmp_path):
    result = run(capsys, sources=[str(tmp_path / "a.log"), str(tmp_path / "b.log")], dest=str(tmp_path / "ev"), label="r")
    assert result["failed"] is True
    assert result["msg"].startswith("none of the sources exist: %s (does not exist)" % (tmp_path / "a.log"))
    assert not (tmp_path / "ev").exists()


def test_check_mode_lists_what_would_be_copied_and_creates_nothing(capsys, tmp_path, logs):
    result = run(capsys, _ansible_check_mode=True, sources=[str(logs / "app.log"), str(logs / "nope.log")],
                 dest=str(tmp_path / "ev"), label="r")
    assert result["changed"] is True and result["missing"] == [str(logs / "nope.log")]
    assert result["files"] == [{"source": str(logs / "app.log"), "dest": str(tmp_path / "ev" / "r" / "app.log"),
                                "sha256": None, "bytes": os.path.getsize(logs / "app.log")}]
    assert not (tmp_path / "ev").exists()


def test_same_base_name_from_two_directories_is_kept_apart(capsys, tmp_path, logs):
    other = tmp_path / "other"
    other.mkdir()
    (other / "app.log").write_text("the other app\n")
    result = run(capsys, sources=[str(logs / "app.log"), str(other / "app.log")], dest=str(tmp_path / "ev"), label="r")
    assert [os.path.basename(f["dest"]) for f in result["files"]] == ["app.log", "app-2.log"]
    assert open(result["files"][1]["dest"]).read() == "the other app\n"
    assert subprocess.run(["sha256sum", "-c", "SHA256SUMS"], cwd=result["dir"], capture_output=True, check=False).returncode == 0


def test_odd_file_names_still_pass_sha256sum(capsys, tmp_path):
    odd = tmp_path / "we\\ird\nname.log"
    odd.write_text("x\n")
    result = run(capsys, sources=[str(odd)], dest=str(tmp_path / "ev"), label="r")
    check = subprocess.run(["sha256sum", "-c", "SHA256SUMS"], cwd=result["dir"], capture_output=True, text=True, check=False)
    assert check.returncode == 0, check.stdout + check.stderr


@pytest.mark.parametrize("label", ["", "..", "a/b", "."])
def test_bad_label_fails_clearly(capsys, tmp_path, logs, label):
    result = run(capsys, sources=[str(logs / "app.log")], dest=str(tmp_path / "ev"), label=label)
    assert result["failed"] is True and "label" in result["msg"] and "Traceback" not in json.dumps(result)
    assert not (tmp_path / "ev").exists()


def test_directory_source_fails_before_anything_is_created(capsys, tmp_path, logs):
    result = run(capsys, sources=[str(logs / "app.log"), str(logs)], dest=str(tmp_path / "ev"), label="r")
    assert result["failed"] is True and result["msg"] == "source %s is not a regular file; list the files to preserve" % logs
    assert not (tmp_path / "ev").exists()


def test_failure_midway_removes_the_partial_directory(tmp_path, logs, monkeypatch):
    calls = []
    real = _evidence._copy_hashing

    def flaky(src, dst):
        calls.append(src)
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        return real(src, dst)

    monkeypatch.setattr(_evidence, "_copy_hashing", flaky)
    with pytest.raises(_evidence.EvidenceError, match="cannot copy .*audit.log .*: No space left on device"):
        _evidence.preserve([str(logs / "app.log"), str(logs / "audit.log")], str(tmp_path / "ev"), "r")
    assert not (tmp_path / "ev").exists()


def test_sums_line_escapes_like_gnu_sha256sum():
    assert _evidence.sums_line("ab", "plain.log") == "ab  plain.log\n"
    assert _evidence.sums_line("ab", "a\\b\nc") == "\\ab  a\\\\b\\nc\n"
