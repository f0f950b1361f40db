"""Values kept at rest that nobody but the server may read: sealed with a server-held key.

A job keeps its task input so that it can resume after a restart, and that input may
hold passwords. It is stored sealed (AES-256-GCM, a fresh 96-bit nonce per value, the
purpose bound in as associated data), so the database, its WAL, its backups and its
replicas never hold it in clear. The key is 32 random bytes in a 0600 file beside the
database (``<datadir>/sealing.key``); whoever can read it can read sealed values, and
losing it only means unfinished jobs cannot resume (their nodes end ``errored``).
"""

from __future__ import annotations

import base64
import secrets
from pathlib import Path
from typing import Any, Final

import orjson
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from podium.errors import ConfigError, PKIError
from podium.files import write_atomic

_PREFIX: Final = "sealed:v1:"
_KEY_BYTES: Final = 32
_NONCE_BYTES: Final = 12


class Sealer:
    """Seals JSON values into text and opens them again; ``purpose`` must match."""

    def __init__(self, key: bytes) -> None:
        if len(key) != _KEY_BYTES:
            raise PKIError(f"a sealing key is {_KEY_BYTES} bytes, this one is {len(key)}")
        self._aead = AESGCM(key)

    def seal(self, value: Any, *, purpose: str) -> str:
        nonce = secrets.token_bytes(_NONCE_BYTES)
        sealed = self._aead.encrypt(nonce, orjson.dumps(value), purpose.encode())
        return _PREFIX + base64.b64encode(nonce + sealed).decode("ascii")

    def open(self, text: str, *, purpose: str) -> Any:
        if not isinstance(text, str) or not text.startswith(_PREFIX):
            raise PKIError("not a sealed value")
        try:
            raw = base64.b64decode(text[len(_PREFIX) :], validate=True)
            plain = self._aead.decrypt(raw[:_NONCE_BYTES], raw[_NONCE_BYTES:], purpose.encode())
        except (ValueError, InvalidTag) as exc:
            raise PKIError(
                "a sealed value cannot be opened: it was sealed with another key "
                "(was sealing.key replaced?) or it was altered"
            ) from exc
        return orjson.loads(plain)


def load_or_create_key(path: Path) -> bytes:
    """The key in ``path``, made (0600) when there is none; refused if others can read it."""
    if not path.exists():
        write_atomic(path, secrets.token_bytes(_KEY_BYTES), mode=0o600, durable=True)
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        raise ConfigError(
            f"{path} can be read by other users (mode {mode:o}); it unlocks stored task "
            f"input: run chmod 600 {path}"
        )
    with path.open("rb") as f:
        key = f.read(_KEY_BYTES + 1)
    if len(key) != _KEY_BYTES:
        raise ConfigError(f"{path} is not a sealing key ({len(key)} bytes, expected 32)")
    return key
