"""db_maintenance against the lab's PostgreSQL: bloated test tables in a schema of their own, dropped afterwards."""
import datetime
import json
import os
import re
import subprocess
import time

import psycopg
import pytest
import yaml

from labtools import ENV, ROOT, VENV_BIN, assert_no_traceback, recap, run_playbook

PLAYBOOK = "sqlsynth.runbooks.db_maintenance"
SCHEMA = "dbm_test"
TABLES = ["t%02d" % i for i in range(1, 21)]          # 20 small tables ...
BLOATED = ["t03", "t07", "t11", "t15", "t19"]       # ... 5 of them with half their rows deleted
ROWS, DELETED = 400, 200

with open(os.path.join(ROOT, "inventories", "lab", "group_vars", "all", "main.yml")) as _handle:
    LAB = yaml.safe_load(_handle)


def connect():
    return psycopg.connect(host=LAB["sqlsynth_db_host"], port=LAB["sqlsynth_db_port"], dbname=LAB["sqlsynth_db_name"],
                           user=LAB["sqlsynth_db_user"], password=LAB["sqlsynth_db_password"], autocommit=True)


def options(tmp_path, **extra):
    """The runbook's variables for the test schema (as one JSON -e, so lists stay lists)."""
    values = dict(db_maintenance_schemas=[SCHEMA], db_maintenance_dead_tuples_min=50,
                  db_maintenance_backup_dir=str(tmp_path / "backups"), db_maintenance_lock_timeout=60)
    values.update(extra)
    return ["-e", json.dumps(values)]


def unquoted(output):
    """The output as printed by the debug lines (JSON strings) with their inner quotes unescaped."""
    return output.replace('\\"', '"')


def stats():
    """{table: (rows counted, n_dead_tup)} for the test schema, after the statistics caught up."""
    with connect() as conn:
        conn.execute("SELECT pg_stat_clear_snapshot()")
        dead = dict(conn.execute("SELECT relname, n_dead_tup FROM pg_stat_user_tables WHERE schemaname = %s",
                                 (SCHEMA,)).fetchall())
        out = {}
        for name in TABLES:
            count = conn.execute(psycopg.sql.SQL("SELECT count(*) FROM {}").format(
                psycopg.sql.Identifier(SCHEMA, name))).fetchone()[0]
            out[name] = (count, dead.get(name, 0))
    return out


def fingerprint():
    """Everything a maintenance run could change: rows, dead tuples, vacuum/analyze counts, indexes."""
    with connect() as conn:
        conn.execute("SELECT pg_stat_clear_snapshot()")
        counters = conn.execute(
            "SELECT relname, vacuum_count, analyze_count, n_dead_tup FROM pg_stat_user_tables "
            "WHERE schemaname = %s ORDER BY 1", (SCHEMA,)).fetchall()
        indexes = conn.execute("SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = %s ORDER BY 1",
                               (SCHEMA,)).fetchall()
    return stats(), counters, indexes


def wait_dead(tables, at_least, seconds=20):
    for dummy in range(seconds * 2):
        current = stats()
        if all(current[t][1] >= at_least for t in tables):
            return current
        time.sleep(0.5)
    raise AssertionError("statistics never showed the deleted rows: %s" % stats())


@pytest.fixture()
def bloat():
    """20 small tables (autovacuum off on them, so only the runbook vacuums), 5 with half their rows deleted."""
    with connect() as conn:
        conn.execute(psycopg.sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(psycopg.sql.Identifier(SCHEMA)))
        conn.execute(psycopg.sql.SQL("CREATE SCHEMA {}").format(psycopg.sql.Identifier(SCHEMA)))
        for name in TABLES:
            ident = psycopg.sql.Identifier(SCHEMA, name)
            conn.execute(psycopg.sql.SQL("CREATE TABLE {} (id int PRIMARY KEY, v text) WITH (autovacuum_enabled = false)")
                         .format(ident))
            conn.execute(psycopg.sql.SQL("INSERT INTO {} SELECT g, md5(g::text) FROM generate_series(1, %s) g")
                         .format(ident), (ROWS,))
        for name in BLOATED:
            conn.execute(psycopg.sql.SQL("DELETE FROM {} WHERE mod(id, 2) = 0").format(psycopg.sql.Identifier(SCHEMA, name)))
    wait_dead(BLOATED, DELETED)
    yield
    with connect() as conn:
        conn.execute(psycopg.sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(psycopg.sql.Identifier(SCHEMA)))


def leftover_index():
    """An invalid index named like the copy an interrupted REINDEX CONCURRENTLY leaves behind."""
    with connect() as conn:
        conn.execute(psycopg.sql.SQL("INSERT INTO {} VALUES (100000, 'dup'), (100001, 'dup')").format(
            psycopg.sql.Identifier(SCHEMA, "t01")))
        with pytest.raises(psycopg.errors.UniqueViolation):
            conn.execute(psycopg.sql.SQL("CREATE UNIQUE INDEX CONCURRENTLY t01_v_idx_ccnew ON {} (v)").format(
                psycopg.sql.Identifier(SCHEMA, "t01")))
        assert conn.execute("SELECT NOT indisvalid FROM pg_index WHERE indexrelid = %s::regclass",
                            ("%s.t01_v_idx_ccnew" % SCHEMA,)).fetchone()[0]


def test_run_vacuums_only_bloated_tables_drops_leftover_after_backup_keeps_rows_then_second_run_changes_nothing(
        bloat, tmp_path):
    leftover_index()
    before = stats()
    result = run_playbook(PLAYBOOK, *options(tmp_path))
    out = unquoted(result.stdout)
    assert result.returncode == 0, out[-5000:]
    assert_no_traceback(out)
    for name in BLOATED:
        assert 'VACUUM (ANALYZE) "%s"."%s"' % (SCHEMA, name) in out
        assert "%s.%s: done, dead tuples %d -> 0" % (SCHEMA, name, DELETED) in out
    assert 'VACUUM (ANALYZE) "%s"."t02"' % SCHEMA not in out
    assert 'DROP INDEX CONCURRENTLY IF EXISTS "%s"."t01_v_idx_ccnew"' % SCHEMA in out
    after = stats()
    assert {t: c for t, (c, _d) in after.items()} == {t: c for t, (c, _d) in before.items()}, "rows changed"
    assert all(after[t][1] == 0 for t in BLOATED), after
    with connect() as conn:
        assert conn.execute("SELECT to_regclass(%s)", ("%s.t01_v_idx_ccnew" % SCHEMA,)).fetchone()[0] is None
    dumps = os.listdir(tmp_path / "backups")
    assert len(dumps) == 1 and dumps[0].startswith(LAB["sqlsynth_db_name"] + "-") and dumps[0].endswith(".dump")
    listing = subprocess.run(["/usr/lib/postgresql/15/bin/pg_restore", "--list", str(tmp_path / "backups" / dumps[0])],
                             capture_output=True, text=True, check=True).stdout
    assert "TABLE DATA %s t03" % SCHEMA in listing
    assert "nothing left due" in out

    again = run_playbook(PLAYBOOK, *options(tmp_path))
    assert again.returncode == 0, again.stdout[-4000:]
    assert recap(again.stdout)["changed"] == 0
    assert "0 of 20 tables have something due" in again.stdout


def test_check_mode_prints_the_exact_sql_and_changes_nothing(bloat, tmp_path):
    before = fingerprint()
    result = run_playbook(PLAYBOOK, *options(tmp_path), check=True)
    assert result.returncode == 0, result.stdout[-4000:]
    for name in BLOATED:
        assert 'VACUUM (ANALYZE) "%s"."%s";' % (SCHEMA, name) in unquoted(result.stdout)
    assert "5 of 20 tables have something due; 5 statement(s) planned" in result.stdout
    assert "check mode: nothing was changed" in result.stdout
    time.sleep(1)
    assert fingerprint() == before
    assert not (tmp_path / "backups").exists()


def test_table_under_access_exclusive_lock_is_skipped_while_the_rest_proceed(bloat, tmp_path):
    locked = BLOATED[0]
    holder = connect()
    holder.autocommit = False
    holder.execute(psycopg.sql.SQL("LOCK TABLE {} IN ACCESS EXCLUSIVE MODE").format(
        psycopg.sql.Identifier(SCHEMA, locked)))
    try:
        result = run_playbook(PLAYBOOK, *options(tmp_path, db_maintenance_pg_lock_timeout=1), timeout=240)
        # The run finished while the lock was still held: it gave up on the table instead of waiting.
        assert holder.execute("SELECT count(*) FROM pg_locks WHERE pid = pg_backend_pid() "
                              "AND mode = 'AccessExclusiveLock' AND granted").fetchone()[0] >= 1
    finally:
        holder.rollback()
        holder.close()
    out = unquoted(result.stdout)
    assert result.returncode == 0, out[-5000:]
    assert "skipped: %s.%s - lock not available within lock_timeout (1 s)" % (SCHEMA, locked) in out
    # Vacuuming the other tables is a change, and the task says so: the skipped table is reported in the module's
    # skipped_tables, not in a `skipped` key that Ansible would read as "this task was skipped".
    assert re.search(r"Run postgres_maintenance \(act\)\] \**\nchanged: \[localhost\]", out), out[-5000:]
    after = stats()
    assert after[locked][1] >= DELETED, "the locked table must be left alone"
    assert all(after[t][1] == 0 for t in BLOATED[1:]), after
    assert all(after[t][0] == ROWS - (DELETED if t in BLOATED else 0) for t in TABLES), "rows changed"


def test_idle_in_transaction_sessions_listed_and_terminated_only_when_asked(bloat, tmp_path):
    idle = connect()
    idle.autocommit = False
    idle.execute("SELECT 1")  # opens a transaction and leaves it idle
    pid = idle.info.backend_pid
    try:
        time.sleep(2)
        listed = run_playbook(PLAYBOOK, *options(tmp_path, db_maintenance_idle_in_transaction_seconds=1))
        assert listed.returncode == 0, listed.stdout[-4000:]
        assert "pid %d" % pid in listed.stdout
        assert idle.execute("SELECT 2").fetchone()[0] == 2, "listed only: the session must survive"
        idle.rollback()
        idle.execute("SELECT 1")
        time.sleep(2)
        ended = run_playbook(PLAYBOOK, *options(tmp_path, db_maintenance_idle_in_transaction_seconds=1,
                                                db_maintenance_terminate_idle=True))
        assert ended.returncode == 0, ended.stdout[-4000:]
        assert "terminated idle-in-transaction sessions: %d" % pid in ended.stdout
        with pytest.raises(psycopg.OperationalError):
            idle.execute("SELECT 3")
        assert len(os.listdir(tmp_path / "backups")) == 1, "terminating sessions is irreversible: backup first"
    finally:
        idle.close()


def test_production_guard_refuses_terminating_sessions_and_changes_nothing(bloat, tmp_path):
    before = fingerprint()
    result = run_playbook(PLAYBOOK, *options(tmp_path, sqlsynth_environment="production",
                                             db_maintenance_terminate_idle=True))
    assert result.returncode != 0
    assert_no_traceback(result.stdout)
    assert "db_maintenance takes destructive steps and this is the production inventory" in result.stdout
    assert "-e sqlsynth_confirm=true" in result.stdout
    time.sleep(1)
    assert fingerprint() == before


def _lock_window(stdout):
    """(lock taken, lock released) times of one run, from the json callback."""
    # raw_decode: the merged stderr may carry lines after the JSON document (the timeline paths).
    doc = json.JSONDecoder().raw_decode(stdout[stdout.index("{"):])[0]
    tasks = {t["task"]["name"]: t["task"]["duration"] for t in doc["plays"][0]["tasks"]}

    def stamp(text):
        return datetime.datetime.fromisoformat(text.rstrip("Z")).timestamp()

    return stamp(tasks["Take the maintenance lock for the database"]["end"]), \
        stamp(tasks["Release the maintenance lock"]["start"])


def test_two_concurrent_runs_do_not_overlap(bloat, tmp_path):
    env = dict(ENV, ANSIBLE_STDOUT_CALLBACK="ansible.posix.json")
    cmd = [os.path.join(VENV_BIN, "ansible-playbook"), PLAYBOOK, "-i", "inventories/lab"] + options(tmp_path)
    procs = [subprocess.Popen(cmd + ["-e", "sqlsynth_run_id=overlap-%d" % i], cwd=ROOT, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for i in range(2)]
    outs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [o[-3000:] for o in outs]
    (start1, end1), (start2, end2) = sorted(_lock_window(o) for o in outs)
    assert end1 <= start2, "the second run worked while the first held the lock"
    after = stats()
    assert all(after[t][1] == 0 for t in BLOATED)
