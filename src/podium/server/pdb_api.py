"""PuppetDB 7's HTTP API over the inventory: commands, queries, version and status.

``POST /pdb/cmd/v1`` takes "replace facts" (v4, v5), "store report" (v5 to v8),
"replace catalog" (v8, v9) and "deactivate node" (v3), with the command in the query
string and the payload as the body (gzipped or not, as Puppet's PuppetDB terminus sends
it), or all of it in the body (PuppetDB's older form). A 200 means the command is
queued, as in PuppetDB: one writer thread stores whatever has queued up, each run of
commands of one kind as one transaction (:class:`CommandWriter`).
``secondsToWaitForCompletion`` waits until it is stored; so does every submitter while
too many commands wait. Payloads that cannot be stored are a 400 before they are
queued; the queue is written out when the server stops.

``/pdb/query/v4`` takes PQL or AST with PuppetDB's paging parameters; its entity
endpoints take AST. Errors are Podium's ``{kind, msg, details}`` with PuppetDB's
status codes and messages (see ``docs/inventory.md``).
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
import time
import uuid
import zlib
from collections.abc import AsyncIterator, Callable, Collection
from concurrent.futures import Future
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final, TypeVar

import orjson
from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import Response

from podium.errors import NotFound, PodiumError, ValidationError
from podium.inventory.facts import digest as facts_digest
from podium.inventory.query import QUERY_ERROR, aggregate_event_counts, event_counts, run_query
from podium.inventory.query.checks import parse_timestamp
from podium.inventory.query.decode import iso
from podium.inventory.reports import Catalog, Report, parse_catalog, parse_report
from podium.inventory.store import FactsCommand, InventoryStore
from podium.protocol.names import validate_certname
from podium.server.access import GuardedRoute, allow
from podium.server.views import ERRORS

PUPPETDB_VERSION: Final = "7.12.1"  # what clients see; they compare the major version
MAX_COMMAND_BYTES: Final = 32 * 1024 * 1024
_CAP: Final = MAX_COMMAND_BYTES + 1  # what is unpacked at most: one byte more says too much
_KIND: Final = "puppetlabs.puppetdb/invalid-command"
_QUERY_KIND: Final = QUERY_ERROR
_COMMANDS: Final = {
    "replace facts": (4, 5),
    "store report": (5, 6, 7, 8),
    "replace catalog": (8, 9),
    "deactivate node": (3,),
    "replace catalog inputs": (1,),  # taken and not kept (Podium keeps no catalog inputs)
}
_QUERY_PARAMETERS: Final = frozenset(
    {"query", "limit", "offset", "order_by", "include_total", "pretty", "origin"}
    | {"optimize_drop_unused_joins", "ast_only"}
)

log = logging.getLogger(__name__)


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    yield
    writer: CommandWriter | None = getattr(app.state, "pdb_writer", None)
    if writer is not None:  # what was queued is stored before the server stops
        await asyncio.to_thread(writer.join)


router = APIRouter(route_class=GuardedRoute, lifespan=_lifespan, responses=ERRORS)
_Endpoint = TypeVar("_Endpoint", bound=Callable[..., Any])

# What the routes read themselves, for the OpenAPI schema.
_PAGING: Final = {
    "query": {"type": ["string", "array"], "description": "PQL, or AST as JSON"},
    "limit": {"type": "integer"},
    "offset": {"type": "integer"},
    "order_by": {"type": ["string", "array"], "description": "as JSON"},
    "include_total": {"type": "boolean"},
    "pretty": {"type": "boolean"},
}
_TEXT: Final = {"type": "string"}
_AS_JSON: Final = ("query", "order_by")  # in a query string, JSON (or PQL) text
_QUERY_GET: Final = allow("nodes:view_data", puppetdb_clients=True) | {
    "parameters": [
        {"name": name, "in": "query", "schema": _TEXT if name in _AS_JSON else schema}
        for name, schema in _PAGING.items()
    ]
}
_QUERY_POST: Final = allow("nodes:view_data", puppetdb_clients=True) | {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": {"type": "object", "properties": _PAGING}}},
    }
}
_COMMAND: Final = allow("nodes:edit_data", puppetdb_clients=True) | {
    "parameters": [
        {"name": "command", "in": "query", "schema": {"type": "string"}},
        {"name": "version", "in": "query", "schema": {"type": "integer"}},
        {"name": "certname", "in": "query", "schema": {"type": "string"}},
        {"name": "secondsToWaitForCompletion", "in": "query", "schema": {"type": "number"}},
    ],
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": {"type": "object"}}},
    },
}


def _query(
    path: str, *, extra: dict[str, dict[str, Any]] | None = None
) -> Callable[[_Endpoint], _Endpoint]:
    """A query endpoint, GET with a query string or POST with a JSON map: a route per
    method, so that each has an operation id of its own in the OpenAPI schema.
    ``extra`` are parameters of its own, beyond the paging ones."""
    get, post = _QUERY_GET, _QUERY_POST
    if extra:
        strings = [  # in a query string, what may be JSON is text
            {"name": name, "in": "query", "schema": _TEXT if schema["type"] != "string" else schema}
            for name, schema in extra.items()
        ]
        body = {"type": "object", "properties": _PAGING | extra}
        get = get | {"parameters": [*get["parameters"], *strings]}
        post = post | {"requestBody": {"required": True, "content": {_JSON_TYPE: {"schema": body}}}}

    def register(endpoint: _Endpoint) -> _Endpoint:
        router.get(path, openapi_extra=get)(endpoint)
        router.post(path, openapi_extra=post)(endpoint)
        return endpoint

    return register


_JSON_TYPE: Final = "application/json"
# event-counts' own parameters (aggregate-event-counts takes them too, but no paging).
_COUNTING: Final[dict[str, dict[str, Any]]] = {
    "summarize_by": {"type": "string", "description": "certname, resource, containing_class"},
    "count_by": {"type": "string", "description": "resource or certname"},
    "counts_filter": {"type": ["string", "array"], "description": "AST on the counts, as JSON"},
}


@dataclass(frozen=True)
class Command:
    """A command as submitted: facts to replace, a report to store, a catalog to
    replace, or a node to deactivate (``deactivate_at``)."""

    certname: str
    facts: FactsCommand | None = None
    report: Report | None = None
    catalog: Catalog | None = None
    deactivate_at: datetime | None = None

    @property
    def kind(self) -> str:
        if self.facts is not None:
            return "facts"
        if self.report is not None:
            return "report"
        return "catalog" if self.catalog is not None else "deactivate"


class CommandWriter:
    """Commands waiting to be stored, and the thread that stores them in batches.

    The thread starts with the first command and stores what has queued up as one
    transaction, having waited up to ``linger`` seconds for more (group commit: a fleet
    reconnecting is hundreds of commands a transaction, not one); it ends after ``idle``
    seconds without commands. Each run of commands of one kind (facts, reports,
    catalogs) is one transaction; a run that a bad document makes fail is written again
    one command at a time, so that only that command fails.
    """

    def __init__(
        self,
        inventory: InventoryStore,
        *,
        # Limits
        max_batch: int = 500,
        max_pending: int = 500,
        # Timeouts
        linger: float = 0.05,
        idle: float = 2.0,
    ) -> None:
        self.inventory = inventory
        self.max_batch = max_batch
        self.max_pending = max_pending  # beyond: submitters wait for their command
        self.linger = linger
        self.idle = idle
        self._cond = threading.Condition()
        self._pending: list[tuple[Command, Future[str]]] = []
        self._busy = False
        self._thread: threading.Thread | None = None

    @property
    def depth(self) -> int:
        return len(self._pending)

    def submit(self, command: Command) -> Future[str]:
        future: Future[str] = Future()
        with self._cond:
            self._pending.append((command, future))
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="podium-inventory-writer", daemon=True
                )
                self._thread.start()
            elif len(self._pending) in (1, self.max_batch):  # idle, or a batch is full
                self._cond.notify_all()
        return future

    def join(self) -> None:
        """Until every command submitted so far is stored (or failed)."""
        with self._cond:
            while self._pending or self._busy:
                self._cond.wait()

    def _run(self) -> None:
        while True:
            with self._cond:
                if not self._wait_for_commands():
                    self._thread = None
                    return
                batch = self._pending[: self.max_batch]
                del self._pending[: self.max_batch]
                self._busy = True
            try:
                self._write(batch)
            finally:
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()

    def _wait_for_commands(self) -> bool:
        """With the lock held: wait for a batch; False after ``idle`` s without one."""
        give_up = time.monotonic() + self.idle
        while not self._pending:
            left = give_up - time.monotonic()
            if left <= 0:
                return False
            self._cond.wait(left)
        full = time.monotonic() + self.linger
        while len(self._pending) < self.max_batch:
            left = full - time.monotonic()
            if left <= 0:
                break
            self._cond.wait(left)
        return True

    def _write(self, batch: list[tuple[Command, Future[str]]]) -> None:
        run: list[tuple[Command, Future[str]]] = []
        for item in [*batch, None]:  # runs of one kind, each one transaction, in order
            if item is not None and run and item[0].kind == run[0][0].kind:
                run.append(item)
                continue
            if run:
                self._store(run)
            run = [] if item is None else [item]

    def _store(self, run: list[tuple[Command, Future[str]]]) -> None:
        kind = run[0][0].kind
        if kind == "deactivate":
            for command, future in run:
                self._settle(
                    future, self.inventory.deactivate_node, command.certname, command.deactivate_at
                )
            return
        store: Callable[[Any], list[str]]
        items: list[Any]
        if kind == "facts":
            store, items = self.inventory.replace_facts_many, [c.facts for c, _ in run]
        elif kind == "report":
            store, items = self.inventory.store_reports, [c.report for c, _ in run]
        else:
            store, items = self.inventory.replace_catalogs, [c.catalog for c, _ in run]
        try:
            statuses = store(items)
        except ValidationError:
            if len(run) == 1:
                self._settle(run[0][1], store, items)
                return
            for one in run:
                self._store([one])
            return
        except BaseException as error:
            for _, future in run:
                _failed(future, error)
            return
        for (_, future), status in zip(run, statuses, strict=True):
            future.set_result(status)

    @staticmethod
    def _settle(future: Future[str], call: Any, *args: Any) -> None:
        try:
            result = call(*args)
        except BaseException as error:
            _failed(future, error)
        else:
            future.set_result(result[0] if isinstance(result, list) else result)


def _failed(future: Future[str], error: BaseException) -> None:
    """A command that could not be stored: its submitter may have gone (it was told the
    command was queued), so the log says so too."""
    message = error.msg if isinstance(error, PodiumError) else repr(error)
    log.error("a command could not be stored: %s", message)
    future.set_exception(error)


def _inventory(request: Request) -> InventoryStore:
    return InventoryStore.of(request.app.state.runtime.store)


def _writer(request: Request) -> CommandWriter:
    state = request.app.state
    writer: CommandWriter | None = getattr(state, "pdb_writer", None)
    if writer is None:
        writer = state.pdb_writer = CommandWriter(_inventory(request))
    return writer


# Commands


@router.post("/pdb/cmd/v1", openapi_extra=_COMMAND)
async def command(request: Request) -> Response:
    params = request.query_params
    body = await _body(request)
    name = params.get("command")
    if name is not None:  # the command in the query string, the payload as the body
        version, certname, payload = params.get("version"), params.get("certname"), body
    else:
        if not isinstance(body, dict) or "command" not in body or "payload" not in body:
            raise _invalid(
                None,
                None,
                "The request body must be a JSON map with keys command, version and payload.",
            )
        name, version, payload = body["command"], body.get("version"), body["payload"]
        certname = body.get("certname")
    parsed = _parse_command(str(name).replace("_", " "), version, certname, payload)
    wait = _seconds(params.get("secondsToWaitForCompletion"))  # checked before it is queued
    if parsed is None:  # a Puppet Server's terminus sends it after some catalogs
        return _json({"uuid": str(uuid.uuid4()), "status": "ignored"})
    writer = _writer(request)
    future = writer.submit(parsed)
    answer: dict[str, Any] = {"uuid": str(uuid.uuid4())}
    if wait is None and writer.depth <= writer.max_pending:
        return _json(answer)  # queued, as PuppetDB answers
    try:  # asked to wait, or too much waiting already: back-pressure
        outcome = await asyncio.wait_for(asyncio.shield(asyncio.wrap_future(future)), wait)
    except TimeoutError:
        return _json(answer | {"processed": False, "timed_out": True})
    if wait is not None:
        answer |= {"processed": True, "timed_out": False}
    if outcome != "incorporated":
        answer["status"] = outcome  # Podium's: a stale command changed nothing
    return _json(answer)


def _seconds(text: str | None) -> float | None:
    """``secondsToWaitForCompletion``, if given."""
    if text is None:
        return None
    try:
        seconds = float(text)
    except ValueError:
        seconds = math.nan
    if not 0 <= seconds < math.inf:
        raise ValidationError(
            f"secondsToWaitForCompletion is a number of seconds, not {text!r}", kind=_KIND
        )
    return seconds


async def _body(request: Request) -> Any:
    """The request's JSON body, gunzipped first when it says it is gzip (the PuppetDB
    terminus compresses its commands); never more than the cap, packed or not."""
    encoding = request.headers.get("content-encoding", "identity").strip().lower()
    if encoding not in ("identity", "gzip"):
        raise ValidationError(f"Content-Encoding {encoding!r} is not taken: send gzip or nothing")
    unpack = zlib.decompressobj(wbits=31) if encoding == "gzip" else None
    data = bytearray()
    try:
        async for chunk in request.stream():  # never more than the cap in memory
            data += chunk if unpack is None else unpack.decompress(chunk, _CAP - len(data))
            if len(data) > MAX_COMMAND_BYTES or (unpack is not None and unpack.unconsumed_tail):
                raise ValidationError(
                    f"Command size exceeds max-command-size ({MAX_COMMAND_BYTES} bytes)"
                )
        if unpack is not None:
            data += unpack.flush()
            if not unpack.eof:
                raise ValidationError("the gzipped request body is cut short")
            if len(data) > MAX_COMMAND_BYTES:
                raise ValidationError(
                    f"Command size exceeds max-command-size ({MAX_COMMAND_BYTES} bytes)"
                )
    except zlib.error as error:
        raise ValidationError(f"the request body is not valid gzip: {error}", kind=_KIND) from None
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as error:
        raise ValidationError(f"the request body is not JSON: {error}", kind=_KIND) from error


def _parse_command(name: str, version: Any, certname: Any, payload: Any) -> Command | None:
    """The command to queue; None for one that is taken and not kept."""
    versions = _COMMANDS.get(name)
    if versions is None:
        known = ", ".join(f"{c!r}" for c in _COMMANDS)
        raise _invalid(name, certname, f"Command must be one of: {known}.")
    try:
        number = int(version)
    except (TypeError, ValueError):
        raise _invalid(name, certname, "Version must be a valid integer.") from None
    if number not in versions:
        raise _invalid(name, certname, f"Version {number} is not supported; versions: {versions}.")
    if name == "deactivate node" and isinstance(payload, str):
        payload = {"certname": payload}
    if not isinstance(payload, dict):
        raise _invalid(name, certname, "The payload value must be a JSON map.")
    inner = payload.get("certname", certname)
    if certname is not None and inner != certname:
        raise _invalid(name, certname, f"The payload's certname {inner!r} is not the query's.")
    node = str(validate_certname(inner))
    if name == "replace catalog inputs":
        return None
    if name == "store report" or name == "replace catalog":
        try:
            if name == "store report":
                return Command(node, report=parse_report(payload, version=number))
            return Command(node, catalog=parse_catalog(payload, version=number))
        except ValidationError as error:  # the field it names, in the command's words
            raise _invalid(name, node, error.msg, error.details) from None
    at = payload.get("producer_timestamp")
    when = parse_timestamp(at, "producer_timestamp") if at is not None else datetime.now(UTC)
    if name == "deactivate node":
        return Command(node, deactivate_at=when)
    values = payload.get("values")
    if not isinstance(values, dict):
        raise _invalid(name, node, "values must be a JSON map of fact names to values.")
    environment = payload.get("environment")
    if environment is not None and not isinstance(environment, str):
        raise _invalid(name, node, "environment must be a string.")
    producer = payload.get("producer")
    digest = facts_digest(values)  # here, so that facts that cannot be stored are a 400
    facts = FactsCommand(
        node,
        values,
        environment,
        when,
        producer if isinstance(producer, str) else None,
        hash=digest,
    )
    return Command(node, facts=facts)


def _invalid(
    name: str | None, certname: Any, why: str, details: dict[str, Any] | None = None
) -> ValidationError:
    return ValidationError(
        f"Command {name} for certname {certname} is invalid. {why}",
        kind=_KIND,
        details={"command": name, "certname": certname, **(details or {})},
    )


# Queries


@_query("/pdb/query/v4")
async def root(request: Request) -> Response:
    params = await _query_params(request)
    query = params.pop("query", None)
    if query is None:
        raise ValidationError("Missing required query parameter 'query'", kind=_QUERY_KIND)
    if isinstance(query, str):
        query = _json_query(query) if query.lstrip().startswith("[") else _pql(query)
    if _flag(params, "ast_only", pop=True):
        return _json(query)
    return await _answer(request, None, query, params)


@_query("/pdb/query/v4/event-counts", extra=_COUNTING)
async def event_counts_of(request: Request) -> Response:
    """Events counted by status for each node, resource or class (``summarize_by``)."""
    params = await _query_params(request, allowed=_QUERY_PARAMETERS | frozenset(_COUNTING))
    inventory = _inventory(request)
    options = _counting(params)
    order_by = params.get("order_by")
    paging: dict[str, Any] = {
        "limit": params.get("limit"),
        "offset": params.get("offset"),
        "order_by": _json_param("order_by", order_by) if isinstance(order_by, str) else order_by,
        "include_total": _flag(params, "include_total"),
    }
    rows, count = await asyncio.to_thread(
        event_counts, inventory, _ast(params.get("query")), **options, **paging
    )
    return _json(rows, None if count is None else str(count), pretty=_flag(params, "pretty"))


@_query("/pdb/query/v4/aggregate-event-counts", extra=_COUNTING)
async def aggregate_event_counts_of(request: Request) -> Response:
    """event-counts summed up: how many subjects had failures, successes, ..."""
    allowed = frozenset({"query", "pretty", "origin", *_COUNTING})
    params = await _query_params(request, allowed=allowed)
    inventory = _inventory(request)
    rows = await asyncio.to_thread(
        aggregate_event_counts, inventory, _ast(params.get("query")), **_counting(params)
    )
    return _json(rows, pretty=_flag(params, "pretty"))


def _counting(params: dict[str, Any]) -> dict[str, Any]:
    summarize_by = params.get("summarize_by")
    if summarize_by is None:
        raise ValidationError(
            "Missing required query parameter 'summarize_by' (certname, resource or "
            "containing_class)",
            kind=_QUERY_KIND,
        )
    counts_filter = params.get("counts_filter")
    if isinstance(counts_filter, str):
        counts_filter = _json_param("counts_filter", counts_filter)
    return {
        "summarize_by": summarize_by,
        "count_by": params.get("count_by"),
        "counts_filter": counts_filter,
    }


def _ast(query: Any) -> Any:
    return _json_query(query, ast_only=True) if isinstance(query, str) else query


@_query("/pdb/query/v4/reports/{report_hash}/events")
async def report_events(report_hash: str, request: Request) -> Response:
    """A report's events (``/events`` with ``["=", "report", hash]``)."""
    params = await _query_params(request)
    await _report_exists(request, report_hash)
    where = _and(["=", "report", report_hash], params.pop("query", None))
    return await _answer(request, "events", where, params)


@_query("/pdb/query/v4/reports/{report_hash}/metrics")
async def report_metrics(report_hash: str, request: Request) -> Response:
    """A report's metrics, as they came."""
    return await _report_document(request, report_hash, "metrics")


@_query("/pdb/query/v4/reports/{report_hash}/logs")
async def report_logs(report_hash: str, request: Request) -> Response:
    """A report's log lines, as they came."""
    return await _report_document(request, report_hash, "logs")


async def _report_document(request: Request, report_hash: str, field: str) -> Response:
    params = await _query_params(request, allowed=frozenset({"pretty", "origin"}))
    rows = await _report_exists(request, report_hash, field)
    return _json(rows[0][field]["data"], pretty=_flag(params, "pretty"))


async def _report_exists(
    request: Request, report_hash: str, field: str = "hash"
) -> list[dict[str, Any]]:
    """The report's ``field``; 404 when there is no such report (PuppetDB's parent check)."""
    where = ["and", ["=", "hash", report_hash], ["=", "type", "any"], ["=", "node_state", "any"]]
    rows, _ = await _rows(request, "reports", ["extract", [field], where], {})
    if not rows:
        raise NotFound(
            f"No information is known about report {report_hash}",
            details={"report": report_hash},
        )
    return rows


@_query("/pdb/query/v4/catalogs/{node}/edges")
async def catalog_edges(node: str, request: Request) -> Response:
    """A node's catalog's edges, whatever the node's state."""
    return await _catalog_part(request, node, "edges")


@_query("/pdb/query/v4/catalogs/{node}/resources")
async def catalog_resources(node: str, request: Request) -> Response:
    """A node's catalog's resources, whatever the node's state."""
    return await _catalog_part(request, node, "resources")


async def _catalog_part(request: Request, node: str, entity: str) -> Response:
    params = await _query_params(request)
    known = ["and", ["=", "certname", node], ["=", "node_state", "any"]]
    rows, _ = await _rows(request, "catalogs", ["extract", ["certname"], known], {})
    if not rows:
        raise NotFound(f"No information is known about catalog {node}", details={"catalog": node})
    return await _answer(request, entity, _and(known, params.pop("query", None)), params)


@_query("/pdb/query/v4/resources/{resource_type}/{title:path}")
async def resources_titled(resource_type: str, title: str, request: Request) -> Response:
    """Every active node's resource of that type and title."""
    params = await _query_params(request)
    where = ["and", ["=", "type", resource_type], ["=", "title", title]]
    return await _answer(request, "resources", _and(where, params.pop("query", None)), params)


@_query("/pdb/query/v4/{entity}")
async def entity(entity: str, request: Request) -> Response:
    params = await _query_params(request)
    if entity == "fact-names":  # PuppetDB's answer: the names alone
        rows, count = await _rows(request, "fact_names", params.pop("query", None), params)
        names = [row["name"] for row in rows]
        return _json(names, None if count is None else str(count), pretty=_flag(params, "pretty"))
    return await _answer(request, entity, params.pop("query", None), params)


@_query("/pdb/query/v4/{entity}/{name}")
async def entity_item(entity: str, name: str, request: Request) -> Response:
    params = await _query_params(request)
    extra = params.pop("query", None)
    if entity == "facts":
        return await _answer(request, "facts", _and(["=", "name", name], extra), params)
    if entity == "resources":  # resources of a type
        return await _answer(request, "resources", _and(["=", "type", name], extra), params)
    if entity in ("nodes", "factsets", "inventory", "environments", "catalogs"):
        field = "name" if entity == "environments" else "certname"
        where = _and(["=", field, name], extra)
        if entity != "environments":
            where = ["and", where, ["=", "node_state", "any"]]
        return await _single(request, entity, where, name, params)
    raise NotFound(f"no endpoint /pdb/query/v4/{entity}/{name}")


@_query("/pdb/query/v4/facts/{name}/{value}")
async def fact_value(name: str, value: str, request: Request) -> Response:
    params = await _query_params(request)
    where = _and(["and", ["=", "name", name], ["=", "value", value]], params.pop("query", None))
    return await _answer(request, "facts", where, params)


@_query("/pdb/query/v4/{entity}/{name}/facts")
@_query("/pdb/query/v4/{entity}/{name}/facts/{fact}")
@_query("/pdb/query/v4/{entity}/{name}/facts/{fact}/{value}")
async def node_facts(
    entity: str, name: str, request: Request, fact: str | None = None, value: str | None = None
) -> Response:
    """A node's facts (``nodes``, ``factsets``: even a deactivated node's) or an
    environment's, narrowed to a fact name and value."""
    if entity not in ("nodes", "factsets", "environments") or (
        fact is not None and entity != "nodes"
    ):
        raise NotFound(f"no endpoint {request.url.path}")
    params = await _query_params(request, path=("fact", "value"))
    field = "environment" if entity == "environments" else "certname"
    where: list[Any] = ["and", ["=", field, name]]
    where += [["=", k, v] for k, v in (("name", fact), ("value", value)) if v is not None]
    if entity == "factsets":
        where.append(["=", "node_state", "any"])
    if entity != "environments":  # the node must exist (PuppetDB's parent check)
        known = ["and", ["=", "certname", name], ["=", "node_state", "any"]]
        await _single(request, "nodes", known, name, {})
    return await _answer(request, "facts", _and(where, params.pop("query", None)), params)


async def _single(
    request: Request, entity: str, where: list[Any], name: str, params: dict[str, Any]
) -> Response:
    rows, _ = await _rows(request, entity, where, params)
    if not rows:
        words = {"nodes": "node", "factsets": "factset", "environments": "environment"}
        what = (words | {"catalogs": "catalog"}).get(entity, entity)
        raise NotFound(f"No information is known about {what} {name}", details={entity: name})
    return _json(rows[0])


async def _answer(
    request: Request, entity: str | None, query: Any, params: dict[str, Any]
) -> Response:
    rows, count = await _rows(request, entity, query, params)
    pretty = _flag(params, "pretty")
    return _json(rows, None if count is None else str(count), pretty=pretty)


async def _rows(
    request: Request, entity: str | None, query: Any, params: dict[str, Any]
) -> tuple[list[dict[str, Any]], int | None]:
    inventory = _inventory(request)
    limit, offset, order_by = params.get("limit"), params.get("offset"), params.get("order_by")
    if isinstance(order_by, str):
        order_by = _json_param("order_by", order_by)
    paging: dict[str, Any] = {"limit": limit, "offset": offset, "order_by": order_by}
    total = _flag(params, "include_total")
    if isinstance(query, str):
        query = _json_query(query, ast_only=True)

    def work() -> tuple[list[dict[str, Any]], int | None]:
        if entity is None:
            return run_query(inventory, query, include_total=total, raw=True, **paging)
        return run_query(inventory, entity, query=query, include_total=total, raw=True, **paging)

    return await asyncio.to_thread(work)


async def _query_params(
    request: Request, path: tuple[str, ...] = (), *, allowed: Collection[str] = _QUERY_PARAMETERS
) -> dict[str, Any]:
    params: dict[str, Any] = dict(request.query_params)
    for key in path:  # FastAPI's optional path parameters, never query parameters here
        if key in params:
            raise ValidationError(f"Unsupported query parameter '{key}'", kind=_QUERY_KIND)
    if request.method == "POST":
        body = await _body(request)
        if not isinstance(body, dict):
            raise ValidationError(
                'a query POST\'s body is a JSON map: {"query": ..., "limit": ...}'
            )
        params.update(body)
    for key in params:
        if key not in allowed:
            raise ValidationError(f"Unsupported query parameter '{key}'", kind=_QUERY_KIND)
    return params


def _json_query(text: str, *, ast_only: bool = False) -> Any:
    if ast_only and not text.lstrip().startswith("["):
        raise ValidationError(
            "this endpoint takes an AST query (a JSON array); PQL goes to /pdb/query/v4",
            kind=_QUERY_KIND,
        )
    return _json_param("query", text)


def _json_param(name: str, text: str) -> Any:
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError as error:
        raise ValidationError(f"{name} is not valid JSON: {error}", kind=_QUERY_KIND) from None


def _pql(text: str) -> list[Any]:
    from podium.inventory.pql import parse_pql  # the parser is another component's

    return parse_pql(text)


def _and(condition: list[Any], extra: Any) -> list[Any]:
    if isinstance(extra, str):
        extra = _json_query(extra, ast_only=True)
    return condition if extra is None else ["and", condition, extra]


def _flag(params: dict[str, Any], name: str, *, pop: bool = False) -> bool:
    """A boolean parameter: true or false in JSON, "true" or "false" in a query string."""
    value = params.pop(name, None) if pop else params.get(name)
    if isinstance(value, bool) or value is None:
        return bool(value)
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise ValidationError(f"{name} is true or false, not {value!r}", kind=_QUERY_KIND)


def _json(value: Any, records: str | None = None, *, pretty: bool = False) -> Response:
    headers = {"X-Records": records} if records is not None else {}
    body = orjson.dumps(value, option=orjson.OPT_INDENT_2 if pretty else 0)
    return Response(body, media_type="application/json; charset=utf-8", headers=headers)


# Meta and status


@router.get("/pdb/meta/v1/version", openapi_extra=allow("authenticated"))
async def version() -> Response:
    return _json({"version": PUPPETDB_VERSION})


@router.get("/pdb/meta/v1/server-time", openapi_extra=allow("authenticated"))
async def server_time() -> Response:
    return _json({"server_time": iso(datetime.now(UTC))})


@router.get("/status/v1/services/puppetdb-status", openapi_extra=allow("authenticated"))
async def status(request: Request) -> Response:
    from podium import __version__

    inventory = _inventory(request)
    try:
        await asyncio.to_thread(
            run_query, inventory, "nodes", query=["extract", [["function", "count"]]]
        )
        up = True
    except PodiumError:
        up = False
    body = {
        "detail_level": "info",
        "service_status_version": 1,
        "service_version": PUPPETDB_VERSION,
        "state": "running" if up else "error",
        "status": {
            "maintenance_mode?": False,
            "read_db_up?": up,
            "write_db_up?": up,
            "queue_depth": _writer(request).depth,
            "podium_version": __version__,
        },
    }
    return Response(
        orjson.dumps(body), status_code=200 if up else 503, media_type="application/json"
    )
