"""Passwords and tokens: slow salted hashes for one, fast digests of random secrets for
the other (pure, apart from the randomness).

Passwords are hashed with Argon2id (argon2-cffi's defaults, RFC 9106's second
recommendation); a hash made with older parameters is re-hashed at the next login.
Tokens are 256 random bits; only their SHA-256 is stored, so a copy of the database
lets nobody in.
"""

from __future__ import annotations

import hashlib
import secrets
from typing import Final

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from podium.errors import ValidationError

MIN_PASSWORD: Final = 8
MAX_PASSWORD: Final = 1024  # Argon2 takes any length; a megabyte would be a cheap attack

# Replaced in tests by a cheap one: the parameters are in every hash, so verification
# works across both.
hasher = PasswordHasher()

# What a login is checked against when the user does not exist, so that an unknown
# login costs as much as a wrong password.
_DUMMY: str | None = None


def check_password_rules(password: str) -> None:
    if len(password) < MIN_PASSWORD:
        raise ValidationError(f"a password has at least {MIN_PASSWORD} characters")
    if len(password) > MAX_PASSWORD:
        raise ValidationError(f"a password has at most {MAX_PASSWORD} characters")


def hash_password(password: str) -> str:
    check_password_rules(password)
    return hasher.hash(password)


def verify_password(stored: str | None, password: str) -> bool:
    """Whether ``password`` matches ``stored`` (None: no such user, checked all the same)."""
    global _DUMMY
    if len(password) > MAX_PASSWORD:
        return False
    if stored is None:
        if _DUMMY is None:
            _DUMMY = hasher.hash(secrets.token_urlsafe(16))
        stored = _DUMMY
        password = password + "\x00"  # never matches
    try:
        return hasher.verify(stored, password)
    except (VerificationError, InvalidHashError):
        return False


def needs_rehash(stored: str) -> bool:
    try:
        return hasher.check_needs_rehash(stored)
    except InvalidHashError:
        return True


def new_token() -> str:
    return secrets.token_urlsafe(32)


def token_digest(token: str) -> str:
    """What is stored of a token, and what it is looked up by."""
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()
