"""Tokens for in-process tests of the API."""

from __future__ import annotations

from podium.server.runtime import Runtime


def admin_token(runtime: Runtime) -> str:
    """A token of the admin superuser the server created at its first start."""
    return runtime.access.token_for("admin")
