"""``podium task run`` and ``podium task show``, with ``puppet task``'s flags."""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from collections.abc import Mapping
from typing import Any

from podium.cli.client import ApiClient, add_connection_args, clean_text, print_json, table
from podium.cli.job import ERROR, watch
from podium.cli.target import add_target_args, read_at, scope_from_args
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
            "Run TASK on the target nodes and watch it: a line per node as it starts and "
            f"finishes, then a summary. Parameters: {_PAIRS_HELP} "
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
    run.add_argument(
        "--timeout",
        type=_seconds,
        metavar="SECONDS",
        help="stop the task on a node that runs longer than this (its whole process group)",
    )
    run.add_argument("--description", default="", help="a note stored with the job")
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


def _seconds(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of seconds") from None
    if value < 1:
        raise argparse.ArgumentTypeError("the timeout must be at least 1 second")
    return value


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
    body: dict[str, Any] = {
        "task": args.task,
        "params": parse_params(args.parameters, args.params, types),
        "scope": scope_from_args(args),
        "environment": args.environment,
        "noop": args.noop,
        "description": args.description,
    }
    if args.timeout is not None:
        body["timeout"] = args.timeout
    job = client.call("POST", "/command/task", json=body)["job"]
    job_id = job["name"]
    if args.format == "json":
        return _wait_json(client, job_id)
    out = sys.stdout
    out.write("Starting job ...\n")
    out.write(f"New job ID: {job_id}\n")
    out.write(f"Environment: {args.environment}\n")
    if args.explain and isinstance(body["scope"].get("query"), str):
        out.write(f"Query: {body['scope']['query']}\n")
    created = client.call("GET", f"/jobs/{job_id}")
    out.write(f"Nodes: {created['node_count']}\n\n")
    out.flush()
    try:
        return watch(client, job_id, out=out)
    except KeyboardInterrupt:
        out.write(f"\nStopped watching job {job_id}; it goes on. See: podium job show {job_id}\n")
        return ERROR


def _wait_json(client: ApiClient, job_id: str) -> int:
    import io

    code = watch(client, job_id, out=io.StringIO())
    job = client.call("GET", f"/jobs/{job_id}")
    job["nodes"] = client.call("GET", f"/jobs/{job_id}/nodes")["items"]
    print_json(job)
    return code


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
