"""Certnames: the identity of a node, its certificate's CN, and a file name in the CA."""

from __future__ import annotations

import re

from podium.errors import ValidationError

_CERTNAME = re.compile(r"[a-z0-9](?:[a-z0-9._-]{0,251}[a-z0-9])?")
_RULE = (
    "a certname is 1 to 253 characters of lowercase letters, digits, '.', '_' and '-', "
    "starts and ends with a letter or digit, and has no '..'"
)


def validate_certname(name: str) -> str:
    """Return ``name`` if it is a valid certname, else raise :class:`ValidationError`.

    Certnames become file names in the CA directory and the agent's spool, so this is
    also what keeps a peer from naming a path outside them.
    """
    # fullmatch, not match with "$": "$" would let a trailing newline through.
    if not _CERTNAME.fullmatch(name) or ".." in name:
        raise ValidationError(f"invalid certname {name!r}: {_RULE}", details={"certname": name})
    return name
