"""log_rotation against the real lab: forced rotation of the lab's logs with writers kept on the fresh files,
retention and no data lost, idempotence, check mode, the nearly-full partition guard, the production guard,
a policy logrotate -d rejects, and two concurrent runs.

The lab's log directory persists across runs, so tests on it count relative to a snapshot taken at their
start; tests of exact retention use their own log directory (tmp_path), passed to the runbook as variables.
"""
import hashlib
import json
import os
import re
import subprocess
import threading

import yaml

from labtools import LAB_ROOT, ROOT, assert_no_traceback, recap, run_playbook

PLAYBOOK = "sqlsynth.runbooks.log_rotation"
DATE = r"-\d{8}-\d{6}"  # the runbook's default dateformat -%Y%m%d-%H%M%S
LAB_LOGS = os.path.join(LAB_ROOT, "logs")
# The lab's policy (proposed for inventories/lab/group_vars/all/log_rotation.yml). nginx gets copytruncate too:
# its workers (www-data) cannot reopen files in the lab's 0750 root log directory after USR1 and would keep
# writing to the rotated file (the runbook's writer check caught exactly that).
LAB_VARS = {
    "log_rotation_log_dir": LAB_LOGS,
    "log_rotation_conf_dir": os.path.join(LAB_ROOT, "logrotate"),
    "log_rotation_state_file": os.path.join(LAB_ROOT, "logrotate", "status"),
    "log_rotation_policies": [
        {"name": "app", "paths": ["app.log"], "rotate": 5},
        {"name": "audit", "paths": ["audit.log"], "rotate": 5, "grows_on_request": True},
        {"name": "gunicorn_access", "paths": ["gunicorn_access.log"], "rotate": 5, "grows_on_request": True},
        {"name": "gunicorn_error", "paths": ["gunicorn_error.log"], "rotate": 5},
        {"name": "nginx_access", "paths": ["nginx_access.log"], "rotate": 5, "grows_on_request": True},
        {"name": "nginx_error", "paths": ["nginx_error.log"], "rotate": 5},
    ],
}
LAB_LIVE = {e["name"]: os.path.join(LAB_LOGS, e["paths"][0]) for e in LAB_VARS["log_rotation_policies"]}


def run(variables, *args, check=False):
    result = run_playbook(PLAYBOOK, "-e", json.dumps(variables), *args, check=check)
    assert_no_traceback(result.stdout)
    return result


def rotated(live):
    """Rotated files of one log: its name + the date suffix (+ .gz), compression-normalised, sorted."""
    directory, base = os.path.split(live)
    pattern = re.compile("^%s%s(\\.gz)?$" % (re.escape(base), DATE))
    return sorted(re.sub(r"\.gz$", "", n) for n in os.listdir(directory) if pattern.match(n))


def fingerprint(*dirs):
    """Every file below dirs: size, mtime and sha256."""
    result = {}
    for top in dirs:
        for root, _dirs, files in os.walk(top):
            for name in files:
                path = os.path.join(root, name)
                with open(path, "rb") as handle:
                    digest = hashlib.sha256(handle.read()).hexdigest()
                st = os.stat(path)
                result[path] = (st.st_size, st.st_mtime_ns, digest)
    return result


def own_dir(tmp_path, rotated_names=(), live="a.log", live_lines=500, rotate=3, **extra):
    """A log directory of the test's own: one live log and the given rotated files (plus decoys)."""
    logs, conf = tmp_path / "logs", tmp_path / "conf"
    for path in (tmp_path, logs, conf):
        path.mkdir(exist_ok=True)
        path.chmod(0o755)  # logrotate refuses group/world-writable log directories
    (logs / live).write_text("".join("line %d\n" % i for i in range(live_lines)))
    for name in rotated_names:
        (logs / name).write_bytes(b"old log " + name.encode() * 50)
    # Files that are not rotated files of a.log: never counted, never removed.
    for decoy in ("b.log-20200101-000000", "a.log.1", "a.log-old", "a.log-20200101"):
        (logs / decoy).write_text("decoy\n")
    variables = {"log_rotation_log_dir": str(logs), "log_rotation_conf_dir": str(conf),
                 "log_rotation_state_file": str(conf / "status"),
                 "log_rotation_policies": [{"name": "a", "paths": [live], "rotate": rotate}]}
    variables.update(extra)
    return str(logs), str(conf), variables


OLD = ["a.log-2025010%d-000000" % i for i in range(1, 6)] + ["a.log-2024120%d-000000.gz" % i for i in range(1, 3)]


def api_query():
    """One request to the app through nginx (as a client would), which writes the access and audit logs."""
    with open(os.path.join(ROOT, "inventories", "lab", "group_vars", "all", "main.yml")) as handle:
        api_key = yaml.safe_load(handle)["sqlsynth_api_key"]
    out = subprocess.run(["curl", "-sS", "--max-time", "10", "-o", "/dev/null", "-w", "%{http_code}",
                          "--cacert", os.path.join(LAB_ROOT, "ca", "ca.crt"), "-H", "X-API-Key: " + api_key,
                          "-H", "Content-Type: application/json", "-d", '{"question": "how many users are there"}',
                          "https://127.0.0.1:8443/api/query"], capture_output=True, text=True, check=False)
    assert out.stdout == "200", out.stdout + out.stderr


def test_forced_rotation_of_the_lab_logs_keeps_writers_on_the_fresh_files_and_retention():
    api_query()  # make sure the audit and access logs have something to rotate
    before = {name: rotated(live) for name, live in LAB_LIVE.items()}
    non_empty = {name for name, live in LAB_LIVE.items() if os.path.getsize(live) > 0}
    result = run(dict(LAB_VARS, log_rotation_force=True))
    assert result.returncode == 0, result.stdout[-5000:]
    assert "verdict: healthy" in result.stdout
    after = {name: rotated(live) for name, live in LAB_LIVE.items()}
    for name in LAB_LIVE:
        new = sorted(set(after[name]) - set(before[name]))
        if name in {"audit", "gunicorn_access", "nginx_access"}:
            assert name in non_empty and len(new) == 1, (name, before[name], after[name])
        # Retention: exactly the newest 5 of what was there plus the new one; nothing else lost.
        expected = sorted(before[name] + new)[-5:] if new else before[name]
        assert after[name] == expected, (name, before[name], after[name])
    # The writers write to the fresh files, not to the rotated ones.
    newest = {n: os.path.join(LAB_LOGS, after[n][-1]) for n in ("audit", "gunicorn_access", "nginx_access")}
    sizes = {n: os.path.getsize(LAB_LIVE[n]) for n in newest}
    rotated_sizes = {n: os.path.getsize(path) for n, path in newest.items()}
    api_query()
    for dummy in range(20):
        if all(os.path.getsize(LAB_LIVE[n]) > sizes[n] for n in newest):
            break
        threading.Event().wait(0.5)
    for name, path in newest.items():
        assert os.path.getsize(LAB_LIVE[name]) > sizes[name], "%s: fresh file did not grow" % name
        assert os.path.getsize(path) == rotated_sizes[name], "%s: rotated file %s still written" % (name, path)
    assert json.loads(open(LAB_LIVE["audit"]).read().splitlines()[-1])["event_type"] == "query_execution"


def test_second_run_without_force_changes_nothing(tmp_path):
    first = run(LAB_VARS)
    assert first.returncode == 0, first.stdout[-5000:]
    before = {name: rotated(live) for name, live in LAB_LIVE.items()}
    second = run(LAB_VARS)
    assert second.returncode == 0, second.stdout[-5000:]
    assert recap(second.stdout)["changed"] == 0
    assert '"would_rotate": []' in second.stdout
    assert {name: rotated(live) for name, live in LAB_LIVE.items()} == before


def test_check_mode_lists_the_plan_and_changes_nothing(tmp_path):
    logs, conf, variables = own_dir(tmp_path, OLD, log_rotation_force=True)
    before = fingerprint(logs, conf)
    result = run(variables, check=True)
    assert result.returncode == 0, result.stdout[-5000:]
    assert fingerprint(logs, conf) == before
    assert not os.path.exists(os.path.join(conf, "sqlsynth"))
    # 7 rotated + 1 new, keep 3: the 5 oldest go; the 2 kept uncompressed ones are compressed.
    plan = re.search(r'"would_remove": \[(.*?)\]', result.stdout, re.S).group(1)
    removed = re.findall(r'"([^"]+)"', plan)
    assert [os.path.basename(p) for p in removed] == sorted(OLD, key=lambda n: n.replace(".gz", ""))[:5]
    assert os.path.join(logs, "a.log") in re.search(r'"would_rotate": \[(.*?)\]', result.stdout, re.S).group(1)
    compress = re.search(r'"would_compress": \[(.*?)\]', result.stdout, re.S).group(1)
    assert "a.log-20250104-000000" in compress and "a.log-20250105-000000" in compress


def test_retention_counts_only_the_entrys_own_rotated_files_and_keeps_the_newest(tmp_path):
    logs, _conf, variables = own_dir(tmp_path, OLD, log_rotation_force=True)
    content = open(os.path.join(logs, "a.log")).read()
    result = run(variables)
    assert result.returncode == 0, result.stdout[-5000:]
    names = sorted(os.listdir(logs))
    kept = [n for n in names if re.match(r"^a\.log%s(\.gz)?$" % DATE, n)]
    assert len(kept) == 3, names
    assert kept[:2] == ["a.log-20250104-000000.gz", "a.log-20250105-000000.gz"], names
    assert open(os.path.join(logs, kept[2])).read() == content  # the new one, uncompressed (delaycompress)
    assert os.path.getsize(os.path.join(logs, "a.log")) == 0
    for decoy in ("b.log-20200101-000000", "a.log.1", "a.log-old", "a.log-20200101"):
        assert decoy in names, "decoy %s was touched" % decoy


def test_refuses_when_the_log_partition_is_nearly_full_and_rotating_frees_nothing(tmp_path):
    logs, conf, variables = own_dir(tmp_path, (), log_rotation_force=True, log_rotation_min_free_percent=100)
    before = fingerprint(logs, conf)
    result = run(variables)
    assert result.returncode != 0
    assert "The log partition is nearly full" in result.stdout and "rotating would free nothing" in result.stdout
    assert fingerprint(logs, conf) == before
    assert not os.path.exists(os.path.join(conf, "sqlsynth"))


def test_proceeds_when_nearly_full_but_rotating_frees_space(tmp_path):
    logs, _conf, variables = own_dir(tmp_path, OLD, rotate=2, log_rotation_force=True,
                                     log_rotation_min_free_percent=100)
    result = run(variables)
    assert result.returncode == 0, result.stdout[-5000:]
    assert "Nearly full, but rotating frees about" in result.stdout
    assert len([n for n in os.listdir(logs) if re.match(r"^a\.log%s(\.gz)?$" % DATE, n)]) == 2


def test_production_guard_refuses_and_changes_nothing(tmp_path):
    logs, conf, variables = own_dir(tmp_path, OLD, log_rotation_force=True, sqlsynth_environment="production")
    before = fingerprint(logs, conf)
    result = run(variables)
    assert result.returncode != 0
    assert "takes destructive steps and this is the production inventory" in result.stdout
    assert fingerprint(logs, conf) == before


def test_policy_rejected_by_logrotate_is_not_installed_and_the_previous_one_stays(tmp_path):
    logs, conf, variables = own_dir(tmp_path, OLD)
    first = run(variables)
    assert first.returncode == 0, first.stdout[-5000:]
    installed = open(os.path.join(conf, "sqlsynth")).read()
    os.chmod(logs, 0o777)  # logrotate refuses a world-writable log directory
    try:
        before = fingerprint(logs, conf)
        result = run(dict(variables, log_rotation_policies=[{"name": "a", "paths": ["a.log"], "rotate": 7}]))
    finally:
        os.chmod(logs, 0o755)
    assert result.returncode != 0
    assert "insecure permissions" in result.stdout
    assert open(os.path.join(conf, "sqlsynth")).read() == installed
    assert fingerprint(logs, conf) == before


def test_two_concurrent_runs_do_not_overlap(tmp_path):
    logs, _conf, variables = own_dir(tmp_path, OLD, log_rotation_force=True, log_rotation_lock_timeout=1)
    results = [None, None]

    def worker(index):
        # Distinct run ids: preflight's default id has one-second resolution, and the lock lets its owner re-enter.
        results[index] = run(dict(variables, sqlsynth_run_id="log_rotation-concurrent-%d" % index))

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    codes = sorted(r.returncode for r in results)
    assert codes[0] == 0 and codes[1] != 0, [r.stdout[-3000:] for r in results]
    loser = next(r for r in results if r.returncode != 0)
    assert "is locked by run log_rotation-concurrent-" in loser.stdout
    # Only one rotation happened: 7 old + 1 new, 3 kept.
    assert len([n for n in os.listdir(logs) if re.match(r"^a\.log%s(\.gz)?$" % DATE, n)]) == 3
    assert recap(next(r for r in results if r.returncode == 0).stdout)["failed"] == 0
