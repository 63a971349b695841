"""sqlsynth-runbook: list, describe and run the collection's runbooks.

Exit codes: 0 run succeeded and its verdict (if any) is healthy; 1 run failed or verdict degraded/unhealthy;
2 bad usage or input; 130 canceled (Ctrl-C).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import textwrap

import yaml

from . import events as ev
from .api import Collection
from .errors import RunbookError, RunnerError
from .scrub import MIN_LENGTH, secret_values

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_CANCELED = 0, 1, 2, 130


class UsageError(RunbookError):
    pass


def parse_extravars(items: list) -> dict:
    """-e k=v, -e @file.yml, -e '{yaml: mapping}'; later ones win."""
    result = {}
    for item in items or ():
        if item.startswith("@"):
            path = os.path.expanduser(item[1:])
            try:
                with open(path, encoding="utf-8") as fh:
                    data = yaml.safe_load(fh)
            except OSError as exc:
                raise UsageError(f"-e {item}: cannot read {path}: {exc.strerror}") from None
            except yaml.YAMLError as exc:
                raise UsageError(f"-e {item}: not valid YAML: {str(exc).splitlines()[0]}") from None
        elif item.lstrip().startswith("{"):
            try:
                data = yaml.safe_load(item)
            except yaml.YAMLError:
                raise UsageError(f"-e {item!r}: not a valid YAML/JSON mapping") from None
        elif "=" in item and item.split("=", 1)[0].strip():
            key, value = item.split("=", 1)
            data = {key.strip(): value}
        else:
            raise UsageError(f"-e {item!r}: expected KEY=VALUE, @FILE.yml or a mapping")
        if not isinstance(data, dict):
            raise UsageError(f"-e {item}: must hold a mapping of variable names to values")
        result.update(data)
    return result


def _table(rows: list, out) -> None:
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  " + "  ".join(str(cell).ljust(w) for cell, w in zip(row, widths)).rstrip(), file=out)


def print_result(result, out=sys.stdout) -> None:
    print(f"\n{result.runbook}: {result.status} (rc {result.rc}) in {result.duration_seconds:.1f}s", file=out)
    if result.stats:
        cols = ["ok", "changed", "failures", "unreachable", "skipped"]
        _table([["host", *cols]] + [[h, *(s[c] for c in cols)] for h, s in result.stats.items()], out)
    if result.failed_tasks:
        print("failed tasks:", file=out)
        for item in result.failed_tasks:
            print(f"  {item['host']}: {item['task']}: {item['msg']}", file=out)
    elif result.status == "failed":
        tail = [line for line in result.stdout.splitlines() if line.strip()][-5:]
        if tail:
            print("ansible output (last lines):", file=out)
            for line in tail:
                print(f"  {line}", file=out)
    verdict = result.verdict
    if verdict is not None:
        print(f"verdict: {str(verdict.get('verdict', '?')).upper()}", file=out)
        signals = [s for s in verdict.get("signals") or [] if isinstance(s, dict)]
        if signals:
            _table([["signal", "component", "ok", "detail"]] + [
                [s.get("name", ""), s.get("component", ""), "yes" if s.get("ok") else "NO", s.get("detail", "")]
                for s in signals], out)
        if verdict.get("broken"):
            print("broken: " + ", ".join(map(str, verdict["broken"])), file=out)
        for text in verdict.get("disagreements") or []:
            print(f"disagreement: {text}", file=out)
    print(f"artifacts: {result.artifacts_dir}", file=out)


def exit_code(result) -> int:
    if result.status == "canceled":
        return EXIT_CANCELED
    return EXIT_OK if result.healthy else EXIT_FAILED


def cmd_list(coll: Collection, args) -> int:
    items = coll.list()
    if args.json:
        print(json.dumps([vars(i) for i in items], indent=2))
    elif items:
        width = max(len(i.name) for i in items)
        for i in items:
            print(f"{i.name.ljust(width)}  {i.short_description}")
    else:
        print(f"no runbooks in {coll.root}")
    return EXIT_OK


def cmd_describe(coll: Collection, args) -> int:
    spec = coll.describe(args.name)
    if args.json:
        print(json.dumps(spec.to_dict(), indent=2, default=str))
        return EXIT_OK

    def say(text, indent="  ", hang=""):
        print(textwrap.fill(str(text), width=100, initial_indent=indent, subsequent_indent=indent + hang))

    print(f"{spec.name}: {spec.short_description}")
    for para in spec.description:
        say(para)
    for title, lines in (("Prerequisites", spec.prerequisites), ("Verification", spec.verification),
                         ("Rollback", spec.rollback)):
        if lines:
            print(f"\n{title}:")
            for line in lines:
                say(f"- {line}", hang="  ")
    if spec.options:
        print("\nOptions:")
        for opt in spec.options.values():
            flags = [opt.type] + (["required"] if opt.required else []) + (
                [f"default {opt.default!r}"] if opt.default is not None else []) + (
                [f"choices {opt.choices}"] if opt.choices else [])
            print(f"  {opt.name} ({', '.join(flags)})")
            for line in opt.description:
                say(line, indent="    ")
    if spec.troubleshooting:
        print("\nTroubleshooting:")
        for item in spec.troubleshooting:
            text = f"{item.get('symptom', '')}: {item.get('hint', '')}" if isinstance(item, dict) else item
            say(f"- {text}", hang="  ")
    return EXIT_OK


def cmd_run(coll: Collection, args) -> int:
    extravars = parse_extravars(args.extra_vars)
    secrets = [extravars[k] for k in args.secret_var if k in extravars]
    missing = [k for k in args.secret_var if k not in extravars]
    if missing:
        raise UsageError(f"--secret-var {missing[0]}: no such extra variable given")
    _masked, short = secret_values(extravars, secrets)
    if short:
        print(f"sqlsynth-runbook: warning: {len(short)} secret value(s) shorter than {MIN_LENGTH} characters "
              "will not be masked in the artifacts", file=sys.stderr)
    handle = coll.start(args.name, args.inventory, extravars=extravars, check=args.check, limit=args.limit,
                        verbosity=args.verbose, timeout=args.timeout, secrets=secrets)
    live = sys.stderr if args.json else sys.stdout
    result = None
    while result is None:
        try:
            for event in handle.events():  # a fresh iterator after Ctrl-C: the rest stay queued
                if isinstance(event, ev.TaskResult):
                    status = f"{event.status}(ignored)" if event.ignored else event.status
                    line = f"{status:<12} {event.host:<20} {event.task}"
                    if event.status in ("failed", "unreachable") and event.msg:
                        line += f": {event.msg.splitlines()[0][:200]}"
                    print(line, file=live, flush=True)
                elif isinstance(event, ev.PlayStarted):
                    print(f"PLAY {event.play}", file=live, flush=True)
                elif isinstance(event, ev.RunFinished):
                    result = event.result
            if result is None:  # the worker ended without a result: wait() raises its error
                result = handle.wait()
        except KeyboardInterrupt:
            if not handle.done:
                print("\ncanceling the run ...", file=sys.stderr, flush=True)
            handle.cancel()
    if args.json:
        print(json.dumps(result.to_dict(), indent=2, default=str))
    else:
        print_result(result)
    return exit_code(result)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sqlsynth-runbook", description="List, describe and run the sqlsynth.runbooks runbooks.",
        epilog="Exit codes: 0 healthy, 1 run failed or verdict degraded/unhealthy, 2 bad input, 130 canceled.")
    parser.add_argument("--root", help="collection checkout (default: $SQLSYNTH_COLLECTION_ROOT, the installed "
                                       "collection, or the current directory)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="{list,describe,run}")
    p = sub.add_parser("list", help="list the runbooks")
    p.add_argument("--json", action="store_true")
    p = sub.add_parser("describe", help="show a runbook's options and procedure")
    p.add_argument("name")
    p.add_argument("--json", action="store_true")
    p = sub.add_parser("run", help="run a runbook")
    p.add_argument("name")
    p.add_argument("-i", "--inventory", required=True)
    p.add_argument("-e", "--extra-vars", action="append", default=[], metavar="K=V|@FILE",
                   help="extra variable (repeatable), checked against the runbook's options")
    p.add_argument("--check", action="store_true", help="check mode: report what would change")
    p.add_argument("--limit", help="limit the run to these hosts")
    p.add_argument("-v", "--verbose", action="count", default=0)
    p.add_argument("--timeout", type=int, help="stop the run after this many seconds")
    p.add_argument("--secret-var", action="append", default=[], metavar="KEY",
                   help="mask this extra variable's value in the artifacts (keys that look secret always are)")
    p.add_argument("--artifacts-root", help="where run directories go (default ~/.cache/sqlsynth-runbook/runs)")
    p.add_argument("--keep", type=int, default=20, help="keep the last N runs' artifacts (0: keep all)")
    p.add_argument("--json", action="store_true", help="print the result as JSON (progress goes to stderr)")
    return parser


def main(argv: list | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        coll = Collection(args.root, artifacts_root=getattr(args, "artifacts_root", None),
                          rotate_artifacts=getattr(args, "keep", 20))
        return {"list": cmd_list, "describe": cmd_describe, "run": cmd_run}[args.command](coll, args)
    except RunnerError as exc:
        print(f"sqlsynth-runbook: error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except RunbookError as exc:
        print(f"sqlsynth-runbook: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("sqlsynth-runbook: interrupted", file=sys.stderr)
        return EXIT_CANCELED
    except Exception as exc:  # noqa: BLE001 - one line, never a traceback
        print(f"sqlsynth-runbook: unexpected error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
