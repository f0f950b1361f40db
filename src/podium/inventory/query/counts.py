"""PuppetDB's event-counts and aggregate-event-counts: events summed by status.

    rows, total = event_counts(store, ["=", "latest_report?", True], summarize_by="certname")
    rows = aggregate_event_counts(store, None, summarize_by="certname,resource")

The events a query selects (the ``events`` entity's query, active nodes by default) are
counted by status for each subject: a node (``certname``), a resource (``resource``:
type and title) or a class (``containing_class``). ``count_by=certname`` counts each node
once per subject and status rather than each event. ``counts_filter`` keeps the
subjects whose counts meet it (``[">", "failures", 0]``). One SQL statement either way.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Final

from sqlalchemy import (
    ColumnElement,
    Select,
    and_,
    case,
    false,
    func,
    literal,
    not_,
    or_,
    select,
    true,
    union_all,
)

from podium.inventory.query import tree as T
from podium.inventory.query.checks import check_limit, check_offset
from podium.inventory.query.compiler import compile_query
from podium.inventory.query.errors import QueryError
from podium.inventory.query.fields import entity
from podium.inventory.query.validate import parse_query

if TYPE_CHECKING:
    from podium.inventory.store import InventoryStore
    from podium.store import Store

SUBJECTS: Final = {
    "certname": ("certname",),
    "containing_class": ("containing_class",),
    "resource": ("resource_type", "resource_title"),
}
COUNTS: Final = ("failures", "successes", "noops", "skips")
_STATUS: Final = {
    "failures": "failure",
    "successes": "success",
    "noops": "noop",
    "skips": "skipped",
}
_EVENT_FIELDS: Final = ("certname", "status", "resource_type", "resource_title", "containing_class")
_OPS: Final[dict[str, Callable[[Any, Any], Any]]] = {
    "=": lambda a, b: a == b,
    ">": lambda a, b: a > b,
    "<": lambda a, b: a < b,
    ">=": lambda a, b: a >= b,
    "<=": lambda a, b: a <= b,
}


def event_counts(
    store: Store | InventoryStore,
    query: Any = None,
    *,
    summarize_by: Any,
    count_by: Any = None,
    counts_filter: Any = None,
    limit: int | str | None = None,
    offset: int | str | None = None,
    order_by: Any = None,
    include_total: bool = False,
) -> tuple[list[dict[str, Any]], int | None]:
    """The counts of each subject, and with ``include_total`` how many subjects."""
    from podium.inventory.store import InventoryStore

    inventory = InventoryStore.of(store)
    subject = _subject(summarize_by)
    counted = _counts(inventory.dialect, query, subject, count_by, counts_filter).subquery()
    fields = [*SUBJECTS[subject], *COUNTS]
    ordering = _order(order_by, fields) or [(f, False) for f in SUBJECTS[subject]]
    statement = select(*[counted.c[f] for f in fields]).order_by(
        *[
            counted.c[f].desc().nulls_first() if down else counted.c[f].asc().nulls_last()
            for f, down in ordering
        ]
    )
    if limit is not None:
        statement = statement.limit(check_limit(limit))
    if offset:
        statement = statement.offset(check_offset(offset))
    with inventory.read() as connection:
        rows = connection.execute(statement).all()
        total = None
        if include_total:
            total = connection.execute(select(func.count()).select_from(counted)).scalar_one()
    width = len(SUBJECTS[subject])
    return [_row(subject, row[:width], row[width:]) for row in rows], total


def aggregate_event_counts(
    store: Store | InventoryStore,
    query: Any = None,
    *,
    summarize_by: Any,
    count_by: Any = None,
    counts_filter: Any = None,
) -> list[dict[str, Any]]:
    """For each subject type of ``summarize_by`` (comma-separated): how many subjects
    had failures, successes, noops and skips, and how many there were in all."""
    from podium.inventory.store import InventoryStore

    inventory = InventoryStore.of(store)
    if not isinstance(summarize_by, str):
        raise QueryError("summarize_by is certname, resource or containing_class, comma-separated")
    subjects = [_subject(s) for s in summarize_by.split(",")]
    parts = []
    for subject in subjects:
        counted = _counts(inventory.dialect, query, subject, count_by, counts_filter).subquery()
        sums = [
            func.coalesce(func.sum(case((counted.c[f] > 0, 1), else_=0)), 0).label(f)
            for f in COUNTS
        ]
        parts.append(
            select(literal(subject).label("summarize_by"), *sums, func.count().label("total"))
        )
    with inventory.read() as connection:
        rows = connection.execute(union_all(*parts)).all()
    return [
        {
            "summarize_by": row[0],
            **dict(zip(COUNTS, map(int, row[1:5]), strict=True)),
            "total": row[5],
        }
        for row in rows
    ]


def _subject(value: Any) -> str:
    if value not in SUBJECTS:
        raise QueryError(
            f"summarize_by is certname, resource or containing_class, not {value!r}",
            details={"summarize_by": str(value)},
        )
    return str(value)


def _counts(
    dialect: str, query: Any, subject: str, count_by: Any, counts_filter: Any
) -> Select[Any]:
    """Each subject's counts by status, filtered by ``counts_filter``."""
    if count_by not in (None, "resource", "certname"):
        raise QueryError(f"count_by is resource or certname, not {count_by!r}")
    if isinstance(query, list) and query[:1] == ["extract"]:
        raise QueryError("event-counts take the events' filter, not an extract")
    events = parse_query(query, "events")
    items = tuple(T.Column(T.Ref(f)) for f in _EVENT_FIELDS)
    compiled = compile_query(
        T.Query(entity("events"), where=events.where, extract=items, states=events.states),
        dialect=dialect,
        resolved={},
    )
    source = compiled.select.order_by(None).subquery()
    columns = {f: source.c[f"podium_{i}"] for i, f in enumerate(_EVENT_FIELDS)}
    group = [columns[f] for f in SUBJECTS[subject]]
    if count_by == "certname":  # each node once per subject and status
        keys = {"certname": columns["certname"], "status": columns["status"]}
        keys.update((f, columns[f]) for f in SUBJECTS[subject])
        distinct = select(*[c.label(n) for n, c in keys.items()]).distinct().subquery()
        columns = {n: distinct.c[n] for n in keys}
        group = [columns[f] for f in SUBJECTS[subject]]
    status = columns["status"]
    sums = [
        func.coalesce(func.sum(case((status == _STATUS[f], 1), else_=0)), 0).label(f)
        for f in COUNTS
    ]
    counted = select(*[c.label(f) for c, f in zip(group, SUBJECTS[subject], strict=True)], *sums)
    counted = counted.group_by(*group)
    if counts_filter is not None:
        inner = counted.subquery()
        kept = select(*inner.c).where(_filter(counts_filter, inner.c))
        return kept
    return counted


def _filter(node: Any, columns: Any) -> ColumnElement[bool]:
    """``counts_filter``: comparisons of the counts, and and/or/not of them."""
    if not isinstance(node, list) or not node or not isinstance(node[0], str):
        raise QueryError(
            'counts_filter is a query on the counts, such as [">", "failures", 0]',
            details={"counts_filter": str(node)[:200]},
        )
    op, args = node[0], node[1:]
    if op in ("and", "or") and args:
        items = [_filter(a, columns) for a in args]
        return and_(true(), *items) if op == "and" else or_(false(), *items)
    if op == "not" and len(args) == 1:
        return not_(_filter(args[0], columns))
    if op in _OPS and len(args) == 2:
        field, value = args
        if field not in COUNTS:
            raise QueryError(f"counts_filter compares {', '.join(COUNTS)}, not {field!r}")
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise QueryError(f"counts_filter compares {field} with a number, not {value!r}")
        return _OPS[op](columns[field], value)  # type: ignore[no-any-return]
    raise QueryError(f"counts_filter takes =, >, <, >=, <=, and, or and not, not {op!r}")


def _order(order_by: Any, fields: Sequence[str]) -> list[tuple[str, bool]]:
    if order_by is None:
        return []
    if not isinstance(order_by, list):
        raise QueryError(f"Illegal value '{order_by}' for :order_by; expected an array")
    out = []
    for clause in order_by:
        if isinstance(clause, dict):
            name, order = clause.get("field"), clause.get("order", "asc")
        elif isinstance(clause, list) and len(clause) == 2:
            name, order = clause
        else:
            name, order = clause, "asc"
        if name not in fields:
            raise QueryError(
                f"Unrecognized column '{name}' specified in :order_by; Supported columns are "
                f"'{', '.join(fields)}'"
            )
        if not isinstance(order, str) or order.lower() not in ("asc", "desc"):
            raise QueryError(f"Illegal value '{clause}' in :order_by; 'order' is asc or desc")
        out.append((str(name), order.lower() == "desc"))
    return out


def _row(subject: str, keys: Sequence[Any], counts: Sequence[Any]) -> dict[str, Any]:
    if subject == "resource":
        about: dict[str, Any] = {"type": keys[0], "title": keys[1]}
    else:
        about = {"title": keys[0]}
    return {
        "subject_type": subject,
        "subject": about,
        **dict(zip(COUNTS, map(int, counts), strict=True)),
    }
