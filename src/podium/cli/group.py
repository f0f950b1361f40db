"""``podium group``: the classifier's node groups (``/classifier-api/v1``).

Groups are named by name or id. Pinned nodes are shown apart from the rule, although
the server keeps them in it as PE does (``["or", <rule>, ["=", "name", N]]``).
"""

from __future__ import annotations

import argparse
import json
import sys
import uuid
from pathlib import Path
from typing import Any, Protocol, TextIO

from podium.classifier.rules import pin, split_pins, validate_rule
from podium.cli.client import ApiClient, add_connection_args, clean_text, table
from podium.errors import NotFound, PodiumError, ValidationError

API = "/classifier-api/v1"
ROOT_ID = "00000000-0000-4000-8000-000000000000"


class Client(Protocol):
    """What the commands need of :class:`ApiClient` (tests give a fake)."""

    def call(self, method: str, path: str, **kwargs: Any) -> Any: ...


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    group = sub.add_parser(
        "group",
        help="node groups: list, show, create, edit, pin, delete",
        description="Manage the classifier's node groups. A group is named by name or id.",
    )
    gsub = group.add_subparsers(dest="group_command", metavar="SUBCOMMAND", required=True)

    p = gsub.add_parser("list", help="the group tree, with ids", description="Show the tree.")
    _finish(p)

    p = gsub.add_parser(
        "show",
        help="one group: place in the tree, rule, pinned nodes, classes, matching nodes",
        description="Show one group in full.",
    )
    p.add_argument("group", metavar="GROUP", help="the group's name or id")
    _finish(p)

    p = gsub.add_parser("create", help="create a group", description="Create a node group.")
    p.add_argument("name", metavar="NAME", help="the new group's name (unique)")
    p.add_argument("--parent", default=ROOT_ID, help="parent group, name or id (default All Nodes)")
    p.add_argument(
        "--rule", help='the rule as JSON, or @FILE: \'["=", ["fact", "os", "family"], "Debian"]\''
    )
    p.add_argument("-e", "--environment", default="production", help="default production")
    p.add_argument(
        "--environment-trumps",
        action="store_true",
        help="this group's environment wins over other groups' for its nodes",
    )
    p.add_argument(
        "--class",
        dest="classes",
        action="append",
        default=[],
        metavar="CLASS",
        help="a class to declare (repeatable)",
    )
    p.add_argument(
        "--variable",
        dest="variables",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a top-level variable, VALUE as JSON or text (repeatable)",
    )
    p.add_argument("--description", help="what the group is for")
    _finish(p)

    p = gsub.add_parser("edit", help="change a group", description="Change a node group.")
    p.add_argument("group", metavar="GROUP", help="the group's name or id")
    p.add_argument("--name", help="a new name")
    p.add_argument("--parent", help="a new parent group, name or id")
    p.add_argument("--rule", help="a new rule as JSON or @FILE (pins are kept); none removes it")
    p.add_argument("-e", "--environment")
    p.add_argument("--environment-trumps", action=argparse.BooleanOptionalAction, default=None)
    p.add_argument("--description")
    p.add_argument(
        "--class",
        dest="classes",
        action="append",
        default=[],
        metavar="CLASS",
        help="declare a class (repeatable)",
    )
    p.add_argument(
        "--remove-class",
        action="append",
        default=[],
        metavar="CLASS",
        help="stop declaring a class (repeatable)",
    )
    p.add_argument(
        "--variable",
        dest="variables",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="set a variable (repeatable)",
    )
    p.add_argument(
        "--remove-variable",
        action="append",
        default=[],
        metavar="KEY",
        help="remove a variable (repeatable)",
    )
    _finish(p)

    for verb, text in (("pin", "pin nodes to a group"), ("unpin", "unpin nodes from a group")):
        p = gsub.add_parser(verb, help=text, description=text.capitalize() + ".")
        p.add_argument("group", metavar="GROUP", help="the group's name or id")
        p.add_argument("nodes", nargs="+", metavar="NODE", help="certnames, a,b lists or @FILE")
        _finish(p)

    p = gsub.add_parser(
        "delete", help="delete a group without children", description="Delete a node group."
    )
    p.add_argument("group", metavar="GROUP", help="the group's name or id")
    _finish(p)


def _finish(p: argparse.ArgumentParser) -> None:
    add_connection_args(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    with ApiClient.from_args(args, api=API) as client:
        return dispatch(client, args, sys.stdout)


def dispatch(client: Client, args: argparse.Namespace, out: TextIO) -> int:
    """Run ``podium group <subcommand>`` against ``client``; returns the exit code."""
    handlers = {
        "list": _list,
        "show": _show,
        "create": _create,
        "edit": _edit,
        "pin": _pin,
        "unpin": _pin,
        "delete": _delete,
    }
    return handlers[args.group_command](client, args, out)


# -- reading arguments ----------------------------------------------------------------


def _read_at(text: str, what: str) -> str:
    if not text.startswith("@"):
        return text
    try:
        return Path(text[1:]).read_text()
    except OSError as exc:
        raise ValidationError(f"cannot read {what} file {text[1:]}: {exc.strerror}") from None


def parse_rule(text: str) -> list[Any] | None:
    """A ``--rule`` value: JSON or @FILE; ``none`` is no rule."""
    raw = _read_at(text, "rule")
    if raw.strip() == "none":
        return None
    try:
        rule = json.loads(raw)
    except ValueError as exc:
        raise ValidationError(
            f'--rule is not JSON ({exc}): quote it, e.g. \'["~", "name", "^web"]\''
        ) from None
    return validate_rule(rule)


def parse_variables(pairs: list[str]) -> dict[str, Any]:
    """``KEY=VALUE`` pairs; a VALUE that is JSON is taken as JSON, else as text."""
    variables: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValidationError(f"--variable {pair!r} is not KEY=VALUE")
        try:
            variables[key] = json.loads(value)
        except ValueError:
            variables[key] = value
    return variables


def parse_nodes(values: list[str]) -> list[str]:
    """Certnames from arguments that may be ``a,b`` lists or ``@FILE`` (one a line)."""
    names: list[str] = []
    for value in values:
        text = _read_at(value, "nodes")
        names.extend(n.strip() for n in text.replace(",", "\n").splitlines() if n.strip())
    if not names:
        raise ValidationError("name at least one node")
    return list(dict.fromkeys(names))


def resolve(groups: list[dict[str, Any]], ref: str) -> dict[str, Any]:
    """The group whose id or name is ``ref``."""
    for group in groups:
        if group["id"] == ref:
            return group
    for group in groups:
        if group["name"] == ref:
            return group
    folded = [g["name"] for g in groups if g["name"].lower() == ref.lower()]
    hint = f" (did you mean {folded[0]!r}?)" if folded else "; `podium group list` shows them"
    raise NotFound(f"no node group is named {ref!r} or has that id{hint}", kind="not-found")


# -- printing -------------------------------------------------------------------------


def tree_rows(groups: list[dict[str, Any]]) -> list[list[str]]:
    """Rows of ``group list``: the name indented by depth, id, environment, pins."""
    by_parent: dict[str, list[dict[str, Any]]] = {}
    for g in groups:
        if g["parent"] != g["id"]:
            by_parent.setdefault(g["parent"], []).append(g)
    roots = [
        g for g in groups if g["parent"] == g["id"] or g["parent"] not in {x["id"] for x in groups}
    ]
    rows: list[list[str]] = []
    seen: set[str] = set()

    def walk(group: dict[str, Any], depth: int) -> None:
        if group["id"] in seen:
            return
        seen.add(group["id"])
        env = group["environment"] + (" (trumps)" if group["environment_trumps"] else "")
        _, pins = split_pins(group.get("rule"))
        rows.append(
            [
                "  " * depth + clean_text(group["name"]),
                group["id"],
                env,
                str(len(pins)) if pins else "",
            ]
        )
        for child in sorted(by_parent.get(group["id"], []), key=lambda c: c["name"]):
            walk(child, depth + 1)

    for root in sorted(roots, key=lambda g: (g["id"] != ROOT_ID, g["name"])):
        walk(root, 0)
    return rows


def pretty_rule(rule: Any, indent: str = "") -> list[str]:
    """A rule over several lines: one condition a line, nested under and/or/not."""
    if isinstance(rule, list) and rule and rule[0] in ("and", "or", "not"):
        lines = [f'{indent}["{rule[0]}",']
        for i, term in enumerate(rule[1:], 1):
            sub = pretty_rule(term, indent + "  ")
            sub[-1] += "," if i < len(rule) - 1 else "]"
            lines.extend(sub)
        return lines
    return [indent + json.dumps(rule)]


def _lineage(groups: list[dict[str, Any]], group: dict[str, Any]) -> list[dict[str, Any]]:
    by_id = {g["id"]: g for g in groups}
    chain = [group]
    while chain[-1]["parent"] != chain[-1]["id"] and chain[-1]["parent"] in by_id:
        chain.append(by_id[chain[-1]["parent"]])
        if len(chain) > len(groups):
            break
    return list(reversed(chain))


def show_lines(
    groups: list[dict[str, Any]], group: dict[str, Any], nodes: list[str] | None
) -> list[str]:
    """What ``group show`` prints."""
    path = " > ".join(clean_text(g["name"]) for g in _lineage(groups, group))
    children = sorted(
        clean_text(g["name"])
        for g in groups
        if g["parent"] == group["id"] and g["id"] != group["id"]
    )
    env = group["environment"] + (
        " (environment_trumps: wins over other groups)" if group["environment_trumps"] else ""
    )
    dynamic, pins = split_pins(group.get("rule"))
    lines = [
        f"Group {clean_text(group['name'])}",
        f"  Id:           {group['id']}",
        f"  Path:         {path}",
        f"  Children:     {', '.join(children) or 'none'}",
        f"  Environment:  {env}",
    ]
    if group.get("description"):
        lines.append(f"  Description:  {clean_text(group['description'])}")
    if dynamic is None:
        lines.append(
            "  Rule:         none (only pinned nodes)"
            if pins
            else "  Rule:         none (matches no node)"
        )
    else:
        lines.append("  Rule:")
        lines.extend(pretty_rule(dynamic, "    "))
    lines.append(f"  Pinned nodes: {', '.join(pins) if pins else 'none'}")
    lines.append("  Classes:" if group["classes"] else "  Classes:      none")
    for cls, params in sorted(group["classes"].items()):
        lines.append(f"    {cls}")
        lines.extend(f"      {k} = {json.dumps(v)}" for k, v in sorted(params.items()))
    lines.append("  Variables:" if group["variables"] else "  Variables:    none")
    lines.extend(f"    {k} = {json.dumps(v)}" for k, v in sorted(group["variables"].items()))
    if group.get("config_data"):
        lines.append("  Config data:")
        for cls, params in sorted(group["config_data"].items()):
            lines.append(f"    {cls}")
            lines.extend(f"      {k} = {json.dumps(v)}" for k, v in sorted(params.items()))
    lines.append(
        f"  Serial:       {group.get('serial_number')} (last edited {group.get('last_edited')})"
    )
    if nodes is not None:
        lines.append(f"  Matching nodes ({len(nodes)}): {', '.join(nodes) if nodes else 'none'}")
    return lines


def _print_json(value: Any, out: TextIO) -> None:
    json.dump(value, out, indent=2)
    out.write("\n")


# -- commands -------------------------------------------------------------------------


def _all(client: Client) -> list[dict[str, Any]]:
    groups: list[dict[str, Any]] = client.call("GET", "/groups")
    return groups


def _list(client: Client, args: argparse.Namespace, out: TextIO) -> int:
    groups = _all(client)
    if args.format == "json":
        _print_json(groups, out)
        return 0
    out.write(table(tree_rows(groups), ["NAME", "ID", "ENVIRONMENT", "PINNED"]) + "\n")
    return 0


def _matching_nodes(client: Client, group_id: str) -> list[str] | None:
    try:
        found = client.call("GET", f"/groups/{group_id}/nodes")
    except PodiumError:  # a server that cannot tell (PE has no such endpoint)
        return None
    nodes = found.get("nodes") if isinstance(found, dict) else None
    return nodes if isinstance(nodes, list) else None


def _show(client: Client, args: argparse.Namespace, out: TextIO) -> int:
    groups = _all(client)
    group = resolve(groups, args.group)
    nodes = _matching_nodes(client, group["id"])
    if args.format == "json":
        _, pins = split_pins(group.get("rule"))
        _print_json({**group, "pinned_nodes": pins, "matching_nodes": nodes}, out)
        return 0
    out.write("\n".join(show_lines(groups, group, nodes)) + "\n")
    return 0


def _create(client: Client, args: argparse.Namespace, out: TextIO) -> int:
    groups = _all(client)
    parent = resolve(groups, args.parent)
    body: dict[str, Any] = {
        "name": args.name,
        "parent": parent["id"],
        "environment": args.environment,
        "environment_trumps": args.environment_trumps,
        "classes": {c: {} for c in args.classes},
        "variables": parse_variables(args.variables),
    }
    if args.rule is not None:
        body["rule"] = parse_rule(args.rule)
    if args.description is not None:
        body["description"] = args.description
    # PUT with a fresh id answers with the group (POST answers 303 and only a Location).
    group = client.call("PUT", f"/groups/{uuid.uuid4()}", json=body)
    if args.format == "json":
        _print_json(group, out)
        return 0
    name, under = clean_text(group["name"]), clean_text(parent["name"])
    out.write(f"Created group {name} ({group['id']}) under {under}.\n")
    if "rule" not in group:
        out.write("It has no rule yet, so it matches no node: give it --rule or pin nodes.\n")
    return 0


def _edit(client: Client, args: argparse.Namespace, out: TextIO) -> int:
    groups = _all(client)
    group = resolve(groups, args.group)
    delta: dict[str, Any] = {}
    if args.name is not None:
        delta["name"] = args.name
    if args.parent is not None:
        delta["parent"] = resolve(groups, args.parent)["id"]
    if args.rule is not None:
        _, pins = split_pins(group.get("rule"))
        new = parse_rule(args.rule)
        delta["rule"] = pin(new, pins)
    if args.environment is not None:
        delta["environment"] = args.environment
    if args.environment_trumps is not None:
        delta["environment_trumps"] = args.environment_trumps
    if args.description is not None:
        delta["description"] = args.description
    classes: dict[str, Any] = {c: {} for c in args.classes}
    classes.update(dict.fromkeys(args.remove_class))
    if classes:
        delta["classes"] = classes
    variables = parse_variables(args.variables)
    variables.update(dict.fromkeys(args.remove_variable))
    if variables:
        delta["variables"] = variables
    if not delta:
        raise ValidationError("nothing to change: give --name, --rule, --class, ... (see --help)")
    # The serial number makes the server refuse the edit if someone changed the group since.
    delta["serial_number"] = group["serial_number"]
    updated = client.call("POST", f"/groups/{group['id']}", json=delta)
    if args.format == "json":
        _print_json(updated, out)
        return 0
    out.write(f"Updated group {clean_text(updated['name'])} ({updated['id']}).\n")
    return 0


def _pin(client: Client, args: argparse.Namespace, out: TextIO) -> int:
    groups = _all(client)
    group = resolve(groups, args.group)
    nodes = parse_nodes(args.nodes)
    verb = args.group_command
    _, before = split_pins(group.get("rule"))
    client.call("POST", f"/groups/{group['id']}/{verb}", json={"nodes": nodes})
    after_group = client.call("GET", f"/groups/{group['id']}")
    _, after = split_pins(after_group.get("rule"))
    if args.format == "json":
        _print_json({"id": group["id"], "name": group["name"], "pinned_nodes": after}, out)
        return 0
    name = clean_text(group["name"])
    if verb == "pin":
        new = [n for n in nodes if n not in before]
        out.write(f"Pinned {', '.join(new) or 'no new node'} to {name}.\n")
    else:
        gone = [n for n in nodes if n in before]
        missing = [n for n in nodes if n not in before]
        out.write(f"Unpinned {', '.join(gone) or 'no node'} from {name}.\n")
        if missing:
            out.write(f"Not pinned there: {', '.join(missing)}.\n")
    out.write(f"Pinned nodes now: {', '.join(after) or 'none'}\n")
    return 0


def _delete(client: Client, args: argparse.Namespace, out: TextIO) -> int:
    group = resolve(_all(client), args.group)
    client.call("DELETE", f"/groups/{group['id']}")
    if args.format == "json":
        _print_json({"deleted": group["id"], "name": group["name"]}, out)
        return 0
    out.write(f"Deleted group {clean_text(group['name'])} ({group['id']}).\n")
    return 0
