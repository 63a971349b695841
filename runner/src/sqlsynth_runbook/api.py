"""Python API: find the collection, list and describe runbooks, run them through ansible-runner."""
from __future__ import annotations

import dataclasses
import datetime
import json
import os
import pathlib
import queue
import shutil
import signal
import sys
import threading
import time
import uuid
from typing import Callable, Iterator

import yaml

from . import events as ev
from .errors import CollectionNotFound, InvalidInventory, RunnerError, UnknownRunbook
from .scrub import Scrubber, secret_values
from .spec import RunbookSpec, load_spec, validate_extravars

ENV_ROOT = "SQLSYNTH_COLLECTION_ROOT"
COLLECTION_SUBPATH = os.path.join("ansible_collections", "sqlsynth", "runbooks")
DEFAULT_COLLECTIONS_PATHS = ("~/.ansible/collections", "/usr/share/ansible/collections")
RUN_MARKER = ".sqlsynth-runbook-run"
TIMELINE_CALLBACK = "sqlsynth.runbooks.timeline"
RUN_ENV = "SQLSYNTH_RUNBOOK_RUN_ID"  # set in every process of a run, to find its leftovers
STATUSES = ("successful", "failed", "canceled", "timeout")
POLL_SECONDS = 0.5  # longest a caller waiting for a run stays deaf to Ctrl-C


def default_artifacts_root() -> str:
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
    return os.path.join(cache, "sqlsynth-runbook", "runs")


def _collections_paths() -> list:
    env = os.environ.get("ANSIBLE_COLLECTIONS_PATH") or os.environ.get("ANSIBLE_COLLECTIONS_PATHS")
    paths = env.split(os.pathsep) if env else list(DEFAULT_COLLECTIONS_PATHS)
    return [os.path.expanduser(p) for p in paths if p]


def _is_root(path: str) -> bool:
    return os.path.isdir(os.path.join(path, "playbooks", "vars"))


def find_root() -> str:
    """The checkout to use: $SQLSYNTH_COLLECTION_ROOT, else the installed collection, else the cwd (or a parent)."""
    env = os.environ.get(ENV_ROOT)
    if env:
        if not _is_root(env):
            raise CollectionNotFound(f"{ENV_ROOT}={env} has no playbooks/vars directory")
        return os.path.abspath(env)
    for base in _collections_paths():
        candidate = os.path.join(base, COLLECTION_SUBPATH)
        if _is_root(candidate):
            return os.path.realpath(candidate)
    cwd = os.getcwd()
    for path in [cwd, *map(str, pathlib.Path(cwd).parents)]:
        if _is_root(path):
            return path
    raise CollectionNotFound(
        f"no sqlsynth.runbooks collection found: set {ENV_ROOT}, install the collection, or run from a checkout")


@dataclasses.dataclass
class RunbookInfo:
    name: str
    short_description: str


@dataclasses.dataclass
class RunResult:
    runbook: str
    run_id: str
    status: str  # successful | failed | canceled | timeout
    rc: int | None
    stats: dict  # host -> {ok, changed, failures, unreachable, skipped}
    verdict: dict | None
    failed_tasks: list  # [{host, task, msg}]
    artifacts_dir: str
    private_data_dir: str
    duration_seconds: float
    timeline_dir: str | None = None  # timeline.json, report.md, postmortem.md of this run
    artifact_data: dict = dataclasses.field(default_factory=dict)  # everything the run published with set_stats

    @property
    def healthy(self) -> bool:
        """True when the run succeeded and its verdict, if it published one, is healthy."""
        return self.status == "successful" and (self.verdict is None or self.verdict.get("verdict") == "healthy")

    @property
    def stdout(self) -> str:
        """The run's (scrubbed) ansible output."""
        try:
            with open(os.path.join(self.artifacts_dir, "stdout"), encoding="utf-8", errors="replace") as fh:
                return fh.read()
        except OSError:
            return ""

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _timeline_dir(pdd: str) -> str | None:
    """The run's timeline folder (named after the playbook's run id, so found rather than built)."""
    top = os.path.join(pdd, "timeline")
    found = sorted(os.path.join(top, d) for d in os.listdir(top)) if os.path.isdir(top) else []
    return found[0] if found else None


def _host_stats(stats_event: dict | None) -> dict:
    data = (stats_event or {}).get("event_data") or {}
    fields = {"ok": "ok", "changed": "changed", "failures": "failures", "unreachable": "dark", "skipped": "skipped"}
    hosts = set()
    for key in fields.values():
        hosts.update((data.get(key) or {}).keys())
    return {h: {name: int((data.get(key) or {}).get(h, 0)) for name, key in fields.items()} for h in sorted(hosts)}


def _kill_leftovers(run_id: str) -> int:
    """SIGKILL the processes of a canceled or timed-out run that ansible-runner's kill missed.

    ansible-runner kills ansible-playbook's process group, but ansible's workers call setsid(), so the
    modules they run (a `sleep` in a command task, a pg_dump) would keep going. They all carry RUN_ENV.
    """
    needle = f"{RUN_ENV}={run_id}".encode()
    killed = 0
    # A process forked while /proc is being read escapes one scan, so scan until one finds nothing.
    for _round in range(20):
        found = 0
        for entry in os.listdir("/proc") if os.path.isdir("/proc") else ():
            if not entry.isdigit() or int(entry) == os.getpid():
                continue
            try:
                with open(f"/proc/{entry}/environ", "rb") as fh:
                    if needle in fh.read().split(b"\0"):
                        os.kill(int(entry), signal.SIGKILL)
                        found += 1
            except OSError:
                pass
        killed += found
        if not found:
            break
        time.sleep(0.1)
    return killed


class RunHandle:
    """A run in progress. Iterate .events(), .cancel() it, .wait() for its RunResult."""

    def __init__(self, runbook: str, run_id: str, private_data_dir: str, on_event: Callable | None):
        self.runbook, self.run_id, self.private_data_dir = runbook, run_id, private_data_dir
        self._on_event = on_event
        self._queue: queue.Queue = queue.Queue()
        self._cancel = threading.Event()
        self._done = threading.Event()
        self._result: RunResult | None = None
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None

    def _emit(self, event) -> None:
        self._queue.put(event)
        if self._on_event:
            try:
                self._on_event(event)
            except Exception:  # a broken callback must not kill the run
                pass

    def events(self, timeout: float | None = None) -> Iterator:
        """Typed events as they happen, ending with RunFinished. timeout bounds the wait for each event."""
        while True:
            deadline = None if timeout is None else time.monotonic() + timeout
            while True:
                # Short waits: Ctrl-C must reach a caller blocked here even when the kernel hands SIGINT to
                # another thread of the process (the run's worker), which an unbounded lock wait never notices.
                left = POLL_SECONDS if deadline is None else min(POLL_SECONDS, deadline - time.monotonic())
                try:
                    event = self._queue.get(timeout=max(0.0, left))
                    break
                except queue.Empty:
                    if deadline is not None and time.monotonic() >= deadline:
                        raise TimeoutError(f"no event from run {self.run_id} within {timeout}s") from None
            if event is None:  # the worker died without a result
                return
            yield event
            if isinstance(event, ev.RunFinished):
                return

    def cancel(self) -> None:
        self._cancel.set()

    @property
    def done(self) -> bool:
        return self._done.is_set()

    def wait(self, timeout: float | None = None) -> RunResult:
        deadline = None if timeout is None else time.monotonic() + timeout
        # Short waits, as in events(): a Ctrl-C delivered to the worker thread still interrupts the caller.
        while not self._done.wait(POLL_SECONDS if deadline is None else max(0.0, min(POLL_SECONDS, deadline - time.monotonic()))):
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(f"run {self.run_id} still running after {timeout}s")
        if self._error is not None:
            raise RunnerError(f"run {self.run_id} could not run: {self._error}") from self._error
        return self._result


class Collection:
    """The sqlsynth.runbooks collection at root (see find_root when root is None)."""

    def __init__(self, root: str | None = None, artifacts_root: str | None = None, rotate_artifacts: int = 20):
        self.root = os.path.abspath(root) if root else find_root()
        if not _is_root(self.root):
            raise CollectionNotFound(f"{self.root} has no playbooks/vars directory")
        self.artifacts_root = os.path.abspath(os.path.expanduser(artifacts_root or default_artifacts_root()))
        self.rotate_artifacts = rotate_artifacts

    # -- discovery -------------------------------------------------------------------------
    def _paths(self, name: str) -> tuple:
        return (os.path.join(self.root, "playbooks", f"{name}.yml"),
                os.path.join(self.root, "playbooks", "vars", f"{name}.spec.yml"))

    def names(self) -> list:
        """Runbooks: playbooks/<name>.yml that have a playbooks/vars/<name>.spec.yml."""
        found = []
        for fname in sorted(os.listdir(os.path.join(self.root, "playbooks"))):
            name, ext = os.path.splitext(fname)
            if ext == ".yml" and all(os.path.isfile(p) for p in self._paths(name)):
                found.append(name)
        return found

    def list(self) -> list:
        return [RunbookInfo(name, self.describe(name).short_description) for name in self.names()]

    def describe(self, name: str) -> RunbookSpec:
        playbook, spec = self._paths(name)
        if os.sep in name or not os.path.isfile(playbook) or not os.path.isfile(spec):
            known = ", ".join(self.names()) or "none"
            raise UnknownRunbook(f"unknown runbook {name!r} (runbooks: {known})")
        return load_spec(spec, name)

    # -- running ---------------------------------------------------------------------------
    def _envvars(self, run_id: str) -> dict:
        build = os.path.join(self.root, ".build", "collections")
        if os.path.isdir(os.path.join(build, COLLECTION_SUBPATH)):
            own = [build]
        elif self.root.rstrip(os.sep).endswith(COLLECTION_SUBPATH):
            own = [os.path.dirname(os.path.dirname(os.path.dirname(self.root.rstrip(os.sep))))]
        else:
            own = []
        paths = list(dict.fromkeys(own + _collections_paths()))
        # ansible-playbook from the same environment as this package, even when it is not on PATH
        bindir = os.path.dirname(sys.executable)
        path = os.environ.get("PATH", os.defpath)
        if os.path.exists(os.path.join(bindir, "ansible-playbook")):
            path = bindir + os.pathsep + path
        # Every run records its timeline (plugins/callback/timeline.py) inside its own private dir,
        # where the scrubber cleans it with the rest of the artifacts.
        callbacks = [c for c in os.environ.get("ANSIBLE_CALLBACKS_ENABLED", "").split(",") if c.strip()]
        callbacks = list(dict.fromkeys(callbacks + [TIMELINE_CALLBACK]))
        return {"ANSIBLE_COLLECTIONS_PATH": os.pathsep.join(paths), "PATH": path, RUN_ENV: run_id,
                "ANSIBLE_CALLBACKS_ENABLED": ",".join(callbacks),
                "SQLSYNTH_TIMELINE_DIR": os.path.join(self.artifacts_root, run_id, "timeline")}

    def _rotate(self) -> None:
        if not self.rotate_artifacts or not os.path.isdir(self.artifacts_root):
            return
        runs = sorted(d for d in os.listdir(self.artifacts_root)
                      if os.path.isfile(os.path.join(self.artifacts_root, d, RUN_MARKER)))
        for old in runs[:max(0, len(runs) - (self.rotate_artifacts - 1))]:
            shutil.rmtree(os.path.join(self.artifacts_root, old), ignore_errors=True)

    def start(self, name: str, inventory: str, extravars: dict | None = None, check: bool = False,
              limit: str | None = None, verbosity: int = 0, on_event: Callable | None = None,
              timeout: int | None = None, secrets: list | None = None) -> RunHandle:
        """Validate and start a run in the background; returns a RunHandle."""
        spec = self.describe(name)
        extravars = validate_extravars(spec, extravars)
        inventory = os.path.abspath(os.path.expanduser(inventory))
        if not os.path.exists(inventory):
            raise InvalidInventory(f"inventory {inventory} does not exist")
        masked, _short = secret_values(extravars, secrets or ())
        scrubber = Scrubber(masked)

        stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
        run_id = f"{stamp}-{name}-{uuid.uuid4().hex[:6]}"
        os.makedirs(self.artifacts_root, mode=0o700, exist_ok=True)
        self._rotate()
        pdd = os.path.join(self.artifacts_root, run_id)
        os.mkdir(pdd, 0o700)
        os.mkdir(os.path.join(pdd, "env"), 0o700)
        open(os.path.join(pdd, RUN_MARKER), "w").close()
        if extravars:  # a file ansible-runner hands over as -e @env/extravars, never on the command line
            fd = os.open(os.path.join(pdd, "env", "extravars"), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                yaml.safe_dump(extravars, fh)

        handle = RunHandle(name, run_id, pdd, on_event)
        kwargs = dict(
            private_data_dir=pdd, ident=run_id, playbook=self._paths(name)[0], inventory=inventory,
            project_dir=self.root,  # cwd of ansible-playbook: the checkout's ansible.cfg applies
            envvars=self._envvars(run_id), cmdline="--check" if check else None, limit=limit,
            verbosity=verbosity or None, timeout=timeout, quiet=True, suppress_env_files=True,
            settings={"pexpect_timeout": 0.5},  # how often ansible-runner polls for cancel
            cancel_callback=handle._cancel.is_set)

        def worker():
            started = time.monotonic()
            stats_event = {}
            failed = []

            def on_raw(raw):
                if raw.get("event") == "playbook_on_stats":
                    stats_event.update(raw)
                event = ev.convert(raw, scrubber.text)
                if isinstance(event, ev.TaskResult) and event.status in ("failed", "unreachable") \
                        and not event.ignored:
                    failed.append({"host": event.host, "task": event.task, "msg": event.msg})
                if event is not None:
                    handle._emit(event)
                return True

            try:
                import ansible_runner
                runner = ansible_runner.run(event_handler=on_raw, **kwargs)
                artifact_data = json.loads(scrubber.text(json.dumps(
                    (stats_event.get("event_data") or {}).get("artifact_data") or {})))
                verdict = artifact_data.get("sqlsynth_verdict")
                status = runner.status if runner.status in STATUSES else "failed"
                if status in ("canceled", "timeout"):
                    _kill_leftovers(run_id)
                result = RunResult(
                    runbook=name, run_id=run_id, status=status, rc=runner.rc, stats=_host_stats(stats_event),
                    verdict=verdict, failed_tasks=failed, artifacts_dir=runner.config.artifact_dir,
                    private_data_dir=pdd, duration_seconds=round(time.monotonic() - started, 3),
                    timeline_dir=_timeline_dir(pdd), artifact_data=artifact_data)
            except BaseException as exc:  # report through wait(), never kill the caller's thread silently
                handle._error = exc
                result = None
            finally:
                scrubber.tree(pdd)
            handle._result = result
            if result is not None:
                handle._emit(ev.RunFinished(result))
            else:
                handle._queue.put(None)
            handle._done.set()

        handle._thread = threading.Thread(target=worker, name=f"sqlsynth-runbook-{run_id}", daemon=True)
        handle._thread.start()
        return handle

    def run(self, name: str, inventory: str, extravars: dict | None = None, check: bool = False,
            limit: str | None = None, verbosity: int = 0, on_event: Callable | None = None,
            timeout: int | None = None, secrets: list | None = None) -> RunResult:
        """Run a runbook to the end and return its RunResult."""
        return self.start(name, inventory, extravars=extravars, check=check, limit=limit, verbosity=verbosity,
                          on_event=on_event, timeout=timeout, secrets=secrets).wait()
