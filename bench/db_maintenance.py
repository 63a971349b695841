#!/usr/bin/env python3
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Benchmark db_maintenance against `vacuumdb --analyze --jobs 2` on identical databases, same run.

Starts its own throwaway PostgreSQL 15 cluster (initdb as the postgres user via runuser, on --port, autovacuum off
so the dead tuples stay put until measured), builds two identical databases of --tables tables of --rows rows each,
deletes --dead-share of the rows in 5% of the tables, then:
  (a) times `vacuumdb --analyze --jobs 2` on database A (the manual way: every table);
  (b) runs the sqlsynth.runbooks.db_maintenance playbook on database B and reads the module's own elapsed time and
      the act task's duration from the json callback; the whole ansible-playbook command is timed too (it includes
      preflight and the health verification of the lab, so the lab should be up);
  (c) re-bloats 5 tables of B, holds one under ACCESS EXCLUSIVE in another session and runs the module directly
      with lock_timeout 1 s: the locked table must be skipped within the timeout while the others are vacuumed.
Writes its section of docs/benchmarks.md between <!-- bench:db_maintenance --> markers. Needs root (runuser).
"""
import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time

import psycopg

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VENV_BIN = os.path.join(ROOT, ".venv", "bin")
PGBIN = "/usr/lib/postgresql/15/bin"
DOC = os.path.join(ROOT, "docs", "benchmarks.md")
BEGIN, END = "<!-- bench:db_maintenance -->", "<!-- /bench:db_maintenance -->"


def pg(*argv, **kw):
    return subprocess.run(["runuser", "-u", "postgres", "--"] + list(argv), check=True, capture_output=True,
                          text=True, **kw)


class Cluster:
    """A throwaway cluster in a temporary directory; stopped and removed on exit."""

    def __init__(self, port):
        self.port = port
        self.dir = tempfile.mkdtemp(prefix="sqlsynth-bench-pg-")
        shutil.chown(self.dir, "postgres")
        self.data = os.path.join(self.dir, "data")

    def __enter__(self):
        pg(os.path.join(PGBIN, "initdb"), "-D", self.data, "-A", "trust", "-U", "postgres", cwd=self.dir)
        opts = ("-p %d -k %s -c listen_addresses=127.0.0.1 -c autovacuum=off -c fsync=off "
                "-c synchronous_commit=off -c max_wal_size=4GB -c shared_buffers=256MB" % (self.port, self.dir))
        pg(os.path.join(PGBIN, "pg_ctl"), "-D", self.data, "-o", opts, "-l", os.path.join(self.dir, "log"),
           "-w", "start", cwd=self.dir)
        return self

    def __exit__(self, *exc):
        subprocess.run(["runuser", "-u", "postgres", "--", os.path.join(PGBIN, "pg_ctl"), "-D", self.data,
                        "-m", "fast", "-w", "stop"], capture_output=True, cwd=self.dir, check=False)
        shutil.rmtree(self.dir, ignore_errors=True)

    def connect(self, db="postgres"):
        return psycopg.connect(host="127.0.0.1", port=self.port, user="postgres", dbname=db, autocommit=True)


BUILD = """
DO $$ BEGIN
  FOR i IN 1..%(tables)d LOOP
    EXECUTE format('CREATE TABLE t%%s (id int PRIMARY KEY, v text NOT NULL, n int NOT NULL)', i);
    EXECUTE format('INSERT INTO t%%s SELECT g, md5(g::text), g %%%% 97 FROM generate_series(1, %(rows)d) g', i);
  END LOOP;
END $$"""


def build(cluster, db, args, bloated):
    with cluster.connect() as conn:
        conn.execute("CREATE DATABASE %s" % db)  # fixed bench names, not input
    with cluster.connect(db) as conn:
        conn.execute(BUILD % dict(tables=args.tables, rows=args.rows))
        for i in bloated:
            conn.execute("DELETE FROM t%d WHERE id %% 100 < %d" % (i, int(args.dead_share * 100)))


def dead_tuples(cluster, db, tables):
    """Sum of n_dead_tup over the given tables, waiting for the statistics to include the last writes."""
    with cluster.connect(db) as conn:
        conn.execute("SELECT pg_stat_force_next_flush()")
        rows = conn.execute("SELECT relname, n_dead_tup, n_live_tup FROM pg_stat_user_tables").fetchall()
    stats = {r[0]: (r[1], r[2]) for r in rows}
    return sum(stats.get("t%d" % i, (0, 0))[0] for i in tables), stats


def wait_stats(cluster, db, tables, expected):
    for _ in range(60):
        total, stats = dead_tuples(cluster, db, tables)
        if total >= expected:
            return total, stats
        time.sleep(1)
    sys.exit("statistics never showed the deleted rows in %s (%d < %d)" % (db, total, expected))


def ansible_env():
    env = dict(os.environ, ANSIBLE_CONFIG=os.path.join(ROOT, "ansible.cfg"),
               ANSIBLE_COLLECTIONS_PATH=os.path.join(ROOT, ".build", "collections"),
               ANSIBLE_STDOUT_CALLBACK="ansible.posix.json", ANSIBLE_NOCOLOR="1")
    env["PATH"] = VENV_BIN + os.pathsep + env.get("PATH", "")
    return env


def run_playbook(cluster, db, workers, backup_dir, nothing_due=False):
    cmd = [os.path.join(VENV_BIN, "ansible-playbook"), "sqlsynth.runbooks.db_maintenance", "-i", "inventories/lab",
           "-e", "sqlsynth_db_port=%d" % cluster.port, "-e", "sqlsynth_db_name=%s" % db,
           "-e", "sqlsynth_db_user=postgres", "-e", "sqlsynth_db_password=", "-e", "db_maintenance_workers=%d" % workers,
           "-e", "db_maintenance_backup_dir=%s" % backup_dir, "-e", "sqlsynth_run_id=bench-%d" % os.getpid()]
    start = time.monotonic()
    proc = subprocess.run(cmd, env=ansible_env(), capture_output=True, text=True, cwd=ROOT, check=False)
    wall = time.monotonic() - start
    doc = json.loads(proc.stdout[proc.stdout.index("{"):])
    act = [t for t in doc["plays"][0]["tasks"] if t["task"]["name"].endswith("Run postgres_maintenance (act)")]
    if nothing_due:
        if proc.returncode:
            sys.exit("the run with nothing due failed (rc %d):\n%s" % (proc.returncode, proc.stdout[-4000:]))
        return dict(wall=wall, rc=proc.returncode)
    if not act or act[0]["hosts"]["localhost"].get("failed"):
        sys.exit("the maintenance step did not run or failed (rc %d):\n%s" % (proc.returncode, proc.stdout[-4000:]))
    task = act[0]
    seconds = _iso(task["task"]["duration"]["end"]) - _iso(task["task"]["duration"]["start"])
    failed = [t["task"]["name"] for t in doc["plays"][0]["tasks"] if t["hosts"].get("localhost", {}).get("failed")]
    return dict(wall=wall, rc=proc.returncode, task_seconds=seconds, result=task["hosts"]["localhost"], failed=failed)


def _iso(stamp):
    import datetime
    return datetime.datetime.fromisoformat(stamp.rstrip("Z")).timestamp()


def run_module(cluster, db, extra):
    args = dict(login_port=cluster.port, login_db=db, login_user="postgres", backup="never", **extra)
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as handle:
        json.dump({"ANSIBLE_MODULE_ARGS": args}, handle)
    env = dict(os.environ, PYTHONPATH=os.path.join(ROOT, ".build", "collections"))
    proc = subprocess.run([os.path.join(VENV_BIN, "python"), "-m",
                           "ansible_collections.sqlsynth.runbooks.plugins.modules.postgres_maintenance", handle.name],
                          capture_output=True, text=True, env=env, check=False)
    os.unlink(handle.name)
    return json.loads(proc.stdout)


def lock_skip(cluster, db):
    """(c): re-bloat 5 tables, hold one under ACCESS EXCLUSIVE, run the module with lock_timeout 1 s."""
    names = [2, 4, 6, 8, 10]
    with cluster.connect(db) as conn:
        for i in names:
            conn.execute("DELETE FROM t%d WHERE id %% 3 = 0" % i)
    wait_stats(cluster, db, names, 1)
    holder = cluster.connect(db)
    holder.autocommit = False
    holder.execute("LOCK TABLE t2 IN ACCESS EXCLUSIVE MODE")
    try:
        start = time.monotonic()
        result = run_module(cluster, db, dict(lock_timeout=1, workers=2))
        wall = time.monotonic() - start
    finally:
        holder.rollback()
        holder.close()
    done = sorted(t["table"] for t in result["tables"] if t["status"] == "done")
    return dict(wall=wall, elapsed=result["elapsed_seconds"], skipped=result["skipped_tables"], done=done)


def measure(args):
    bloated = list(range(1, args.tables + 1, 20))  # every 20th table: 5%
    with Cluster(args.port) as cluster:
        t0 = time.monotonic()
        for db in ("bench_a", "bench_b"):
            build(cluster, db, args, bloated)
        expected = len(bloated) * args.rows * int(args.dead_share * 100) // 100
        for db in ("bench_a", "bench_b"):
            wait_stats(cluster, db, bloated, expected)
        setup = time.monotonic() - t0
        size = cluster.connect("bench_a").execute("SELECT pg_database_size('bench_a')").fetchone()[0]
        start = time.monotonic()
        subprocess.run([os.path.join(PGBIN, "vacuumdb"), "--analyze", "--jobs", "2", "-h", "127.0.0.1",
                        "-p", str(args.port), "-U", "postgres", "-d", "bench_a", "--quiet"], check=True)
        vacuumdb = time.monotonic() - start
        after_a, _ = dead_tuples(cluster, "bench_a", bloated)
        before_b, _ = dead_tuples(cluster, "bench_b", bloated)
        backup_dir = tempfile.mkdtemp(prefix="sqlsynth-bench-backup-")
        try:
            play = run_playbook(cluster, "bench_b", args.workers, backup_dir)
            # The same command once more, now that nothing is due: what any run pays whatever the database.
            fixed = run_playbook(cluster, "bench_b", args.workers, backup_dir, nothing_due=True)
        finally:
            shutil.rmtree(backup_dir, ignore_errors=True)
        time.sleep(0.5)
        after_b, stats = dead_tuples(cluster, "bench_b", bloated)
        res = play["result"]
        selected = sorted(t["table"] for t in res["tables"] if t["status"] == "done")
        locked = lock_skip(cluster, "bench_b")
    return dict(args=vars(args), bloated=len(bloated), setup=setup, size=size, vacuumdb=vacuumdb, after_a=after_a,
                before_b=before_b, after_b=after_b, play=play, fixed=fixed, selected=selected, expected=expected,
                statements=len(res["statements"]), module_elapsed=res["elapsed_seconds"], locked=locked,
                machine=machine())


def machine():
    with open("/proc/cpuinfo") as handle:
        cpu = next((line.split(":", 1)[1].strip() for line in handle if line.startswith("model name")), "?")
    return dict(nproc=os.cpu_count(), cpu=cpu, load=os.getloadavg(), python=platform.python_version(),
                kernel=platform.release())


def section(r):
    a, p, lk = r["args"], r["play"], r["locked"]
    ratio = r["module_elapsed"] / r["vacuumdb"]
    task_ratio = p["task_seconds"] / r["vacuumdb"]
    wall_ratio = p["wall"] / r["vacuumdb"]
    fixed = r["fixed"]["wall"]
    variable_ratio = max(0.0, p["wall"] - fixed) / r["vacuumdb"]
    drop = 1 - float(r["after_b"]) / r["before_b"] if r["before_b"] else 0.0
    expected_set = sorted("t%d" % i for i in range(1, a["tables"] + 1, 20))
    met = lambda ok: "met" if ok else "NOT met"  # noqa: E731
    skipped = ", ".join("%s (%s)" % (s["table"], s["reason"]) for s in lk["skipped"]) or "none"
    return "\n".join([
        BEGIN,
        "A throwaway PostgreSQL 15 cluster (initdb on 127.0.0.1:%d, autovacuum off so dead tuples stay until measured, "
        "fsync off for both sides) holds two identical databases of %d tables x %d rows (int primary key, md5 text, "
        "int; %s each); in %d tables (5%%) %d%% of the rows are deleted. (a) `vacuumdb --analyze --jobs 2` on database "
        "A; (b) the `sqlsynth.runbooks.db_maintenance` playbook (%d workers, default thresholds) on database B."
        % (a["port"], a["tables"], a["rows"], _human(r["size"]), r["bloated"], int(a["dead_share"] * 100),
           a["workers"]),
        "",
        "| measure | value |",
        "|---|---|",
        "| (a) vacuumdb --analyze --jobs 2 wall time | %.2f s |" % r["vacuumdb"],
        "| (b) module's own `elapsed_seconds` | %.2f s (%d statements) |" % (r["module_elapsed"], r["statements"]),
        "| (b) module task time (json callback) | %.2f s |" % p["task_seconds"],
        "| (b) whole ansible-playbook command (preflight, 3 steps, lab health verification) | %.2f s (rc %d%s) |"
        % (p["wall"], p["rc"], ", failed: " + ", ".join(p["failed"]) if p["failed"] else ""),
        "| (d) the same command again, nothing due: the fixed cost of any run (start-up, preflight, lock, inspect, "
        "confirm, health verification) | %.2f s |" % fixed,
        "| **module time / vacuumdb** (target <= 0.25) | **%.3f** (%s); task %.3f; whole command %.3f (%s); whole "
        "command less the fixed cost (d) %.3f |" % (ratio, met(ratio <= 0.25), task_ratio, wall_ratio,
                                                   met(wall_ratio <= 0.25), variable_ratio),
        "| tables selected and vacuumed | %d; exactly the bloated ones: %s |"
        % (len(r["selected"]), "yes" if r["selected"] == expected_set else "no"),
        "| **dead tuples on the selected tables** (target down >= 90%%) | %d -> %d, **down %.1f%%** (%s); vacuumdb left "
        "%d on A |" % (r["before_b"], r["after_b"], drop * 100, met(drop >= 0.9), r["after_a"]),
        "| (c) one of 5 bloated tables held under ACCESS EXCLUSIVE, lock_timeout 1 s | skipped: %s; vacuumed: %s; "
        "module %.2f s |" % (skipped, ", ".join(lk["done"]), lk["elapsed"]),
        "",
        "Machine: %d cores, %s; load average %s at the end; Python %s, kernel %s. Setup (build + statistics) took "
        "%.0f s and is not part of any figure." % (r["machine"]["nproc"], r["machine"]["cpu"],
                                                   " ".join("%.2f" % x for x in r["machine"]["load"]),
                                                   r["machine"]["python"], r["machine"]["kernel"], r["setup"]),
        "",
        "Why: vacuumdb visits every table (and analyzes it); the runbook reads `pg_stat_user_tables` once, picks the "
        "tables over the thresholds and vacuums only those, in parallel sessions. The whole command also pays "
        "ansible-playbook start-up, preflight and the multi-signal health verification, a fixed %.1f s measured in (d) "
        "whatever the database holds: on a database this small that fixed cost alone is %.1fx vacuumdb's whole run, "
        "so the whole-command ratio falls only as the database grows." % (fixed, fixed / r["vacuumdb"]),
        "",
        "Reproduce (root; needs no lab for (a), (c) and the module time; the playbook's last step verifies the lab):",
        "",
        "```sh",
        ".venv/bin/python bench/db_maintenance.py [--tables 1000] [--rows 5000] [--dead-share 0.3] [--port 55472]",
        "```",
        END,
    ])


def _human(size):
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024:
            return "%.0f %s" % (size, unit)
        size /= 1024.0
    return "%.1f TiB" % size


def write_section(text):
    doc = open(DOC).read() if os.path.exists(DOC) else "# Benchmarks\n"
    pattern = re.compile(re.escape(BEGIN) + ".*?" + re.escape(END), re.S)
    # The heading stays outside the markers, so other sections' writers (which cut at the next "## ") keep them.
    if pattern.search(doc):
        doc = pattern.sub(lambda _: text, doc)
    else:
        doc = doc.rstrip("\n") + "\n\n## Database maintenance\n\n" + text + "\n"
    with open(DOC, "w") as handle:
        handle.write(doc)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tables", type=int, default=1000)
    parser.add_argument("--rows", type=int, default=5000)
    parser.add_argument("--dead-share", type=float, default=0.3, help="share of rows deleted in the bloated tables")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--port", type=int, default=55472)
    parser.add_argument("--no-write", action="store_true", help="print the section instead of writing the doc")
    args = parser.parse_args()
    text = section(measure(args))
    print(text)
    if not args.no_write:
        write_section(text)
        print("wrote the db_maintenance section of %s" % os.path.relpath(DOC, ROOT))


if __name__ == "__main__":
    main()
