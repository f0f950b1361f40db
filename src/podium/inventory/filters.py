"""MCollective/Choria-style filters compiled to PQL: ``-F``, ``-I`` (pure).

    -F os.family=Debian        facts.os.family = "Debian"
    -F 'processors.count>=2'   facts.processors.count >= 2
    -F 'kernel!=windows'       !(facts.kernel = "windows")   (a node without it matches)
    -F 'os.name=~/^(Debian|Ubuntu)$/'   facts.os.name ~ "^(Debian|Ubuntu)$"
    -I web-01.example.com      certname = "web-01.example.com"
    -I /^web/                  certname ~ "^web"

Several filters all apply (``and``); several ``-I`` are alternatives (``or``). An
equality on a value that reads as a number or boolean matches the typed fact or its text
(``2`` or ``"2"``), as MCollective's loose comparison did; ``<``/``>`` compare numbers.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Final

from podium.errors import ValidationError

_FACT: Final = re.compile(
    r"\A(?P<fact>[A-Za-z0-9_][A-Za-z0-9_.\-]*)\s*(?P<op>=~|!=|>=|<=|=|<|>)\s*(?P<value>.*)\Z",
    re.DOTALL,
)
_NUMBER: Final = re.compile(r"\A-?\d+(\.\d+)?\Z")


def compile_filters(facts: Sequence[str] = (), identities: Sequence[str] = ()) -> str:
    """The PQL query for ``-F`` and ``-I`` filters over the inventory."""
    clauses = [_fact_clause(f) for f in facts]
    if identities:
        names = [_identity_clause(i) for i in identities]
        clauses.append(names[0] if len(names) == 1 else "(" + " or ".join(names) + ")")
    if not clauses:
        raise ValidationError("no filter given: use -F FACT=VALUE or -I IDENTITY")
    return "inventory[certname] { " + " and ".join(clauses) + " }"


def _fact_clause(text: str) -> str:
    m = _FACT.match(text.strip())
    if m is None:
        raise ValidationError(
            f"-F {text!r} is not a fact filter: use FACT=VALUE, FACT!=VALUE, FACT<N, "
            "FACT>=N or FACT=~/REGEX/ (e.g. -F os.family=Debian)"
        )
    field = "facts." + m["fact"]
    op, value = m["op"], m["value"].strip()
    if op == "=~":
        return f"{field} ~ {_regex(value, f'-F {text!r}')}"
    if op in ("<", "<=", ">", ">="):
        if not _NUMBER.match(value):
            raise ValidationError(f"-F {text!r}: {op} compares numbers, and {value!r} is not one")
        return f"{field} {op} {value}"
    equal = _equality(field, value)
    if op == "=":
        return equal
    return f"!{equal}" if equal.startswith("(") else f"!({equal})"


def _equality(field: str, value: str) -> str:
    text = f"{field} = {json.dumps(value)}"
    if _NUMBER.match(value) or value in ("true", "false"):
        return f"({field} = {value} or {text})"
    return text


def _identity_clause(text: str) -> str:
    if len(text) >= 2 and text.startswith("/") and text.endswith("/"):
        return f"certname ~ {_regex(text, f'-I {text!r}')}"
    if not text:
        raise ValidationError("-I needs a certname or a /regex/")
    return f"certname = {json.dumps(text)}"


def _regex(text: str, where: str) -> str:
    body = text[1:-1] if len(text) >= 2 and text[0] == "/" and text[-1] == "/" else text
    try:
        re.compile(body)
    except re.error as exc:
        raise ValidationError(f"{where}: {body!r} is not a regular expression: {exc}") from exc
    return json.dumps(body)
