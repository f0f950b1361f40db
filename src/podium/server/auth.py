"""Who may call the server's APIs: one dependency every token-protected router uses.

Until users and roles exist, every API call carries the server's admin token in
``X-Authentication``.
"""

from __future__ import annotations

import hmac

from fastapi import Request

from podium.errors import Unauthenticated


def require_token(request: Request) -> None:
    """Every API call carries the API token in ``X-Authentication``."""
    given = request.headers.get("x-authentication")
    expected: str = request.app.state.runtime.admin_token
    if given is None:
        raise Unauthenticated(
            "this API needs a token in the X-Authentication header; the CLI reads it from "
            "PODIUM_TOKEN or PODIUM_TOKEN_FILE (the server's <datadir>/admin-token)"
        )
    if not hmac.compare_digest(given.encode(), expected.encode()):
        raise Unauthenticated("the token given in X-Authentication is not valid")
