"""The target flags every job command shares, as ``puppet job``/``puppet task`` and
MCollective take them: ``--nodes``, ``--query``, ``--node-group``, ``-F``, ``-C``, ``-I``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from podium.errors import ValidationError
from podium.inventory.filters import compile_filters

TARGET_HELP = (
    "Target exactly one way: --nodes, --query, --node-group, or the filters -F/-I/-C "
    "(which combine: every -F and -C must hold, any -I may match)."
)


def add_target_args(p: argparse.ArgumentParser) -> None:
    group = p.add_argument_group("target", TARGET_HELP)
    group.add_argument(
        "-n",
        "--nodes",
        help="comma-separated certnames or globs ('web-*'), or @FILE with one a line "
        "(# comments and blank lines allowed)",
    )
    group.add_argument(
        "-q", "--query", help="a PQL query whose rows carry certnames, or @FILE holding one"
    )
    group.add_argument("--node-group", metavar="ID", help="the id of a node group")
    group.add_argument(
        "-F",
        "--fact",
        dest="facts",
        action="append",
        default=[],
        metavar="FILTER",
        help="fact filter: os.family=Debian, 'processors.count>=2', kernel!=windows, "
        "'os.name=~/^Deb/'",
    )
    group.add_argument(
        "-I",
        "--identity",
        dest="identities",
        action="append",
        default=[],
        metavar="NAME|/RE/",
        help="a certname or /regex/ (repeat for alternatives)",
    )
    group.add_argument(
        "-C",
        "--class",
        dest="classes",
        action="append",
        default=[],
        metavar="CLASS",
        help="nodes whose node groups assign this class",
    )
    group.add_argument(
        "--explain", action="store_true", help="print the query the filters compile to"
    )


def read_at(value: str) -> str:
    """``value``, or the content of the file it names as ``@FILE``."""
    if value.startswith("@"):
        path = Path(value[1:])
        try:
            return path.read_text()
        except OSError as exc:
            raise ValidationError(f"cannot read {path}: {exc.strerror}") from exc
    return value


def parse_nodes(value: str) -> list[str]:
    """Certnames from ``a,b`` or ``@FILE`` (one a line or comma-separated; # comments)."""
    text = read_at(value)
    names: list[str] = []
    for line in text.splitlines() if value.startswith("@") else [text]:
        line = line.split("#", 1)[0] if value.startswith("@") else line
        names.extend(n.strip() for n in line.split(",") if n.strip())
    if not names:
        raise ValidationError("--nodes names no node; give certnames separated by commas")
    return names


def scope_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """The API's ``scope`` for the target flags; exactly one way to target."""
    filters = bool(args.facts or args.identities)
    ways = [
        name
        for name, given in (
            ("--nodes", args.nodes is not None),
            ("--query", args.query is not None),
            ("--node-group", args.node_group is not None),
            ("-F/-I", filters),
        )
        if given
    ]
    if len(ways) > 1 or (args.classes and ways and ways != ["-F/-I"] and ways != ["--query"]):
        raise ValidationError(
            f"{' and '.join(ways + (['-C'] if args.classes else []))} given: target one way "
            "(--nodes, --query, --node-group, or the filters -F/-I/-C)"
        )
    if not ways and not args.classes:
        raise ValidationError(
            "no target: give --nodes, --query, --node-group or a filter (-F, -I, -C)"
        )
    if args.nodes is not None:
        return {"nodes": parse_nodes(args.nodes)}
    if args.node_group is not None:
        return {"node_group": args.node_group}
    scope: dict[str, Any] = {}
    if args.query is not None:
        scope["query"] = _query(read_at(args.query))
    elif filters:
        scope["query"] = compile_filters(args.facts, args.identities)
    if args.classes:
        scope["classes"] = list(args.classes)
    return scope


def _query(text: str) -> str | list[Any]:
    """A PQL string, or an AST given as JSON (it starts with '[')."""
    stripped = text.strip()
    if stripped.startswith("["):
        try:
            ast = json.loads(stripped)
        except ValueError as exc:
            raise ValidationError(f"--query looks like an AST but is not JSON: {exc}") from exc
        if isinstance(ast, list):
            return ast
    if not stripped:
        raise ValidationError("--query is empty")
    return stripped
