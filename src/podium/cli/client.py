"""The CLI's HTTPS client for the server's API, and shared output helpers.

:meth:`ApiClient.stream_events` follows a job's events as Server-Sent Events (parsed by
the pure :class:`SseParser`), reconnecting with ``Last-Event-ID`` when the connection
drops, and reads the JSON pages of ``/jobs/:id/events`` from a server without SSE.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import ssl
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple, TypeVar

from podium.config import default_cadir, env
from podium.errors import NotFound, PodiumError, Unauthenticated

if TYPE_CHECKING:
    import httpx

DEFAULT_SERVER_URL = "https://127.0.0.1:8143"
TERMINAL_JOB_STATES = frozenset({"stopped", "finished", "failed"})


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
        help="API token (default $PODIUM_TOKEN, else the file $PODIUM_TOKEN_FILE, else the "
        "one `podium access login` saved)",
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
        timeout: float = 30.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        """``transport`` replaces the network (tests pass an ``httpx.MockTransport``)."""
        import httpx

        self.server_url = (server_url or env("SERVER_URL") or DEFAULT_SERVER_URL).rstrip("/")
        _check_server_url(self.server_url)
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
        try:
            self._http = httpx.Client(
                base_url=self.server_url + api,
                verify=context,
                timeout=timeout,
                headers={"X-Authentication": token} if token else None,
                transport=transport,
            )
        except httpx.InvalidURL as exc:
            raise PodiumError(
                f"the server URL {self.server_url!r} is not a valid URL ({exc}); check "
                "PODIUM_SERVER_URL or --server-url",
                kind="podium/config-error",
            ) from exc
        self._httpx = httpx
        self._cacert = ca
        self._timeout = timeout
        self._has_token = bool(token)

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
            raise self._transport_error(exc) from exc
        try:
            body = response.json()
        except ValueError:
            body = None
        if response.status_code >= 400:
            raise self._error(response.status_code, body, response.text)
        return body

    def _error(self, status: int, body: Any, text: str) -> PodiumError:
        """The exception for an HTTP error answer: the API's ``{kind, msg, details}``."""
        if status == 401:
            return self._unauthenticated(body)
        if isinstance(body, dict) and "msg" in body:
            cls = NotFound if status == 404 else PodiumError
            return cls(body["msg"], kind=body.get("kind"), details=body.get("details"))
        return PodiumError(f"the server answered HTTP {status}: {text[:200]}")

    # Following a job
    def stream_events(
        self,
        job_id: str,
        last_event_id: str | None = None,
        *,
        retries: int = 5,
        backoff: float = 0.5,
        read_timeout: float = 90.0,
        poll: float = 0.25,
        sleep: Callable[[float], object] = time.sleep,
    ) -> Iterator[dict[str, Any]]:
        """The job's events from the one after ``last_event_id`` (from the first without
        it) up to its ``job_finished``, which ends the iteration.

        A dropped connection is taken up again after the last event yielded (the
        ``Last-Event-ID`` header), waiting ``backoff`` seconds, then twice that, and so
        on; after ``retries`` attempts in a row that brought nothing, a
        :class:`PodiumError` says the server stays away. ``read_timeout`` bounds the
        silence between two lines (the server sends keepalives). A server that answers
        with the JSON pages instead of a stream is polled every ``poll`` seconds.
        """
        httpx, path = self._httpx, f"/jobs/{job_id}/events"
        last, failures = last_event_id, 0
        while True:
            headers = {"Accept": "text/event-stream"}
            if last is not None:
                headers["Last-Event-ID"] = last
            cause: Exception | None = None
            try:
                with self._http.stream(
                    "GET",
                    path,
                    headers=headers,
                    params={"start": _next_start(last)},
                    timeout=httpx.Timeout(self._timeout, read=read_timeout),
                ) as response:
                    if response.status_code >= 400:
                        response.read()
                        error = self._error(
                            response.status_code, _json_or_none(response), response.text
                        )
                        if response.status_code < 500:
                            raise error
                        cause = error
                    elif "text/event-stream" not in response.headers.get("content-type", ""):
                        response.read()
                        yield from self._poll_events(path, response.json(), poll, sleep)
                        return
                    else:
                        parser, brought = SseParser(), 0
                        for line in response.iter_lines():
                            if line.startswith(":"):
                                failures = 0  # a keepalive: the server is there
                            sse = parser.line(line)
                            if sse is None:
                                continue
                            event = _event_of(sse)
                            last = str(event["id"]) if event.get("id") is not None else sse.id
                            failures, brought = 0, brought + 1
                            yield event
                            if event.get("type") == "job_finished":
                                return
                        if not brought and self._job_ended(job_id):
                            return  # nothing left after `last`: the job had ended before
            except httpx.HTTPError as exc:
                cause = exc
            failures += 1
            if failures > retries:
                reason = (
                    cause.msg
                    if isinstance(cause, PodiumError)
                    else self._transport_error(cause).msg
                    if cause is not None
                    else "it closed the stream before the job ended, again and again"
                )
                raise _connection_error(
                    f"lost the events of job {job_id}: {reason}. The job goes on without "
                    f"you watching: see it with `podium job show {job_id}`"
                ) from cause
            sleep(backoff * 2 ** (failures - 1))

    def _job_ended(self, job_id: str) -> bool:
        try:
            job = self.call("GET", f"/jobs/{job_id}")
        except NotFound:
            raise
        except PodiumError:
            return False  # the server is away: trying the stream again says so
        return isinstance(job, dict) and job.get("state") in TERMINAL_JOB_STATES

    def _poll_events(
        self, path: str, page: Any, poll: float, sleep: Callable[[float], object]
    ) -> Iterator[dict[str, Any]]:
        """Events from the JSON pages of ``/jobs/:id/events?start=``, ``page`` the first."""
        while True:
            items = page.get("items") or []
            for event in items:
                yield event
                if event.get("type") == "job_finished":
                    return
            if not items and page.get("job_state") in TERMINAL_JOB_STATES:
                return  # ended before this server wrote job_finished events
            if not items:
                sleep(poll)
            start = page["next-events"]["event"]
            page = self.call("GET", path, params={"start": start})

    def _transport_error(self, exc: Exception) -> PodiumError:
        """The sentence for a request that got no HTTP answer, from the cause at the
        bottom of httpx's exception (an ``ssl`` or ``socket`` error)."""
        httpx, url = self._httpx, self.server_url
        target = httpx.URL(url)
        host, port = target.host, target.port or 443
        causes = _causes(exc)
        verify = _first(causes, ssl.SSLCertVerificationError)
        if verify is not None:
            reason = verify.verify_message or verify.reason or str(verify)
            if verify.verify_code in _NAME_MISMATCH or "mismatch" in reason.lower():
                return _tls_error(
                    f"the certificate of the server at {url} is not valid for {host} "
                    f"({reason}): connect with a name the certificate holds, or start the "
                    f"server with --dns-alt-name {host} (it makes its certificate, in "
                    "<datadir>/ssl, at first start)"
                )
            return _tls_error(
                f"the certificate of the server at {url} failed verification ({reason}): "
                "PODIUM_CACERT or --cacert must be the server's CA certificate, "
                f"<datadir>/ca/ca_crt.pem (this used {self._cacert})"
            )
        tls = _first(causes, ssl.SSLError)
        if tls is not None and (
            tls.reason in _PLAIN_HTTP_REASONS or "wrong version number" in str(tls)
        ):
            return _connection_error(
                f"the server at {url} answered in plain HTTP, not HTTPS: point "
                "PODIUM_SERVER_URL or --server-url at the Podium server's HTTPS port "
                f"(default {DEFAULT_SERVER_URL})"
            )
        if isinstance(exc, httpx.RemoteProtocolError):
            return _connection_error(
                f"the server at {url} closed the connection without an HTTP answer: is "
                f"{url} the Podium server's HTTPS API (default {DEFAULT_SERVER_URL}), "
                "and is the server still running?"
            )
        if _first(causes, ConnectionRefusedError) is not None:
            return _connection_error(
                f"cannot reach the server at {url}: connection refused, nothing listens on "
                f"port {port} of {host}; is `podium server` running, and is "
                "PODIUM_SERVER_URL (--server-url) right?"
            )
        unknown = _first(causes, socket.gaierror)
        if unknown is not None:
            return _connection_error(
                f"cannot reach the server at {url}: the host name {host} does not resolve "
                f"({unknown.strerror}); check the host in PODIUM_SERVER_URL (--server-url)"
            )
        if isinstance(exc, httpx.ConnectTimeout):
            return _connection_error(
                f"cannot reach the server at {url}: no TLS connection within "
                f"{self._timeout:g} s; is the host up, does a firewall let port {port} "
                "through, and is it the Podium server's port?"
            )
        if isinstance(exc, httpx.TimeoutException):
            return _connection_error(
                f"the server at {url} did not answer within {self._timeout:g} s; it may be "
                "overloaded or stuck: see its log"
            )
        return _connection_error(
            f"cannot reach the server at {url}: {exc}; is `podium server` running, and is "
            "PODIUM_SERVER_URL right?"
        )

    def _unauthenticated(self, body: Any) -> Unauthenticated:
        """A 401, said with how to get a token (the server's own message says whether
        the one given is unknown, expired or revoked)."""
        said = body.get("msg") if isinstance(body, dict) else None
        if self._has_token:
            why = (said or "the token is not valid").split(";")[0]
            problem = f"refused your token ({why})"
        else:
            problem = "needs you to log in"
        return Unauthenticated(
            f"the server at {self.server_url} {problem}: run `podium access login`, or give "
            "a token with --token, PODIUM_TOKEN or PODIUM_TOKEN_FILE",
            details=body.get("details") if isinstance(body, dict) else None,
        )


class SseEvent(NamedTuple):
    """One event of a Server-Sent Events stream: its ``id:``, ``event:`` and ``data:``."""

    id: str | None
    event: str
    data: str


class SseParser:
    """The ``text/event-stream`` format, a line at a time (lines without their end, as
    ``httpx``'s ``iter_lines`` gives them): ``field: value`` lines, ``:`` comments
    (keepalives), and a blank line that ends an event. An event cut off before its
    blank line is never returned, which is what makes resuming after the last id
    returned exact."""

    def __init__(self) -> None:
        self.last_id: str | None = None
        self._event = ""
        self._data: list[str] = []

    def line(self, line: str) -> SseEvent | None:
        """Take one line; the event it completes, if it is the blank line ending one."""
        if not line:
            data, event = self._data, self._event or "message"
            self._data, self._event = [], ""
            if not data:
                return None
            return SseEvent(self.last_id, event, "\n".join(data))
        if line.startswith(":"):
            return None
        field, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if field == "data":
            self._data.append(value)
        elif field == "event":
            self._event = value
        elif field == "id" and "\0" not in value:
            self.last_id = value
        return None  # "retry" and unknown fields: nothing to do here


def _event_of(sse: SseEvent) -> dict[str, Any]:
    """The event view an SSE event carries, its id and type filled in from the stream's."""
    try:
        event = json.loads(sse.data)
    except ValueError as exc:
        raise PodiumError(
            f"the server sent event {sse.id} with data that is not JSON: {sse.data[:100]!r}"
        ) from exc
    if not isinstance(event, dict):
        raise PodiumError(f"the server sent event {sse.id} with data that is not an object")
    event.setdefault("id", sse.id)
    event.setdefault("type", sse.event)
    event.setdefault("details", {})
    return event


def _next_start(last: str | None) -> int:
    """``?start=`` for the event after ``last`` (for a server without Last-Event-ID)."""
    return int(last) + 1 if last is not None and last.isascii() and last.isdigit() else 0


def _json_or_none(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


# X509_V_ERR_HOSTNAME_MISMATCH, X509_V_ERR_IP_ADDRESS_MISMATCH
_NAME_MISMATCH = {62, 64}
# What OpenSSL says when a TLS client reads a plain-HTTP answer.
_PLAIN_HTTP_REASONS = {"WRONG_VERSION_NUMBER", "RECORD_LAYER_FAILURE", "PACKET_LENGTH_TOO_LONG"}


def _check_server_url(url: str) -> None:
    """Refuse a URL that is not ``https://``: the server speaks only HTTPS, and a
    plain-HTTP request would carry the API token in the clear."""
    scheme, sep, rest = url.partition("://")
    if sep and scheme.lower() == "https" and rest:
        return
    if sep and scheme.lower() == "http":
        raise PodiumError(
            f"the server URL {url} is plain HTTP, but the Podium server speaks only HTTPS "
            f"(and the API token must not travel in the clear): use https://{rest}",
            kind="podium/config-error",
        )
    raise PodiumError(
        f"the server URL {url!r} must be an https:// URL, such as {DEFAULT_SERVER_URL}; "
        "check PODIUM_SERVER_URL or --server-url",
        kind="podium/config-error",
    )


def _causes(exc: BaseException) -> list[BaseException]:
    """``exc`` and the exceptions it was raised from, outermost first."""
    chain: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in chain:
        chain.append(current)
        current = current.__cause__ or current.__context__
    return chain


_E = TypeVar("_E", bound=BaseException)


def _first(causes: list[BaseException], kind: type[_E]) -> _E | None:
    return next((c for c in causes if isinstance(c, kind)), None)


def _tls_error(msg: str) -> PodiumError:
    return PodiumError(msg, kind="podium/tls-error")


def _connection_error(msg: str) -> PodiumError:
    return PodiumError(msg, kind="podium/connection-error")


def token_file() -> Path:
    """Where the API token is read from, and where ``podium access login`` saves it:
    $PODIUM_TOKEN_FILE, else ``podium/token`` in the user's config folder."""
    named = env("TOKEN_FILE")
    if named:
        return Path(named)
    config = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(config) / "podium" / "token"


def _token() -> str | None:
    """The API token: $PODIUM_TOKEN, else the content of :func:`token_file`."""
    token = env("TOKEN")
    if token:
        return token.strip()
    named = env("TOKEN_FILE")
    path = token_file()
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
    """Aligned columns; every cell goes through :func:`clean_line`, so a newline or an
    escape sequence in a value can neither forge a row nor reach the terminal."""
    rows = [[clean_line(str(c)) for c in row] for row in rows]
    headers = [clean_line(str(h)) for h in headers]
    widths = [max(len(r[i]) for r in [headers, *rows]) for i in range(len(headers))]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    for row in rows:
        lines.append("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    return "\n".join(lines)


# C0 but tab and newline, DEL, C1 (U+009B is CSI to some terminals), and the lone
# surrogates JSON can carry, which would make printing raise.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\ud800-\udfff]")
_CONTROL_OR_BREAK = re.compile(r"[\x00-\x1f\x7f-\x9f\ud800-\udfff]")


def clean_text(text: str) -> str:
    """Text from nodes or task authors made safe for a terminal: control characters
    become U+FFFD, so ESC (and with it every escape sequence that retitles or repaints
    the terminal), BEL, CR (which would overwrite a line) and backspace. Newlines and
    tabs stay: use this for output meant to span lines, one line at a time where the
    lines are indented, and :func:`clean_line` for everything else."""
    return _CONTROL.sub("\ufffd", text)


def clean_line(text: str) -> str:
    """:func:`clean_text` for text that must stay on one line (a table cell, a name, a
    label): newlines and tabs become U+FFFD too."""
    return _CONTROL_OR_BREAK.sub("\ufffd", text)
