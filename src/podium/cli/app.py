"""``podium app show``: an environment's applications; :func:`order_lines`, a run order."""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import quote

from podium.cli.client import ApiClient, add_connection_args, clean_line, print_json, table
from podium.errors import NotFound

SHOWN = 10  # names printed in a cell before "and N more"; --format json gives all


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    app = sub.add_parser(
        "app",
        help="show the applications that order Puppet runs",
        description="Applications (the YAML files of an environment's applications/ "
        "folder) put components on nodes; a component that consumes a capability runs "
        "after those that produce it, and deploy jobs run their nodes in that order.",
    )
    asub = app.add_subparsers(dest="app_command", metavar="SUBCOMMAND", required=True)
    show = asub.add_parser(
        "show",
        help="list application instances with their components, nodes and capabilities",
        description="Print each application instance of the environment (or only NAME): "
        "its components, their nodes, what they produce and consume, and the components "
        "each runs after.",
    )
    show.add_argument("name", nargs="?", metavar="NAME", help="the application to show")
    show.add_argument("-e", "--environment", default="production", help="code environment")
    add_connection_args(show)
    show.set_defaults(func=run_show)


def run_show(args: argparse.Namespace) -> int:
    env = args.environment
    with ApiClient.from_args(args) as client:
        answer = client.call("GET", f"/environments/{quote(env, safe='')}/applications")
    items: list[dict[str, Any]] = answer["items"]
    if args.name is not None:
        items = [i for i in items if i["name"] == args.name]
        if not items:
            names = ", ".join(i["name"] for i in answer["items"]) or "none"
            raise NotFound(
                f"no application {args.name!r} in environment {env}; its applications: {names}"
            )
    if args.format == "json":
        print_json({"environment": answer["environment"], "items": items})
        return 0
    if not items:
        print(f"No applications in environment {clean_line(env)}.")
        return 0
    print("\n\n".join("\n".join(application_lines(i)) for i in items))
    return 0


def application_lines(app: Mapping[str, Any]) -> list[str]:
    """An application instance: its name and description, then a table of components."""
    title = clean_line(app["name"])
    if app.get("description"):
        title += f": {clean_line(app['description'])}"
    rows = [
        [
            c["name"],
            _names(c["nodes"]),
            _names(c["produces"]),
            _names(c["consumes"]),
            _names(c["after"]),
        ]
        for c in app["components"]
    ]
    headers = ["COMPONENT", "NODES", "PRODUCES", "CONSUMES", "RUNS AFTER"]
    return [title, *table(rows, headers).splitlines()]


def order_lines(plan: Mapping[str, Any]) -> list[str]:
    """The answer of ``POST /command/plan`` for people: a line saying how many levels,
    then a row per node with its level, application component and what it waits for."""
    levels: list[list[str]] = plan["levels"]
    nodes: Mapping[str, Mapping[str, Any]] = plan["nodes"]
    count = sum(len(level) for level in levels)
    if not count:
        return ["No nodes to order."]
    if not any(nodes[n].get("application") for level in levels for n in level):
        return [
            f"No application of environment {clean_line(str(plan.get('environment', '')))} "
            "orders these nodes: they start as the pace allows."
        ]
    lines = [
        f"Run order: {count} node{'s' if count != 1 else ''} in {len(levels)} "
        f"level{'s' if len(levels) != 1 else ''}; a node starts once every node it runs "
        "after has finished, and is skipped if one of them does not."
    ]
    rows = []
    for number, level in enumerate(levels, 1):
        for name in level:
            node = nodes[name]
            role = ""
            if node.get("application"):
                role = f"{node['application']}/{node['component']}"
                extra = len(node.get("components") or ()) - 1
                role += f" (+{extra})" if extra > 0 else ""
            rows.append([str(number), name, role, _names(node.get("after") or ())])
    return [*lines, *table(rows, ["LEVEL", "NODE", "COMPONENT", "RUNS AFTER"]).splitlines()]


def _names(names: Sequence[str]) -> str:
    shown = ", ".join(str(n) for n in names[:SHOWN])
    more = len(names) - SHOWN
    return shown + (f" and {more} more" if more > 0 else "")
