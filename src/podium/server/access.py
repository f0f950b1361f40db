"""The one way in: every route declares who may call it, checked before its body is read.

A route says its rule with ``openapi_extra=allow(RULE)`` (it shows in the OpenAPI
schema as ``x-podium-access``), on a router whose ``route_class`` is
:class:`GuardedRoute`; a route without one cannot be built. Rules:

- ``"open"``: anyone (Puppet's CA enrollment, logging in, the status page);
- ``"node"``: an agent with an unrevoked certificate from Podium's CA;
- ``"authenticated"``: any valid token; the route decides the rest (e.g. stopping
  one's own job);
- ``"<object_type>:<action>"``: a token whose roles grant that permission on some
  instance; the route narrows it to the task, plan or nodes asked for.

A route may also let in, without a token, the holders of the certificates named by
``--puppetdb-client`` (``allow(RULE, puppetdb_clients=True)``): a site's Puppet Servers,
whose PuppetDB terminus shows its certificate from Podium's CA and sends no token.

Tokens come in ``X-Authentication`` or ``Authorization: Bearer``. The check runs
before FastAPI reads and parses the body, so an unauthenticated request costs its
headers and nothing more. Then text that no answer or database could hold (a lone
surrogate, a JSON body that is not UTF-8) is refused with a 400, whatever the route.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Annotated, Any, Final, Literal

import orjson
from fastapi import Depends, Request, Response
from fastapi.routing import APIRoute

from podium.errors import NotPermitted, Unauthenticated, ValidationError
from podium.rbac.permissions import TYPES
from podium.rbac.service import Principal, node_principal
from podium.rbac.store import Activity
from podium.server.peer import CERT_NAME, require_node_certificate

RULE_KEY: Final = "x-podium-access"
CLIENTS_KEY: Final = "x-podium-puppetdb-clients"
_SURROGATE: Final = re.compile("[\ud800-\udfff]")
_MAX_TOKEN: Final = 512
_KNOWN: Final = {f"{t.object_type}:{a.name}" for t in TYPES for a in t.actions}
_HOW: Final = (
    "log in with `podium access login`, or send a token in the X-Authentication or "
    "Authorization: Bearer header"
)


@dataclass(frozen=True)
class Rule:
    kind: Literal["open", "node", "authenticated", "permission"]
    object_type: str = ""
    action: str = ""

    def __str__(self) -> str:
        return f"{self.object_type}:{self.action}" if self.kind == "permission" else self.kind


def parse_rule(text: str) -> Rule:
    if text in ("open", "node", "authenticated"):
        return Rule(text)  # type: ignore[arg-type]
    if text in _KNOWN:
        object_type, action = text.split(":")
        return Rule("permission", object_type, action)
    raise ValueError(f"unknown access rule {text!r}: open, node, authenticated or a permission")


def allow(rule: str, *, puppetdb_clients: bool = False) -> dict[str, Any]:
    """The ``openapi_extra`` that declares a route's rule; with ``puppetdb_clients``, the
    certificates of ``--puppetdb-client`` are let in without a token too."""
    parse_rule(rule)
    extra: dict[str, Any] = {RULE_KEY: rule}
    if puppetdb_clients:
        extra[CLIENTS_KEY] = True
    return extra


class GuardedRoute(APIRoute):
    """An API route that authenticates and authorizes its caller before anything else."""

    def __init__(self, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
        extra = kwargs.get("openapi_extra") or {}
        if RULE_KEY not in extra:
            raise TypeError(
                f"the route {path} declares no access rule: give it openapi_extra=allow(...)"
            )
        self.rule = parse_rule(extra[RULE_KEY])
        self.puppetdb_clients = bool(extra.get(CLIENTS_KEY))
        super().__init__(path, endpoint, **kwargs)

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        rule, clients = self.rule, self.puppetdb_clients
        json_body = self.body_field is not None  # FastAPI parses it; others use orjson

        async def guarded(request: Request) -> Response:
            request.state.principal = await _gate(request, rule, puppetdb_clients=clients)
            await _check_text(request, json_body=json_body)
            return await handler(request)

        return guarded


async def _gate(
    request: Request, rule: Rule, *, puppetdb_clients: bool = False
) -> Principal | None:
    if rule.kind == "open":
        return None
    if rule.kind == "node":
        return node_principal(require_node_certificate(request))
    if puppetdb_clients and not _sends_token(request):
        return node_principal(_puppetdb_client(request))
    token = _token(request)
    access = request.app.state.runtime.access
    principal: Principal = access.cached(token) or await asyncio.to_thread(access.principal, token)
    if rule.kind == "permission" and not principal.allows(rule.object_type, rule.action):
        raise NotPermitted(
            f"{principal.login} may not do this: it needs the permission {rule}; ask an "
            "administrator for a role that grants it",
            kind="puppetlabs.rbac/permission-denied",
            details={"permission": str(rule)},
        )
    return principal


async def _check_text(request: Request, *, json_body: bool) -> None:
    """Refuse (400) text that no answer, log or database could hold: a lone surrogate in
    a path or query parameter or in a JSON body (Python's parser takes ``"\\ud800"``),
    a JSON body that is not UTF-8. What else a body gets wrong, FastAPI tells."""
    params = (*request.path_params.items(), *request.query_params.multi_items())
    for name, value in params:
        if _SURROGATE.search(name) or (isinstance(value, str) and _SURROGATE.search(value)):
            raise ValidationError(
                f"the parameter {name!a} is not valid text: it holds a lone surrogate",
                details={"parameter": name.encode(errors="replace").decode()},
            )
    if not json_body or not _is_json(request.headers.get("content-type", "")):
        return
    body = await request.body()  # kept by Starlette for the route to parse
    try:
        orjson.loads(body)  # strict: valid UTF-8 and no lone surrogates, or an error
        return
    except orjson.JSONDecodeError:
        pass  # empty, NaN, a syntax error...: FastAPI's parser will say, unless it is text
    try:
        value = json.loads(body.decode())
        json.dumps(value, ensure_ascii=False).encode()
    except UnicodeError:
        raise ValidationError(
            "the request body is not valid text: JSON is UTF-8, without lone surrogates "
            "(\\ud800 to \\udfff that are not a pair)"
        ) from None
    except (ValueError, RecursionError):
        return


def _is_json(content_type: str) -> bool:
    media = content_type.partition(";")[0].strip().lower()
    return media == "application/json" or (
        media.startswith("application/") and media.endswith("+json")
    )


def _sends_token(request: Request) -> bool:
    return "x-authentication" in request.headers or "authorization" in request.headers


def _puppetdb_client(request: Request) -> str:
    """The certname of a caller without a token whose certificate is one of
    ``--puppetdb-client`` (and not revoked); else why it is not let in."""
    name = (request.scope.get("state") or {}).get(CERT_NAME)
    if name is None:
        raise Unauthenticated(f"this API needs a token: {_HOW}")
    if name not in request.app.state.runtime.settings.puppetdb_clients:
        raise Unauthenticated(
            f"the certificate of {name} is not one of the server's --puppetdb-client, and "
            f"no token was sent: start the server with --puppetdb-client {name} if it is a "
            f"Puppet Server's, or send a token ({_HOW})",
            details={"certname": name},
        )
    return require_node_certificate(request)


def _token(request: Request) -> str:
    token = request.headers.get("x-authentication")
    if token is None:
        scheme, _, value = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            token = value.strip()
    if token is None:
        raise Unauthenticated(f"this API needs a token: {_HOW}")
    if not token or len(token) > _MAX_TOKEN or not token.isascii() or not token.isprintable():
        raise Unauthenticated(f"the token given is not valid: {_HOW}")
    return token


def _principal(request: Request) -> Principal:
    principal: Principal | None = getattr(request.state, "principal", None)
    if principal is None:  # an open route asked for a caller
        raise Unauthenticated(f"this needs a token: {_HOW}")
    return principal


async def _current(request: Request) -> Principal:  # async: no hop to the thread pool
    return _principal(request)


CurrentPrincipal = Annotated[Principal, Depends(_current)]


def address(request: Request) -> str:
    return request.client.host if request.client is not None else ""


async def audit(
    request: Request,
    principal: Principal,
    *,
    service: str,
    type: str,
    object_type: str,
    object_id: str,
    object_name: str,
    message: str,
) -> None:
    """Add an entry to the activity log: ``principal`` did ``type`` to an object."""
    entry = Activity(
        service=service,
        type=type,
        subject_name=principal.login,
        subject_id=principal.id,
        object_type=object_type,
        object_id=object_id,
        object_name=object_name,
        message=message,
        address=address(request) or None,
    )
    await asyncio.to_thread(request.app.state.runtime.access.record, entry)


def routes_of(app: Any) -> list[Any]:
    """Every route of ``app``, those of included routers too (FastAPI keeps an included
    router whole and resolves its routes when asked)."""
    out = []
    for route in app.routes:
        contexts = getattr(route, "effective_route_contexts", None)
        if contexts is None:
            out.append(route)
        else:
            out.extend(context.original_route for context in contexts())
    return out
