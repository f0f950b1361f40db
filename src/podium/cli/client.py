"""The CLI's HTTPS client for the server's API, and shared output helpers."""

from __future__ import annotations

import argparse
import json
import re
import ssl
import sys
from pathlib import Path
from typing import Any

from podium.config import default_cadir, default_datadir, env
from podium.errors import NotFound, PodiumError

DEFAULT_SERVER_URL = "https://127.0.0.1:8143"


def add_connection_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--server-url",
        help=f"the server's API URL (default $PODIUM_SERVER_URL or {DEFAULT_SERVER_URL})",
    )
    p.add_argument(
        "--cacert",
        type=Path,
        help="CA certificate to verify the server (default $PODIUM_CACERT, else the local CA's)",
    )
    p.add_argument(
        "--token",
        help="API token (default $PODIUM_TOKEN, the file $PODIUM_TOKEN_FILE, else the local "
        "server's admin-token)",
    )
    p.add_argument(
        "--format", choices=["human", "json"], default="human", help="output format (default human)"
    )


class ApiClient:
    """Calls ``/orchestrator/v1`` (or the server's API at ``api``, such as
    ``/classifier-api/v1``) and turns its errors into :class:`PodiumError`."""

    def __init__(
        self,
        server_url: str | None = None,
        cacert: Path | None = None,
        token: str | None = None,
        *,
        api: str = "/orchestrator/v1",
    ) -> None:
        import httpx

        self.server_url = (server_url or env("SERVER_URL") or DEFAULT_SERVER_URL).rstrip("/")
        ca = cacert or (Path(v) if (v := env("CACERT")) else default_cadir() / "ca_crt.pem")
        if not ca.exists():
            raise PodiumError(
                f"CA certificate {ca} not found: pass --cacert or set PODIUM_CACERT to the "
                "server's CA certificate (its datadir's ca/ca_crt.pem)",
                kind="podium/config-error",
            )
        try:
            context = ssl.create_default_context(cafile=str(ca))
        except ssl.SSLError as exc:
            raise PodiumError(
                f"{ca} holds no usable CA certificate ({exc.reason}); point --cacert or "
                "PODIUM_CACERT at the server's ca/ca_crt.pem",
                kind="podium/config-error",
            ) from exc
        token = token or _token()
        self._http = httpx.Client(
            base_url=self.server_url + api,
            verify=context,
            timeout=30.0,
            headers={"X-Authentication": token} if token else None,
        )
        self._httpx = httpx

    def close(self) -> None:
        """Close idle connections (a kept-alive one would hold up a server's shutdown)."""
        self._http.close()

    def __enter__(self) -> ApiClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @classmethod
    def from_args(cls, args: argparse.Namespace, *, api: str = "/orchestrator/v1") -> ApiClient:
        return cls(args.server_url, args.cacert, args.token, api=api)

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = self._http.request(method, path, **kwargs)
        except self._httpx.HTTPError as exc:
            raise PodiumError(
                f"cannot reach the server at {self.server_url}: {exc}; is `podium server` "
                "running, and is PODIUM_SERVER_URL right?",
                kind="podium/connection-error",
            ) from exc
        try:
            body = response.json()
        except ValueError:
            body = None
        if response.status_code >= 400:
            if isinstance(body, dict) and "msg" in body:
                cls = NotFound if response.status_code == 404 else PodiumError
                raise cls(body["msg"], kind=body.get("kind"), details=body.get("details"))
            raise PodiumError(
                f"the server answered HTTP {response.status_code}: {response.text[:200]}"
            )
        return body


def _token() -> str | None:
    """The API token: $PODIUM_TOKEN, the file in $PODIUM_TOKEN_FILE, or the local
    server's ``<datadir>/admin-token`` when this user can read it."""
    token = env("TOKEN")
    if token:
        return token.strip()
    named = env("TOKEN_FILE")
    path = Path(named) if named else default_datadir() / "admin-token"
    try:
        return path.read_text().strip() or None
    except OSError:
        if named:
            raise PodiumError(
                f"cannot read the token file {path}; check PODIUM_TOKEN_FILE",
                kind="podium/config-error",
            ) from None
        return None


def print_json(value: Any) -> None:
    json.dump(value, sys.stdout, indent=2, sort_keys=False)
    sys.stdout.write("\n")


def table(rows: list[list[str]], headers: list[str]) -> str:
    widths = [max(len(str(r[i])) for r in [headers, *rows]) for i in range(len(headers))]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    for row in rows:
        lines.append("  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    return "\n".join(lines)


_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def clean_text(text: str) -> str:
    """Text from nodes or task authors made safe for a terminal: control characters
    (escape sequences that retitle or repaint it) become U+FFFD."""
    return _CONTROL.sub("\ufffd", text)
