"""``podium facts``: this node's facts, as its agent would send them."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

_MISSING = object()


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "facts",
        help="print this node's facts as the agent reports them",
        description=(
            "Collect this node's facts as the agent does (Facter's when it is installed, "
            "else Podium's own, then external facts and the facts file) and print them, "
            "or only the NAMEs asked for; dotted paths reach inside a fact: "
            "`podium facts os.family networking.ip`."
        ),
    )
    p.add_argument("names", nargs="*", metavar="NAME", help="a fact, or a dotted path in one")
    p.add_argument("--config", type=Path, help="the agent's TOML settings file")
    p.add_argument("--certname", help="this node's name (default: its FQDN)")
    p.add_argument("--vardir", type=Path, help="the agent's vardir (for <vardir>/facts.d)")
    p.add_argument(
        "--factsdir",
        type=Path,
        action="append",
        metavar="DIR",
        help="a folder of external facts (repeat; default <vardir>/facts.d, /etc/podium/facts.d)",
    )
    p.add_argument("--facts-file", type=Path, help="JSON object of extra facts")
    p.add_argument(
        "--format", choices=["text", "json"], default="text", help="output (default: text)"
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from podium.agent import config as agent_config
    from podium.agent.facts import gather
    from podium.protocol.envelope import ENVELOPE_ROOM

    overrides = {
        "certname": args.certname,
        "vardir": args.vardir,
        "factsdir": tuple(args.factsdir) if args.factsdir else None,
        "facts_file": args.facts_file,
    }
    config = agent_config.load(args.config, overrides, connection=False)
    facts = gather(
        config.certname,
        config.facts_file,
        factsdirs=config.facts_dirs,
        limit=config.max_message_bytes - ENVELOPE_ROOM,
    )
    sys.stdout.write(show(facts, args.names, fmt=args.format))
    return 0


def show(facts: Mapping[str, Any], names: Sequence[str], *, fmt: str = "text") -> str:
    """The facts, or the named ones, as ``podium facts`` prints them."""
    if fmt == "json":
        if names:
            chosen = {name: _none(lookup(facts, name)) for name in names}
            return json.dumps(chosen, indent=2, ensure_ascii=False) + "\n"
        return json.dumps(facts, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
    if len(names) == 1:
        value = lookup(facts, names[0])
        if value is _MISSING or value is None:
            return "\n"
        return (value if isinstance(value, str) else render(value)) + "\n"
    shown = [(name, lookup(facts, name)) for name in names] or sorted(facts.items())
    lines = []
    for name, value in shown:
        if value is _MISSING or value is None:
            value = ""
        lines.append(f"{name} => {value if isinstance(value, str) else render(value)}")
    return "".join(f"{line}\n" for line in lines)


def _none(value: Any) -> Any:
    return None if value is _MISSING else value


def lookup(value: Any, path: str) -> Any:
    """The value at a dotted path (``os.release.major``, ``processors.models.0``); a key
    that holds dots itself is found too."""
    if isinstance(value, Mapping) and path in value:
        return value[path]
    parts = path.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        head, rest = ".".join(parts[:cut]), ".".join(parts[cut:])
        if isinstance(value, Mapping) and head in value:
            found = lookup(value[head], rest)
        elif (
            isinstance(value, list) and head.isascii() and head.isdigit() and int(head) < len(value)
        ):
            found = lookup(value[int(head)], rest)
        else:
            continue
        if found is not _MISSING:
            return found
    if isinstance(value, list) and path.isascii() and path.isdigit() and int(path) < len(value):
        return value[int(path)]
    return _MISSING


def render(value: Any, depth: int = 0) -> str:
    """A structured value as Facter prints one: ``key => value``, nested by two spaces."""
    inner, outer = "  " * (depth + 1), "  " * depth
    if isinstance(value, Mapping):
        if not value:
            return "{}"
        items = [
            f"{inner}{key} => {render(item, depth + 1)}" for key, item in sorted(value.items())
        ]
        return "{\n" + ",\n".join(items) + f"\n{outer}}}"
    if isinstance(value, list):
        if not value:
            return "[]"
        items = [f"{inner}{render(item, depth + 1)}" for item in value]
        return "[\n" + ",\n".join(items) + f"\n{outer}]"
    return json.dumps(value, ensure_ascii=False)
