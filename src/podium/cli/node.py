"""``podium node list`` and ``podium ping``: the fleet as ``mco find``/``mco ping`` show it."""

from __future__ import annotations

import argparse
import statistics
import sys

from podium.cli.client import ApiClient, add_connection_args, clean_text, print_json, table
from podium.cli.job import print_target
from podium.cli.target import TARGET_HELP, add_target_args, scope_from_args


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    node = sub.add_parser("node", help="list the nodes of the fleet", description="The fleet.")
    nsub = node.add_subparsers(dest="node_command", metavar="SUBCOMMAND", required=True)
    listing = nsub.add_parser(
        "list",
        help="nodes with their connection, broker, last contact, agent version, environment",
        description=f"List every node of the inventory, or those of a target. {TARGET_HELP}",
    )
    add_target_args(listing)
    add_connection_args(listing)
    listing.set_defaults(func=run_list)

    ping = sub.add_parser(
        "ping",
        help="a round trip to each node's agent, with its time",
        description="Ask every targeted agent for its status at once and print how long "
        f"each took to answer, then a summary. {TARGET_HELP} Exit code: 0 all answered, "
        "2 some did not, 3 none did.",
    )
    add_target_args(ping)
    ping.add_argument("--timeout", type=float, default=5.0, help="seconds to wait (default 5)")
    add_connection_args(ping)
    ping.set_defaults(func=run_ping)


def _targeted(args: argparse.Namespace) -> bool:
    return any((args.nodes, args.query, args.node_group, args.facts, args.identities, args.classes))


def run_list(args: argparse.Namespace) -> int:
    client = ApiClient.from_args(args)
    names = None
    if _targeted(args):
        plan = client.call("POST", "/targets", json={"scope": scope_from_args(args)})
        names = [i["name"] for i in plan["items"]]
    items = client.call("GET", "/inventory")["items"]
    if names is not None:
        wanted = set(names)
        items = [i for i in items if i["name"] in wanted]
    if args.format == "json":
        print_json({"items": items})
        return 0
    rows = [
        [
            i["name"],
            "yes" if i["connected"] else "no",
            i.get("broker") or "",
            (i.get("last_seen") or "")[:19].replace("T", " "),
            clean_text(str(i.get("agent_version") or "")),
            clean_text(str(i.get("environment") or "")),
        ]
        for i in items
    ]
    if not rows:
        print("No nodes.")
        return 0
    print(table(rows, ["NODE", "CONNECTED", "BROKER", "LAST SEEN", "AGENT", "ENVIRONMENT"]))
    up = sum(1 for i in items if i["connected"])
    print(f"\n{len(items)} nodes, {up} connected")
    return 0


def run_ping(args: argparse.Namespace) -> int:
    client = ApiClient.from_args(args)
    answer = client.call(
        "POST", "/command/ping", json={"scope": scope_from_args(args), "timeout": args.timeout}
    )
    if args.format == "json":
        print_json(answer)
    else:
        print_target(answer, sys.stdout, explain=args.explain)
        for item in answer["items"]:
            if "seconds" in item:
                print(f"{item['name']:<40} time={item['seconds'] * 1000:.1f} ms")
            else:
                print(f"{item['name']:<40} {item['error']}")
    times = [i["seconds"] * 1000 for i in answer["items"] if "seconds" in i]
    total = len(answer["items"])
    if args.format != "json":
        print(f"\n---- ping statistics ----\n{len(times)} replies from {total} nodes", end="")
        if times:
            print(
                f", min/avg/max = {min(times):.1f}/{statistics.fmean(times):.1f}/"
                f"{max(times):.1f} ms"
            )
        else:
            print()
    if total and len(times) == total:
        return 0
    return 2 if times else 3
