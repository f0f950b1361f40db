"""``podium task run`` and ``podium task show``, with ``puppet task``'s flags."""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import sys
from collections.abc import Callable, Mapping
from typing import Any

from podium.cli.client import (
    ApiClient,
    add_connection_args,
    clean_text,
    print_json,
    table,
)
from podium.cli.durations import DURATION_HELP, duration_arg, parse_duration
from podium.cli.job import add_display_args, pace_fields, warn_left_out
from podium.cli.target import add_target_args, read_at, scope_from_args
from podium.cli.watch import follow
from podium.errors import PodiumError, ValidationError
from podium.types import accepts_undef, check, parse_type

_PAIRS_HELP = (
    "KEY=VALUE pairs (in any order with the options) or --params JSON, not both. A value "
    "stays a string where the parameter's type accepts a string (port=5432 for "
    'Optional[String] is "5432"); otherwise it is read as JSON: a number, true/false, '
    'null, an array or an object (count=3 for Integer is 3, tags=\'["a","b"]\' an array).'
)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    task = sub.add_parser("task", help="run and list tasks", description="Run tasks on nodes.")
    tsub = task.add_subparsers(dest="task_command", metavar="SUBCOMMAND", required=True)
    run = tsub.add_parser(
        "run",
        help="run a task on nodes",
        description=(
            "Run TASK on the target nodes and watch it: a progress bar on a terminal, a "
            "line per node as it ends (a job of more than 10 nodes prints each distinct "
            "result once, and a summary by result), then a summary. Ctrl+C stops the job "
            f"(a second Ctrl+C stops watching). Parameters: {_PAIRS_HELP} "
            "Exit code: 0 all nodes succeeded, 1 error, 2 some nodes failed, 3 no node answered."
        ),
    )
    run.add_argument("task", metavar="TASK", help="task name, e.g. podium::echo or package")
    run.add_argument("parameters", nargs="*", metavar="KEY=VALUE", help="task parameters")
    add_target_args(run)
    run.add_argument("--params", help="parameters as a JSON object, or @FILE.json")
    run.add_argument("-e", "--environment", default="production", help="code environment")
    run.add_argument(
        "--noop", action="store_true", help="run in no-op mode (tasks that support it)"
    )
    run.add_argument("--description", default="", help="a note stored with the job")
    add_pace_args(run, "task")
    add_display_args(run)
    add_connection_args(run)
    run.set_defaults(func=run_task, takes_pairs=True)

    show = tsub.add_parser(
        "show",
        help="list the tasks of an environment, or describe one",
        description="With no TASK, list the tasks of the environment; with TASK, its "
        "description, parameters, noop support and implementations.",
    )
    show.add_argument("task", nargs="?", metavar="TASK", help="the task to describe")
    show.add_argument("-e", "--environment", default="production", help="code environment")
    add_connection_args(show)
    show.set_defaults(func=run_show)


def add_pace_args(parser: argparse.ArgumentParser, what: str) -> None:
    """The pace flags of a job command; ``what`` a node runs: "task" or "Puppet run"."""
    pace = parser.add_argument_group(
        "pace",
        f"How fast the job goes through its nodes. DURATION: {DURATION_HELP}.",
    )
    pace.add_argument(
        "--concurrency", type=_positive("--concurrency"), metavar="N",
        help="run on at most N nodes at once",
    )  # fmt: skip
    pace.add_argument(
        "--batch", type=_batch, metavar="N|N%",
        help="run in batches of N nodes (or N%% of them); the next batch starts when the "
        "previous one has ended",
    )  # fmt: skip
    pace.add_argument(
        "--batch-sleep", type=_batch_sleep, metavar="SECONDS",
        help="wait this long between batches",
    )  # fmt: skip
    pace.add_argument(
        "--fail-fast", action="store_true",
        help="start no new node after the first failure; the rest end skipped",
    )  # fmt: skip
    pace.add_argument(
        "--timeout",
        type=_seconds,
        metavar="SECONDS",
        help=f"stop the {what} on a node that runs longer than this (its whole process group)",
    )
    pace.add_argument(
        "--job-timeout", type=duration_arg("the job timeout"), metavar="DURATION",
        help="end the whole job after this long: nothing new starts, running "
        f"{what}s are stopped",
    )  # fmt: skip
    pace.add_argument(
        "--offline-ttl", type=duration_arg("the offline TTL"), metavar="DURATION",
        help="nodes not connected wait this long and run when they connect, instead of "
        "failing at once",
    )  # fmt: skip


def _seconds(text: str) -> int:
    try:
        value = parse_duration(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a whole number of seconds (or a duration: {DURATION_HELP})"
        ) from None
    if value < 1:
        raise argparse.ArgumentTypeError("the timeout must be at least 1 second")
    return value


def _positive(option: str) -> Callable[[str], int]:
    def parse(text: str) -> int:
        if not re.fullmatch(r"[0-9]+", text.strip()) or int(text) < 1:
            raise argparse.ArgumentTypeError(
                f"{option} must be a whole number of at least 1, not {text!r}"
            )
        return int(text)

    return parse


def _batch(text: str) -> int | str:
    """``N`` (at least 1) or ``N%`` (1 to 100): the API's ``batch``."""
    given = text.strip()
    percent = re.fullmatch(r"([0-9]+)\s*%", given)
    if percent is not None:
        if not 1 <= int(percent.group(1)) <= 100:
            raise argparse.ArgumentTypeError(
                f"a batch of {given} is not a share of the nodes: give 1% to 100%"
            )
        return f"{int(percent.group(1))}%"
    if not re.fullmatch(r"[0-9]+", given) or int(given) < 1:
        raise argparse.ArgumentTypeError(
            f"give the batch as a number of nodes of at least 1 (10) or a share of them "
            f"from 1% to 100% (25%), not {text!r}"
        )
    return int(given)


def _batch_sleep(text: str) -> float:
    try:
        value = float(parse_duration(text)) if text.strip()[-1:].isalpha() else float(text)
    except ValueError:
        value = -1.0
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(
            f"give the time between batches as seconds of 0 or more (30, 2.5) or a "
            f"duration (5m), not {text!r}"
        )
    return int(value) if value == int(value) else value


def parse_params(
    pairs: list[str], params: str | None, types: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """Task parameters from KEY=VALUE pairs or a JSON object (``--params``), not both.

    ``types`` (parameter → Puppet type, from the task's metadata) decides how a pair's
    value is read: see :func:`typed_value`.
    """
    if pairs and params:
        raise ValidationError("give task parameters as KEY=VALUE pairs or with --params, not both")
    if params:
        try:
            given = json.loads(read_at(params), parse_constant=_no_constant)
        except ValueError as exc:
            raise ValidationError(f"--params is not valid JSON: {exc}") from exc
        if not isinstance(given, dict):
            raise ValidationError('--params must be a JSON object, e.g. \'{"message": "hi"}\'')
        return given
    result: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise ValidationError(f"parameter {pair!r} is not KEY=VALUE")
        if key in result:
            raise ValidationError(f"parameter {key!r} is given twice; give each one once")
        result[key] = typed_value(raw, (types or {}).get(key))
    return result


def typed_value(raw: str, type_text: str | None) -> Any:
    """A KEY=VALUE value as the parameter's type wants it.

    Kept as a string when the type accepts that string; otherwise read as JSON when it
    is JSON (a number, boolean, null, array or object). Without a known type, only what
    looks like an array or object is read as JSON, as ``puppet task run`` does.
    """
    if type_text is None:
        if raw[:1] in ("[", "{"):
            with contextlib.suppress(ValueError):
                return json.loads(raw, parse_constant=_no_constant)
        return raw
    try:
        ptype = parse_type(type_text)
    except ValidationError:  # an alias the CLI cannot see: let the server judge
        ptype = None
    if ptype is not None and check(ptype, raw) is None:
        return raw
    try:
        return json.loads(raw, parse_constant=_no_constant)
    except ValueError:
        return raw


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def parameter_types(client: ApiClient, task: str, environment: str) -> dict[str, str]:
    """Each declared parameter's type, from the server; {} for a task it does not know
    (the job command then says what is wrong)."""
    module, _, short = task.partition("::")
    try:
        found = client.call(
            "GET", f"/tasks/{module}/{short or 'init'}", params={"environment": environment}
        )
    except PodiumError:
        return {}
    declared = found.get("metadata", {}).get("parameters") or {}
    return {
        name: str((spec or {}).get("type") or "Any")
        for name, spec in declared.items()
        if isinstance(name, str)
    }


def run_task(args: argparse.Namespace) -> int:
    client = ApiClient.from_args(args)
    types = parameter_types(client, args.task, args.environment) if args.parameters else {}
    body = task_command(args, parse_params(args.parameters, args.params, types))
    as_json = args.format == "json"
    if not as_json:
        sys.stdout.write("Starting job ...\n")
        sys.stdout.flush()
    answer = client.call("POST", "/command/task", json=body)
    job = answer["job"]
    warn_left_out(answer)
    query = body["scope"].get("query")
    try:
        return follow(
            client,
            job["name"],
            verbose=args.verbose,
            stream=args.stream,
            as_json=as_json,
            query=query if args.explain and isinstance(query, str) else None,
        )
    finally:
        client.close()


def task_command(args: argparse.Namespace, params: dict[str, Any]) -> dict[str, Any]:
    """The body of ``POST /command/task`` for ``task run``'s arguments."""
    body: dict[str, Any] = {
        "task": args.task,
        "params": params,
        "scope": scope_from_args(args),
        "environment": args.environment,
        "noop": args.noop,
        "description": args.description,
    }
    return {**body, **pace_fields(args)}


def run_show(args: argparse.Namespace) -> int:
    client = ApiClient.from_args(args)
    if args.task:
        return _show_task(client, args)
    listing = client.call("GET", "/tasks", params={"environment": args.environment})
    if args.format == "json":
        print_json(listing)
        return 0
    if not listing["items"]:
        print(f"No tasks in environment {args.environment}.")
        return 0
    rows = [[t["name"], _one_line(t.get("description") or "")] for t in listing["items"]]
    print(table(rows, ["TASK", "DESCRIPTION"]))
    print("\nFor a task's parameters: podium task show TASK")
    return 0


def _show_task(client: ApiClient, args: argparse.Namespace) -> int:
    module, _, short = args.task.partition("::")
    found = client.call(
        "GET", f"/tasks/{module}/{short or 'init'}", params={"environment": args.environment}
    )
    if args.format == "json":
        print_json(found)
        return 0
    meta = found["metadata"]
    print(f"{found['name']} (environment {args.environment})")
    if meta.get("description"):
        print(f"  {_one_line(meta['description'])}")
    print(f"\nSupports noop: {'yes' if meta.get('supports_noop') else 'no'}")
    params = meta.get("parameters") or {}
    if params:
        rows = [
            [
                name,
                str(spec.get("type") or "Any") + (" (sensitive)" if spec.get("sensitive") else ""),
                json.dumps(spec["default"]) if "default" in spec else "",
                _one_line(spec.get("description") or ""),
            ]
            for name, spec in ((n, s or {}) for n, s in params.items())
        ]
        print("\nParameters:")
        print(table(rows, ["NAME", "TYPE", "DEFAULT", "DESCRIPTION"]))
    else:
        print("\nParameters: none" if "parameters" in meta else "\nParameters: any")
    implementations = meta.get("implementations") or [
        {"name": f["filename"]} for f in found["files"] if "/" not in f["filename"]
    ]
    print("\nImplementations:")
    for impl in implementations:
        needs = ", ".join(impl.get("requirements") or []) or "any node"
        print(f"  {impl['name']} ({needs})")
    required = [n for n, spec in params.items() if _required(spec or {})]
    pairs = "".join(f" {n}=..." for n in required)
    print(f"\nRun it: podium task run {found['name']}{pairs} --nodes NODE")
    return 0


def _required(spec: Mapping[str, Any]) -> bool:
    """Whether a parameter must be given: no default, and a type that needs a value."""
    if "default" in spec:
        return False
    try:
        return not accepts_undef(parse_type(str(spec.get("type") or "Any")))
    except ValidationError:
        return True


def _one_line(text: str) -> str:
    return clean_text(" ".join(text.split()))
