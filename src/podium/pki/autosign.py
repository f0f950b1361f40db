"""The autosign policy: which certificate requests the CA signs without an operator.

Enrollment tokens are secrets, so they never travel on a command line (``ps`` shows it
to every user): they are read from files, one a line, with :func:`read_token_file`.
"""

from __future__ import annotations

import fnmatch
import hmac
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from podium.errors import ConfigError, ValidationError

# PKCS#9 bounds challengePassword, which carries the token, at 255 characters.
MAX_TOKEN_LENGTH = 255


@dataclass(frozen=True)
class AutosignPolicy:
    """Which certificate requests the CA signs without an operator.

    A request is signed when its certname matches one of the glob ``patterns``
    (``"*"`` signs everything) or its challenge password equals one of the ``tokens``.
    """

    patterns: tuple[str, ...] = ()
    tokens: tuple[str, ...] = field(default=(), repr=False)  # secrets stay out of logs

    def __post_init__(self) -> None:
        # Accept lists (from JSON or argparse) and keep the object hashable.
        object.__setattr__(self, "patterns", tuple(self.patterns))
        object.__setattr__(self, "tokens", tuple(self.tokens))
        for pattern in self.patterns:
            if not isinstance(pattern, str) or not pattern:
                raise ValidationError(
                    f"an autosign pattern must be a non-empty string: {pattern!r}"
                )
        for token in self.tokens:
            if not isinstance(token, str) or not token:
                raise ValidationError("an autosign token must be a non-empty string")

    @property
    def enabled(self) -> bool:
        """Whether the policy can sign anything at all."""
        return bool(self.patterns or self.tokens)

    def allows(self, certname: str, challenge_password: str | None) -> bool:
        """Whether a request for ``certname`` carrying ``challenge_password`` is signed."""
        if any(fnmatch.fnmatchcase(certname, pattern) for pattern in self.patterns):
            return True
        if challenge_password is None:
            return False
        given = challenge_password.encode("utf-8")
        # Compare with every token, each in constant time, so timing tells nothing.
        matches = [hmac.compare_digest(given, token.encode("utf-8")) for token in self.tokens]
        return any(matches)

    def to_dict(self) -> dict[str, list[str]]:
        """The policy as stored in ``autosign.json``."""
        return {"patterns": list(self.patterns), "tokens": list(self.tokens)}

    @classmethod
    def from_dict(cls, data: Any) -> AutosignPolicy:
        """Read a policy stored by :meth:`to_dict`."""
        if not isinstance(data, dict):
            raise ValidationError("an autosign policy must be a JSON object")
        patterns = data.get("patterns", [])
        tokens = data.get("tokens", [])
        if not isinstance(patterns, list) or not isinstance(tokens, list):
            raise ValidationError("an autosign policy's patterns and tokens must be lists")
        return cls(patterns=tuple(patterns), tokens=tuple(tokens))


def parse_tokens(text: str, *, source: str) -> tuple[str, ...]:
    """The tokens in ``text``, one a line; blank lines and ``#`` comments are skipped.

    ``source`` names where the text came from, for the error when it holds none or a
    token is too long to travel in a certificate request.
    """
    tokens: list[str] = []
    for number, line in enumerate(text.splitlines(), start=1):
        token = line.strip()
        if not token or token.startswith("#"):
            continue
        if len(token) > MAX_TOKEN_LENGTH:
            raise ConfigError(
                f"the token on line {number} of {source} is {len(token)} characters long; "
                f"a token is at most {MAX_TOKEN_LENGTH}"
            )
        if token not in tokens:
            tokens.append(token)
    if not tokens:
        raise ConfigError(f"{source} holds no token: write one token a line")
    return tuple(tokens)


def read_token_file(path: Path) -> tuple[str, ...]:
    """The tokens in the file ``path`` (see :func:`parse_tokens`)."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read the token file {path}: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"the token file {path} is not UTF-8 text") from exc
    return parse_tokens(text, source=f"the token file {path}")
