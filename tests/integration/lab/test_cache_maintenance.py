"""cache_maintenance against the real lab Redis and app: purge, refill, check mode, guard, lock, Redis down."""
import hashlib
import json
import os
import re
import subprocess
import threading
import time

import pytest
import redis
import yaml

from labtools import LAB_ROOT, ROOT, assert_no_traceback, injected, recap, run_playbook

PLAYBOOK = "sqlsynth.runbooks.cache_maintenance"
PAGES = "*|page=*|page_size=*"
PREFIX = "sqlsynth-test-cache:"
with open(os.path.join(ROOT, "inventories", "lab", "group_vars", "all", "main.yml")) as _handle:
    LAB = yaml.safe_load(_handle)
LOCK_DIR = "/tmp/sqlsynth-runbooks-locks"  # runbook_lock's default lock_dir
SCRATCH_DB = 7  # a database the app does not use, to show a flush touches only the named one


def lab_redis(db=LAB["sqlsynth_redis_db"]):
    return redis.Redis(host=LAB["sqlsynth_redis_host"], port=LAB["sqlsynth_redis_port"], db=db,
                       password=LAB["sqlsynth_redis_password"])


def extra(**values):
    """Extra vars as one JSON -e (lists survive), prefixed with cache_maintenance_."""
    return ["-e", json.dumps({"cache_maintenance_" + k: v for k, v in values.items()})]


def seed(conn, pages=200, others=100):
    """App-shaped test keys: result pages (matching PAGES) and texts (not matching), with a TTL like SETEX."""
    pipe = conn.pipeline(transaction=False)
    for number in range(pages):
        pipe.set("%sSELECT %d|page=1|page_size=10" % (PREFIX, number), "rows %d" % number, ex=3600)
    for number in range(others):
        pipe.set("%squestion %d" % (PREFIX, number), "SELECT %d" % number, ex=3600)
    pipe.execute()


def fingerprint(conn, match=None):
    """Digest of every key (optionally matching a pattern) with its value: equal means nothing changed."""
    digest, count = hashlib.sha256(), 0
    for key in sorted(conn.scan_iter(match=match, count=1000)):
        digest.update(key + b"\0" + (conn.dump(key) or b"") + b"\0")
        count += 1
    return count, digest.hexdigest()


def others_fingerprint(conn):
    """Fingerprint of the keys outside PAGES."""
    pages = set(conn.scan_iter(match=PAGES, count=1000))
    keys = sorted(k for k in conn.scan_iter(count=1000) if k not in pages)
    return len(keys), hashlib.sha256(b"".join(k + b"\0" + conn.dump(k) for k in keys)).hexdigest()


def synthetic_query():
    """What the verify role's synthetic query does, so its cache keys exist before a fingerprint."""
    subprocess.run(["curl", "-sS", "--max-time", "10", "--cacert", os.path.join(LAB_ROOT, "ca", "ca.crt"),
                    "--resolve", "sqlsynth.lab:8443:127.0.0.1", "-H", "X-API-Key: " + LAB["sqlsynth_api_key"],
                    "-H", "Content-Type: application/json", "-d", '{"question": "how many users are there"}',
                    "https://sqlsynth.lab:8443/api/query"], capture_output=True, check=True)


@pytest.fixture
def conn():
    connection = lab_redis()
    yield connection
    for db in (LAB["sqlsynth_redis_db"], SCRATCH_DB):
        scratch = lab_redis(db)
        keys = list(scratch.scan_iter(match=PREFIX + "*", count=1000))
        if keys:
            scratch.unlink(*keys)


def test_purge_deletes_matching_keys_keeps_the_others_and_the_cache_refills(conn):
    synthetic_query()
    seed(conn)
    others_before = others_fingerprint(conn)
    result = run_playbook(PLAYBOOK, *extra(patterns=[PAGES]))
    out = result.stdout
    assert result.returncode == 0, out[-5000:]
    assert_no_traceback(out)
    deleted = int(re.search(r"deleted (\d+) keys in \d+ round trips", out).group(1))
    assert deleted >= 200, "the 200 test pages (and the app's own pages) should have been deleted"
    assert not list(conn.scan_iter(match=PREFIX + "*|page=*", count=1000)), "purged test pages came back"
    assert others_fingerprint(conn) == others_before, "keys outside the pattern changed (data lost)"
    # The verify role's synthetic query wrote its result page again, and the runbook saw it.
    assert list(conn.scan_iter(match=PAGES, count=1000)), "the app did not write its cache again"
    assert "cache refilling" in out and "verdict: healthy" in out
    assert recap(out)["failed"] == 0

    # Nothing matches any more: a second run finds nothing to do and changes nothing.
    again = run_playbook(PLAYBOOK, *extra(patterns=[PREFIX + "*|page=*"]))
    assert again.returncode == 0, again.stdout[-5000:]
    assert "deleted 0 keys" in again.stdout
    assert recap(again.stdout)["changed"] == 0


def test_check_mode_previews_counts_and_example_keys_and_changes_nothing(conn):
    synthetic_query()
    seed(conn, pages=150, others=20)
    before = fingerprint(conn)
    result = run_playbook(PLAYBOOK, *extra(patterns=[PREFIX + "*|page=*"]), check=True)
    out = result.stdout
    assert result.returncode == 0, out[-5000:]
    assert fingerprint(conn) == before, "check mode changed the keyspace"
    assert "would delete about 150 keys" in out and "exactly 150" in out and PREFIX + "SELECT" in out


def test_production_guard_refuses_and_nothing_changes(conn):
    seed(conn, pages=20, others=5)
    before = fingerprint(conn)
    result = run_playbook(PLAYBOOK, *extra(patterns=[PAGES]), extra={"sqlsynth_environment": "production"})
    assert result.returncode != 0
    assert_no_traceback(result.stdout)
    assert "this is the production inventory" in result.stdout and "sqlsynth_confirm=true" in result.stdout
    assert fingerprint(conn) == before


def test_flush_empties_only_the_named_database_and_the_app_refills_it(conn):
    scratch = lab_redis(SCRATCH_DB)
    seed(scratch, pages=10, others=10)
    scratch_before = fingerprint(scratch)
    seed(conn, pages=10, others=10)
    result = run_playbook(PLAYBOOK, *extra(flush_db=LAB["sqlsynth_redis_db"]))
    out = result.stdout
    assert result.returncode == 0, out[-5000:]
    assert "ran FLUSHDB ASYNC on db %d" % LAB["sqlsynth_redis_db"] in out and "cache refilling" in out
    assert not list(conn.scan_iter(match=PREFIX + "*", count=1000))
    assert conn.dbsize() > 0, "the synthetic query did not refill the flushed cache"
    assert fingerprint(scratch) == scratch_before, "a database that was not named was touched"


def test_two_concurrent_runs_do_not_overlap():
    """Two report-only runs at once: the second waits for the lock; with a short wait it fails clearly."""
    results = [None, None]

    def run(slot):
        # Distinct run ids, as two operators' runs have (preflight's default id only has second resolution).
        results[slot] = (time.monotonic(), run_playbook(PLAYBOOK, *extra(lock_timeout=3),
                                                        extra={"sqlsynth_run_id": "cache-test-%d" % slot}),
                         time.monotonic())

    threads = [threading.Thread(target=run, args=(slot,)) for slot in (0, 1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    outcomes = sorted((r[1].returncode for r in results))
    assert outcomes[0] == 0 and outcomes[1] != 0, [r[1].stdout[-3000:] for r in results]
    loser = next(r[1].stdout for r in results if r[1].returncode != 0)
    assert "is locked by run" in loser and "redis:" in loser
    assert_no_traceback(loser)


def test_redis_down_fails_clearly_and_releases_the_lock():
    with injected("redis_down"):
        result = run_playbook(PLAYBOOK, *extra(patterns=[PAGES]))
    out = result.stdout
    assert result.returncode != 0
    assert_no_traceback(out)
    assert "Redis cannot be read: connection refused" in out and "Cache maintenance failed" in out
    # The lock was released in always:.
    assert not [name for name in os.listdir(LOCK_DIR) if name.startswith("redis")], os.listdir(LOCK_DIR)
