"""The agent's few HTTPS calls to the server (enrollment, task files), on the stdlib.

They run in a worker thread; urllib keeps the agent's memory small.
"""

from __future__ import annotations

import ssl
import urllib.error
import urllib.request

from podium.errors import ConfigError, NotFound, PodiumError


class HttpError(PodiumError):
    kind = "podium.agent/http-error"

    def __init__(self, msg: str, *, status: int | None = None) -> None:
        super().__init__(msg, details={"status": status})
        self.http_status = status  # None when the server could not be reached

    @property
    def transient(self) -> bool:
        """Worth trying again later: no answer, or a server-side error."""
        return self.http_status is None or self.http_status >= 500


def request(
    url: str,
    *,
    context: ssl.SSLContext | None,
    method: str = "GET",
    body: bytes | None = None,
    content_type: str = "text/plain",
    timeout: float = 30.0,
    max_bytes: int = 256 * 1024 * 1024,
) -> bytes:
    """The body of a 2xx answer; :class:`NotFound` for 404, :class:`HttpError` otherwise."""
    if not url.startswith("https://"):
        raise ConfigError(f"{url}: the server URL must start with https://")
    req = urllib.request.Request(url, data=body, method=method)  # noqa: S310 (https only)
    if body is not None:
        req.add_header("Content-Type", content_type)
    try:
        with urllib.request.urlopen(req, context=context, timeout=timeout) as resp:  # noqa: S310
            data: bytes = resp.read(max_bytes + 1)
            if len(data) > max_bytes:
                raise HttpError(f"{url}: answer larger than {max_bytes} bytes", status=200)
            if resp.length:  # the connection ended before the announced length
                raise HttpError(f"{url}: the answer was cut off after {len(data)} bytes")
    except urllib.error.HTTPError as exc:
        detail = exc.read(2000).decode("utf-8", "replace").strip()
        if exc.code == 404:
            raise NotFound(f"{url}: {detail or 'not found'}") from exc
        raise HttpError(
            f"{method} {url} failed with HTTP {exc.code}: {detail}", status=exc.code
        ) from exc
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise HttpError(f"cannot reach {url}: {reason}") from exc
    return data
