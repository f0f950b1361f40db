"""The ``podium`` command: one sub-command per module in this package.

Each module exposes ``register(subparsers)`` and attaches ``func(args) -> int`` to its
parsers; heavy imports happen inside ``func`` so that ``podium agent`` stays small.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

from podium import __version__
from podium.errors import PodiumError

_COMMANDS = (
    "server",
    "broker",
    "agent",
    "ca",
    "task",
    "job",
    "node",
    "query",
    "group",
    "facts",
    "demo",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="podium",
        description="Run tasks and Puppet across a fleet, now, and review what happened.",
    )
    parser.add_argument("--version", action="version", version=f"podium {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in _COMMANDS:
        importlib.import_module(f"podium.cli.{name}").register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    if rest:
        # KEY=VALUE pairs may follow options (`task run T --nodes a k=v`); argparse
        # would stop at the first option after them.
        if getattr(args, "takes_pairs", False) and not any(r.startswith("-") for r in rest):
            args.parameters = [*args.parameters, *rest]
        else:
            parser.error(f"unrecognized arguments: {' '.join(rest)}")
    try:
        code: int = args.func(args)
    except PodiumError as exc:
        print(f"podium {args.command}: {exc.msg}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `podium job show | head`: the reader left, not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    return code


if __name__ == "__main__":
    sys.exit(main())
