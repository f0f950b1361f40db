"""``podium task run`` and ``podium task show``, with ``puppet task``'s flags."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from podium.cli.client import ApiClient, add_connection_args, print_json, table
from podium.cli.job import ERROR, watch
from podium.errors import ValidationError


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    task = sub.add_parser("task", help="run and list tasks", description="Run tasks on nodes.")
    tsub = task.add_subparsers(dest="task_command", metavar="SUBCOMMAND", required=True)
    run = tsub.add_parser(
        "run",
        help="run a task on nodes",
        description=(
            "Run TASK on the target nodes and watch it: a line per node as it starts and "
            "finishes, then a summary. Parameters as key=value pairs or --params, not both. "
            "Exit code: 0 all nodes succeeded, 1 error, 2 some nodes failed, 3 no node answered."
        ),
    )
    run.add_argument("task", metavar="TASK", help="task name, e.g. podium::echo or package")
    run.add_argument("parameters", nargs="*", metavar="KEY=VALUE", help="task parameters")
    run.add_argument(
        "-n", "--nodes", required=True, help="comma-separated certnames, or @FILE with one a line"
    )
    run.add_argument("--params", help="parameters as a JSON object, or @FILE.json")
    run.add_argument("-e", "--environment", default="production", help="code environment")
    run.add_argument(
        "--noop", action="store_true", help="run in no-op mode (tasks that support it)"
    )
    run.add_argument("--description", default="", help="a note stored with the job")
    add_connection_args(run)
    run.set_defaults(func=run_task)

    show = tsub.add_parser("show", help="list the tasks of an environment")
    show.add_argument("-e", "--environment", default="production", help="code environment")
    add_connection_args(show)
    show.set_defaults(func=run_show)


def _read_at(value: str) -> str:
    if value.startswith("@"):
        path = Path(value[1:])
        try:
            return path.read_text()
        except OSError as exc:
            raise ValidationError(f"cannot read {path}: {exc.strerror}") from exc
    return value


def parse_nodes(value: str) -> list[str]:
    text = _read_at(value)
    sep = "\n" if value.startswith("@") else ","
    nodes = [n.strip() for n in text.replace(",", sep).split(sep) if n.strip()]
    if not nodes:
        raise ValidationError("--nodes names no node; give certnames separated by commas")
    return nodes


def parse_params(pairs: list[str], params: str | None) -> dict[str, Any]:
    if pairs and params:
        raise ValidationError("give task parameters as KEY=VALUE pairs or with --params, not both")
    if params:
        try:
            given = json.loads(_read_at(params))
        except json.JSONDecodeError as exc:
            raise ValidationError(f"--params is not valid JSON: {exc}") from exc
        if not isinstance(given, dict):
            raise ValidationError('--params must be a JSON object, e.g. \'{"message": "hi"}\'')
        return given
    result: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise ValidationError(f"parameter {pair!r} is not KEY=VALUE")
        value: Any = raw
        if raw[:1] in ("[", "{"):  # structured values as JSON, as `puppet task` accepts
            try:
                value = json.loads(raw)
            except json.JSONDecodeError:
                value = raw
        result[key] = value
    return result


def run_task(args: argparse.Namespace) -> int:
    body = {
        "task": args.task,
        "params": parse_params(args.parameters, args.params),
        "scope": {"nodes": parse_nodes(args.nodes)},
        "environment": args.environment,
        "noop": args.noop,
        "description": args.description,
    }
    client = ApiClient.from_args(args)
    job = client.call("POST", "/command/task", json=body)["job"]
    job_id = job["name"]
    if args.format == "json":
        return _wait_json(client, job_id)
    out = sys.stdout
    out.write("Starting job ...\n")
    out.write(f"New job ID: {job_id}\n")
    out.write(f"Environment: {args.environment}\n")
    out.write(f"Nodes: {len(body['scope']['nodes'])}\n\n")
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
    listing = client.call("GET", "/tasks", params={"environment": args.environment})
    if args.format == "json":
        print_json(listing)
    else:
        print(table([[t["name"]] for t in listing["items"]], ["TASK"]))
    return 0
