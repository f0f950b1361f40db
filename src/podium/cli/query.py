"""``podium query``: PQL against the inventory, as a table or JSON."""

from __future__ import annotations

import argparse
import json
from typing import Any

from podium.cli.client import ApiClient, add_connection_args, clean_text, print_json, table
from podium.cli.target import read_at


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "query",
        help="query the inventory with PQL",
        description="Run a PQL query (or a PuppetDB AST given as JSON) against the "
        "inventory, as PuppetDB's /pdb/query/v4 answers it, e.g. "
        "podium query 'inventory[certname, facts.os.family] { facts.os.family = \"Debian\" }'",
    )
    p.add_argument("query", metavar="PQL", help="the query, or @FILE holding it")
    p.add_argument("--limit", type=int, help="at most this many rows")
    add_connection_args(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    client = ApiClient.from_args(args)
    text = read_at(args.query).strip()
    params: dict[str, Any] = {"query": text}
    if args.limit is not None:
        params["limit"] = args.limit
    rows = client.call("GET", client.server_url + "/pdb/query/v4", params=params)
    if args.format == "json":
        print_json(rows)
        return 0
    if not rows:
        print("No rows.")
        return 0
    print(render(rows))
    return 0


def render(rows: list[Any]) -> str:
    """Rows as a table: a column per key, nested values as compact JSON."""
    if not all(isinstance(r, dict) for r in rows):
        return "\n".join(clean_text(json.dumps(r)) for r in rows)
    columns: dict[str, None] = {}
    for row in rows:
        columns.update(dict.fromkeys(row))
    cells = [
        [
            clean_text(v if isinstance(v := row.get(c), str) else json.dumps(v))[:120]
            for c in columns
        ]
        for row in rows
    ]
    return table(cells, list(columns)) + f"\n\n{len(rows)} row{'s' if len(rows) != 1 else ''}"
