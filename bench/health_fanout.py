#!/usr/bin/env python3
"""Health fan-out: probe 200 HTTP endpoints from one Ansible task, from a uri loop, and with curl.

Measures, in one run on this machine:
  (a) one task of sqlsynth.runbooks.http_probe_info probing all 200 URLs;
  (b) ansible.builtin.uri looping over the same 200 URLs in one playbook;
  (c) curl --parallel --parallel-max 32 over the same URLs (the floor: a C client, no Ansible).
Reports (b)/(a) whole-task time (target: >= 10) and the module's own elapsed_ms against
curl's wall time (target: <= 2x), then writes the "Health fan-out" section of
docs/benchmarks.md. Only loopback traffic. Usage: .venv/bin/python bench/health_fanout.py

The endpoints are one threaded server with 200 paths, not 200 ports: it answers HTTP/1.0
and closes every connection, so no client can reuse one and each probe costs its own TCP
connect, request and close, as with 200 separate services. 200 listening sockets would
add setup to the benchmark without changing what is measured.
"""
import argparse
import datetime
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VENV_BIN = os.path.join(ROOT, ".venv", "bin")
DOC = os.path.join(ROOT, "docs", "benchmarks.md")
SECTION = "## Health fan-out"
BODY = json.dumps({"status": "healthy", "timestamp": 0,
                   "components": {"database": True, "cache": True, "openai_api": True}}).encode()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"  # one connection per request, closed by the server
    latency = 0.0

    def log_message(self, *args):
        pass

    def do_GET(self):
        if not re.match(r"^/svc/\d{3}/health$", self.path):
            self.send_error(404)
            return
        if self.latency:
            time.sleep(self.latency)
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(BODY)))
        self.end_headers()
        self.wfile.write(BODY)


class Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 1024  # the default backlog of 5 drops SYNs under 32 parallel connects


def ansible_env():
    env = dict(os.environ, ANSIBLE_CONFIG=os.path.join(ROOT, "ansible.cfg"),
               ANSIBLE_COLLECTIONS_PATH=os.path.join(ROOT, ".build", "collections"),
               ANSIBLE_STDOUT_CALLBACK="ansible.posix.json", ANSIBLE_NOCOLOR="1")
    env["PATH"] = VENV_BIN + os.pathsep + env.get("PATH", "")
    return env


def play(tasks):
    return [{"name": "bench", "hosts": "localhost", "connection": "local", "gather_facts": False,
             "vars": {"ansible_python_interpreter": sys.executable}, "tasks": tasks}]


def run_playbook(path, tmp, urls):
    """Wall seconds, and the first task's duration (from the json callback) and result."""
    vars_file = os.path.join(tmp, "urls.json")
    with open(vars_file, "w") as handle:
        json.dump({"bench_urls": urls}, handle)
    cmd = [os.path.join(VENV_BIN, "ansible-playbook"), "-i", "localhost,", path, "-e", "@" + vars_file]
    start = time.monotonic()
    proc = subprocess.run(cmd, env=ansible_env(), capture_output=True, text=True, cwd=tmp)
    wall = time.monotonic() - start
    if proc.returncode != 0:
        sys.exit("ansible-playbook %s failed (%s):\n%s\n%s" % (path, proc.returncode, proc.stdout[-3000:],
                                                                 proc.stderr[-3000:]))
    doc = json.loads(proc.stdout[proc.stdout.index("{"):])
    tasks = doc["plays"][0]["tasks"]
    if not tasks:
        return wall, None, None
    duration = tasks[0]["task"]["duration"]
    seconds = _iso_seconds(duration["end"]) - _iso_seconds(duration["start"])
    return wall, seconds, tasks[0]["hosts"]["localhost"]


def _iso_seconds(stamp):
    return datetime.datetime.fromisoformat(stamp.rstrip("Z")).timestamp()


def write_playbooks(tmp):
    paths = {}
    books = {
        "empty": play([]),
        "module": play([{"name": "Probe all endpoints in one task", "sqlsynth.runbooks.http_probe_info": {
            "targets": "{{ bench_urls | map('community.general.dict_kv', 'url') | list }}",
            "concurrency": 32, "timeout": 10}}]),
        "uri": play([{"name": "Probe each endpoint with uri", "ansible.builtin.uri": {
            "url": "{{ item }}", "status_code": 200, "timeout": 10}, "loop": "{{ bench_urls }}"}]),
    }
    for name, book in books.items():
        paths[name] = os.path.join(tmp, name + ".yml")
        with open(paths[name], "w") as handle:
            json.dump(book, handle)  # JSON is YAML
    return paths


def run_curl(urls):
    cmd = ["curl", "--parallel", "--parallel-max", "32", "-s", "-w", "%{http_code}\\n"]
    for url in urls:
        cmd += [url, "-o", "/dev/null"]
    start = time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.monotonic() - start
    codes = proc.stdout.split()
    if proc.returncode != 0 or codes.count("200") != len(urls):
        sys.exit("curl failed (%s): %d of %d answered 200\n%s" % (proc.returncode, codes.count("200"), len(urls),
                                                                   proc.stderr[-2000:]))
    return wall


def machine():
    with open("/proc/cpuinfo") as handle:
        model = next((line.split(":", 1)[1].strip() for line in handle if line.startswith("model name")), "?")
    curl = subprocess.run(["curl", "--version"], capture_output=True, text=True).stdout.split()[1]
    core = subprocess.run([os.path.join(VENV_BIN, "ansible"), "--version"], capture_output=True,
                          text=True).stdout.splitlines()[0]
    return dict(nproc=os.cpu_count(), cpu=model, load=os.getloadavg(), python=platform.python_version(),
                ansible=core.replace("[", "").replace("]", ""), curl=curl, kernel=platform.release())


def measure(args):
    server = Server(("127.0.0.1", 0), Handler)
    Handler.latency = args.latency_ms / 1000.0
    threading.Thread(target=server.serve_forever, daemon=True).start()
    urls = ["http://127.0.0.1:%d/svc/%03d/health" % (server.server_address[1], i) for i in range(args.endpoints)]
    info = machine()
    out = dict(endpoints=args.endpoints, latency_ms=args.latency_ms, repeat=args.repeat, machine=info)
    with tempfile.TemporaryDirectory(prefix="bench-fanout-") as tmp:
        books = write_playbooks(tmp)
        out["empty_wall"] = statistics.median(run_playbook(books["empty"], tmp, urls)[0] for _ in range(args.repeat))
        module_runs = []
        for _ in range(args.repeat):
            wall, task, result = run_playbook(books["module"], tmp, urls)
            if result["summary"]["ok"] != len(urls):
                sys.exit("http_probe_info: %s" % result["summary"])
            module_runs.append((wall, task, result["elapsed_ms"] / 1000.0))
        out["module_wall"], out["module_task"], out["module_elapsed"] = (
            statistics.median(r[i] for r in module_runs) for i in range(3))
        print("module: task %.2f s, module elapsed %.3f s" % (out["module_task"], out["module_elapsed"]), flush=True)
        uri_runs = [run_playbook(books["uri"], tmp, urls)[:2] for _ in range(args.uri_repeat)]
        out["uri_wall"], out["uri_task"] = (statistics.median(r[i] for r in uri_runs) for i in range(2))
        print("uri loop: task %.2f s" % out["uri_task"], flush=True)
        out["curl_wall"] = statistics.median(run_curl(urls) for _ in range(max(args.repeat, 5)))
    server.shutdown()
    server.server_close()
    out["load_after"] = os.getloadavg()
    out["ratio_task"] = out["uri_task"] / out["module_task"]
    out["ratio_wall"] = out["uri_wall"] / out["module_wall"]
    out["ratio_curl"] = out["module_elapsed"] / out["curl_wall"]
    return out


def section(r):
    m = r["machine"]
    met = lambda ok: "met" if ok else "MISSED"  # noqa: E731
    return "\n".join([
        SECTION,
        "",
        "Probing %d loopback HTTP endpoints (`/svc/NNN/health`, small JSON, %s ms handler latency) three ways in "
        "one run: (a) one `sqlsynth.runbooks.http_probe_info` task (32 threads), (b) `ansible.builtin.uri` "
        "looping over the same URLs in one playbook, (c) `curl --parallel --parallel-max 32`. The endpoints are "
        "one threaded Python server with %d paths that closes every connection (HTTP/1.0), so each probe pays "
        "its own TCP connect like a separate service would; one server keeps the setup out of the numbers."
        % (r["endpoints"], r["latency_ms"], r["endpoints"]),
        "",
        "| measure | value |",
        "|---|---|",
        "| (a) module task time (json callback task duration) | %.2f s |" % r["module_task"],
        "| (a) module's own `elapsed_ms` | %.0f ms |" % (r["module_elapsed"] * 1000),
        "| (b) uri loop task time | %.2f s |" % r["uri_task"],
        "| (c) curl wall time | %.0f ms |" % (r["curl_wall"] * 1000),
        "| playbook wall time: empty / (a) / (b) | %.2f s / %.2f s / %.2f s |" % (
            r["empty_wall"], r["module_wall"], r["uri_wall"]),
        "| **(b)/(a) whole-task time** (target >= 10x) | **%.1fx** (%s; whole playbook %.1fx) |" % (
            r["ratio_task"], met(r["ratio_task"] >= 10), r["ratio_wall"]),
        "| **module elapsed_ms / curl wall time** (target <= 2x) | **%.2fx** (%s) |" % (
            r["ratio_curl"], met(r["ratio_curl"] <= 2)),
        "",
        "Machine: %s cores (`nproc`), %s; load average %s before, %s after; Python %s, %s, curl %s, "
        "Linux %s. Medians of %d run(s) for (a) and of %d for (c); (b) ran %d time(s)." % (
            m["nproc"], m["cpu"], " ".join("%.2f" % v for v in m["load"]),
            " ".join("%.2f" % v for v in r["load_after"]), m["python"], m["ansible"], m["curl"], m["kernel"],
            r["repeat"], max(r["repeat"], 5), r["uri_repeat"]),
        "",
        "Why: the uri loop runs one module process per URL, one after the other (a loop is serial within a "
        "host); the module runs one process for all of them and overlaps the network waits in threads. "
        "curl's wall time includes its process start; the module's `elapsed_ms` covers only its probing, "
        "while the task time above includes Ansible starting the module.",
        "",
        "Reproduce (needs no lab; traffic stays on 127.0.0.1):",
        "",
        "```sh",
        "make bench        # or: .venv/bin/python bench/health_fanout.py [--endpoints 200] [--latency-ms 0]",
        "```",
        "",
    ])


def write_section(text):
    """Replace the Health fan-out section (up to the next '## ' heading) or append it."""
    if os.path.exists(DOC):
        with open(DOC) as handle:
            doc = handle.read()
    else:
        doc = ("# Benchmarks\n\nSpeed targets of the collection, measured as ratios against a baseline run on the "
               "same machine in the same run (never as timed assertions in the test suite). Each section is "
               "written by its script under `bench/`; `make bench` runs them.\n\n")
    pattern = re.compile(r"^%s\n.*?(?=^## |\Z)" % re.escape(SECTION), re.S | re.M)
    if pattern.search(doc):
        doc = pattern.sub(lambda _: text, doc, count=1)
    else:
        doc = doc.rstrip("\n") + "\n\n" + text
    os.makedirs(os.path.dirname(DOC), exist_ok=True)
    with open(DOC, "w") as handle:
        handle.write(doc)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--endpoints", type=int, default=200)
    parser.add_argument("--latency-ms", type=float, default=0.0, help="sleep in each handler (default 0)")
    parser.add_argument("--repeat", type=int, default=3, help="runs of (a) and the empty playbook (median)")
    parser.add_argument("--uri-repeat", type=int, default=1, help="runs of the slow uri loop (median)")
    parser.add_argument("--no-write", action="store_true", help="print the section instead of writing the doc")
    args = parser.parse_args()
    result = measure(args)
    result["uri_repeat"] = args.uri_repeat
    text = section(result)
    print(text)
    if not args.no_write:
        write_section(text)
        print("wrote the %r section of %s" % (SECTION, os.path.relpath(DOC, ROOT)))


if __name__ == "__main__":
    main()
