"""PuppetDB's AST → a :class:`~.tree.Query`, checking everything on the way (pure).

A query comes from untrusted clients: its size and depth are capped before anything
else, and every operator, field and value is checked against the entity's schema, so
that a bad query is a 400 saying what is wrong and what would be right.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Final

from podium.inventory.query import checks as C
from podium.inventory.query import fields as F
from podium.inventory.query import paths as P
from podium.inventory.query import tree as T
from podium.inventory.query.errors import QueryError

MAX_DEPTH: Final = 64
MAX_NODES: Final = 20_000
_PAGING: Final = frozenset({"limit", "offset", "order_by"})
_COMPARISONS: Final = frozenset({"=", "<", "<=", ">", ">="})
_FUNCTIONS: Final = ("count", "avg", "sum", "min", "max")
_ORDERED_KINDS: Final = frozenset({"timestamp", "number", "multi"})


def parse_query(ast: Any, entity: str | None = None) -> T.Query:
    """A whole query: ``["from", entity, ...]``, or, for an entity's endpoint, its
    ``query`` parameter (a filter or an ``extract``; ``None`` for everything)."""
    C.check_size(ast, max_depth=MAX_DEPTH, max_nodes=MAX_NODES)
    if entity is None:
        if not (isinstance(ast, list) and ast[:1] == ["from"]):
            raise QueryError(
                'a query here names its entity: ["from", "nodes", ...] or PQL such as '
                "nodes { certname ~ 'web' }"
            )
        return _agent_reports(_Parser().from_(ast))
    parser = _Parser()
    return _agent_reports(parser.body(F.entity(entity), ast))


def _agent_reports(query: T.Query) -> T.Query:
    """PuppetDB's default for reports, in a query and its subqueries: agent runs only,
    unless the query names the type (``["=", "type", "any"]`` for every report)."""
    where = None if query.where is None else _in_subqueries(query.where)
    if query.entity.name == "reports" and (where is None or not _names(where, "type")):
        agent = T.Compare("=", T.Ref("type"), "agent")
        where = agent if where is None else T.And((where, agent))
    return replace(query, where=where)


def _in_subqueries(node: T.Expr) -> T.Expr:
    if isinstance(node, T.And):
        return T.And(tuple(_in_subqueries(i) for i in node.items))
    if isinstance(node, T.Or):
        return T.Or(tuple(_in_subqueries(i) for i in node.items))
    if isinstance(node, T.Not):
        return T.Not(_in_subqueries(node.item))
    if isinstance(node, T.InQuery):
        return replace(node, query=_agent_reports(node.query))
    return node


def _names(node: T.Expr, field: str) -> bool:
    """Whether ``node`` (not its subqueries) has a condition on ``field``."""
    if isinstance(node, T.And | T.Or):
        return any(_names(i, field) for i in node.items)
    if isinstance(node, T.Not):
        return _names(node.item, field)
    if isinstance(node, T.InQuery):
        return any(r.name == field for r in node.fields)
    if isinstance(node, T.NodeState):
        return False
    return node.field.name == field


class _Parser:
    def __init__(self) -> None:
        self.states: set[str] = set()

    def from_(self, node: list[Any]) -> T.Query:
        if len(node) < 2:
            raise QueryError('"from" takes an entity: ["from", "nodes", <query>...]')
        entity = F.entity(node[1])
        body: Any = None
        paging: list[list[Any]] = []
        for item in node[2:]:
            if (
                isinstance(item, list)
                and item[:1]
                and isinstance(item[0], str)
                and item[0] in _PAGING
            ):
                paging.append(item)
            elif body is None:
                body = item
            else:
                raise QueryError(
                    "Your `from` query accepts an optional query only as a second argument; "
                    "paging (limit, offset, order_by) may follow it"
                )
        query = self.body(entity, body)
        return self._paging(query, paging)

    def body(self, entity: F.Entity, node: Any) -> T.Query:
        if node is None:
            query = T.Query(entity)
        elif isinstance(node, list) and node[:1] == ["extract"]:
            query = self._extract(entity, node)
        else:
            query = T.Query(entity, where=self.expr(entity, node))
        return replace(query, states=frozenset(self.states))

    def _paging(self, query: T.Query, clauses: list[list[Any]]) -> T.Query:
        seen: set[str] = set()
        for clause in clauses:
            name = clause[0]
            if name in seen:
                raise QueryError(f"Multiple '{name}' clauses are not permitted")
            seen.add(name)
            if len(clause) != 2:
                raise QueryError(f"Received '{name}' clause without an argument")
            if name == "limit":
                query = replace(query, limit=C.check_limit(clause[1]))
            elif name == "offset":
                query = replace(query, offset=C.check_offset(clause[1]))
            else:
                query = replace(query, order_by=C.check_order_by(query, clause[1]))
        return query

    # extract

    def _extract(self, entity: F.Entity, node: list[Any]) -> T.Query:
        if len(node) < 2:
            raise QueryError('"extract" takes the fields to return: ["extract", ["certname"]]')
        columns = node[1] if isinstance(node[1], list) and not C.is_function(node[1]) else [node[1]]
        if not columns:
            raise QueryError('"extract" needs at least one field to return')
        items = tuple(self._item(entity, c) for c in columns)
        where: T.Expr | None = None
        group: tuple[T.Ref, ...] = ()
        for part in node[2:]:
            if isinstance(part, list) and part[:1] == ["group_by"]:
                group = tuple(self._group_field(entity, f) for f in part[1:])
                if not group:
                    raise QueryError('"group_by" takes at least one field')
            elif where is None:
                where = self.expr(entity, part)
            else:
                raise QueryError(f'{part!r} is not a valid expression for "extract"')
        if group or any(isinstance(i, T.Function) for i in items):
            grouped = {r.label for r in group}
            for item in items:
                if isinstance(item, T.Column) and item.label not in grouped:
                    raise QueryError(
                        f"{item.label} is returned with an aggregate function: add it to "
                        "group_by, or leave it out of extract"
                    )
        return T.Query(entity, where=where, extract=items, group_by=group)

    def _item(self, entity: F.Entity, column: Any) -> T.Item:
        if C.is_function(column):
            return self._function(entity, column)
        if not isinstance(column, str):
            raise QueryError(f"{column!r} is neither a valid column name nor function name")
        return T.Column(self._projected(entity, column))

    def _function(self, entity: F.Entity, node: list[Any]) -> T.Function:
        name = node[1] if len(node) > 1 else None
        if name == "to_string":
            raise QueryError(
                "the function to_string (PostgreSQL's to_char) is not supported by Podium; "
                f"functions: {', '.join(_FUNCTIONS)}"
            )
        if name not in _FUNCTIONS:
            raise QueryError(
                f"{name!r} is not a valid function; functions: {', '.join(_FUNCTIONS)}"
            )
        args = node[2:]
        if len(args) > 1:
            raise QueryError(
                f"wrong number of arguments ({len(args)}) provided for function {name}"
            )
        if not args:
            if name != "count":
                raise QueryError(
                    f'the function {name} takes a field, as in ["function", "{name}", "value"]'
                )
            return T.Function(name)
        ref = self._projected(entity, args[0])
        kind = C.kind_of(entity, ref)
        if name in ("avg", "sum") and kind not in ("number", "multi"):
            raise QueryError(f"field {ref.label} must be a numeric type for the function {name}")
        if name in ("min", "max") and kind not in ("number", "multi", "timestamp"):
            raise QueryError(f"the function {name} takes a number or timestamp, not {ref.label}")
        return T.Function(name, ref)

    def _projected(self, entity: F.Entity, name: str) -> T.Ref:
        if not isinstance(name, str):
            raise QueryError(f"{name!r} is not a field name")
        head, pattern = P.parse_dotted(name)
        if pattern is not None:
            if not entity.dotted or entity.document != "facts" or head == "parameters":
                raise QueryError(
                    f"{entity.name} returns no dotted fields such as {name!r}"
                    + (": return parameters whole" if entity.document == "parameters" else "")
                )
            if pattern.exact is None:
                raise QueryError(f"{name!r}: a returned path takes no * or match()")
            return T.Ref("facts", pattern, name)
        entity.projectable(head)
        return T.Ref(head)

    def _group_field(self, entity: F.Entity, name: Any) -> T.Ref:
        ref = self._projected(entity, name)
        if C.kind_of(entity, ref) == "json" and ref.pattern is None:
            raise QueryError(f"cannot group by the whole {ref.name} document")
        return ref

    # filters

    def expr(self, entity: F.Entity, node: Any) -> T.Expr:
        if not isinstance(node, list) or not node:
            raise QueryError(
                f"[] is not well-formed: queries must contain at least one operator (got {node!r})"
            )
        op = node[0]
        args = node[1:]
        if not isinstance(op, str):
            raise QueryError(
                f"{op!r} is not an operator: an operator is a string such as 'and' or '='"
            )
        if op == "and" or op == "or":
            if not args:
                raise QueryError(f"'{op}' takes at least one argument, but none were supplied")
            items = tuple(self.expr(entity, a) for a in args)
            return T.And(items) if op == "and" else T.Or(items)
        if op == "not":
            if len(args) != 1:
                raise QueryError(f"'not' takes exactly one argument, but {len(args)} were supplied")
            return T.Not(self.expr(entity, args[0]))
        if op in ("!=", "!~"):
            self._arity(op, args)
            return T.Not(self.expr(entity, ["=" if op == "!=" else "~", *args]))
        if op in _COMPARISONS:
            self._arity(op, args)
            return self._compare(entity, op, args[0], args[1])
        if op == "~":
            self._arity(op, args)
            return self._regex(entity, args[0], args[1])
        if op == "~>":
            self._arity(op, args)
            ref = self._filtered(entity, args[0])
            if C.kind_of(entity, ref) != "path":
                raise QueryError(f"Query operator ~> is not allowed on field {ref.label}")
            return T.PathIs(ref, pattern=P.regex_pattern(args[1], ref.label))
        if op == "null?":
            self._arity(op, args)
            if not isinstance(args[1], bool):
                raise QueryError(f"null? takes true or false, not {args[1]!r}")
            ref = self._filtered(entity, args[0])
            return T.IsNull(ref, args[1])
        if op == "in":
            self._arity(op, args)
            return self._in(entity, args[0], args[1])
        if op == "subquery":
            return self._implicit(entity, args)
        if op == "extract" or op == "from":
            raise QueryError(f'"{op}" belongs inside "in": ["in", "certname", ["{op}", ...]]')
        if isinstance(op, str) and op.startswith("select_"):
            raise QueryError(
                f'{op} belongs inside "extract": '
                f'["in", "certname", ["extract", "certname", ["{op}", ...]]]'
            )
        raise QueryError(
            f"{op!r} is not an operator; operators: = != < <= > >= ~ !~ ~> null? in and or not "
            "subquery"
        )

    @staticmethod
    def _arity(op: str, args: list[Any]) -> None:
        if len(args) != 2:
            raise QueryError(f"{op} requires exactly two arguments, but {len(args)} were supplied")

    def _filtered(self, entity: F.Entity, name: Any) -> T.Ref:
        if isinstance(name, list):
            raise QueryError(f"{name!r} is not a field here")
        if not isinstance(name, str):
            raise QueryError(f"{name!r} is not a field name")
        head, pattern = P.parse_dotted(name)
        if pattern is not None:
            document = "parameters" if head == "parameters" else "facts"
            if not entity.dotted or entity.document != document:
                raise QueryError(
                    f"'{name}' is not a queryable object for {entity.name}: dotted paths are "
                    "for the inventory entity, facts.<path> (or use fact_contents with a path), "
                    "and for resources, parameters.<name>"
                )
            if document == "parameters" and pattern.exact is None:
                raise QueryError(f"{name!r}: a parameter's path takes no * or match()")
            return T.Ref(document, pattern, name)
        field = entity.queryable(head)
        if field.kind == "json":
            raise QueryError(
                f"{head} is a whole document: compare a path in it, as in {head}.os.family"
                if entity.dotted
                else f"{head} cannot be filtered on for {entity.name}"
            )
        return T.Ref(head)

    def _compare(self, entity: F.Entity, op: str, name: Any, value: Any) -> T.Expr:
        if name == "node_state" and op == "=":
            return self._node_state(entity, value)
        if isinstance(name, list) and len(name) == 2 and name[0] == "node" and name[1] == "active":
            if not isinstance(value, bool):
                raise QueryError(f"['node', 'active'] is true or false, not {value!r}")
            return self._node_state(entity, "active" if value else "inactive")
        if isinstance(name, list) and len(name) == 2 and name[0] == "fact":
            return self._fact(entity, [op, "value", value], name[1])
        if entity.name == "fact_paths" and name == "type" and value == "any" and op == "=":
            return T.And(())
        if entity.name == "reports" and name == "type" and value == "any" and op == "=":
            return T.IsNull(T.Ref("type"), False)  # every report; it names the type
        if isinstance(name, list) and len(name) == 2 and name[0] == "parameter":
            ref = self._parameter(entity, name[1])
        else:
            ref = self._filtered(entity, name)
        kind = C.kind_of(entity, ref)
        if kind == "path":
            if op != "=":
                raise QueryError(f"Query operators >,>=,<,<= are not allowed on field {ref.label}")
            return T.PathIs(ref, paths=(P.exact_path(value, ref.label),))
        if op != "=" and kind not in _ORDERED_KINDS:
            raise QueryError(f"Query operators >,>=,<,<= are not allowed on field {ref.label}")
        return T.Compare(op, ref, C.value(entity, ref, kind, op, value))

    def _regex(self, entity: F.Entity, name: Any, value: Any) -> T.Expr:
        if isinstance(name, list) and len(name) == 2 and name[0] == "fact":
            return self._fact(entity, ["~", "value", value], name[1])
        if isinstance(name, list) and len(name) == 2 and name[0] == "parameter":
            ref = self._parameter(entity, name[1])
        else:
            ref = self._filtered(entity, name)
        kind = C.kind_of(entity, ref)
        if kind not in ("string", "multi", "type", "array") or ref.name == "latest_report?":
            hint = "; use ~> for paths" if kind == "path" else ""
            raise QueryError(f"Query operator ~ is not allowed on field {ref.label}{hint}")
        if not isinstance(value, str):
            raise QueryError(f"~ takes a regular expression as a string, not {value!r}")
        P.checked_regex(value)
        return T.Regex(ref, value)

    def _in(self, entity: F.Entity, names: Any, target: Any) -> T.Expr:
        if isinstance(target, list) and target[:1] == ["array"]:
            if len(target) != 2 or not isinstance(target[1], list):
                raise QueryError("Operator 'array' requires a vector argument")
            if isinstance(names, list) and len(names) == 2 and names[0] == "fact":
                return self._fact(entity, ["in", "value", target], names[1])
            name = names[0] if isinstance(names, list) and len(names) == 1 else names
            ref = self._filtered(entity, name)
            kind = C.kind_of(entity, ref)
            if kind == "path":
                paths = tuple(P.exact_path(v, ref.label) for v in target[1])
                return T.PathIs(ref, paths=paths)
            values = tuple(C.value(entity, ref, kind, "in", v) for v in target[1])
            return T.InValues(ref, values)
        fields = names if isinstance(names, list) else [names]
        if not fields:
            raise QueryError('"in" needs at least one field')
        refs = tuple(self._filtered(entity, f) for f in fields)
        if any(r.pattern is not None for r in refs):
            raise QueryError('"in" with a subquery takes plain fields, not dotted paths')
        sub = self._subquery(entity, target)
        if sub.extract is None or len(sub.extract) != len(refs):
            raise QueryError(
                f"'in' compares {len(refs)} field(s) with a subquery that must extract as many"
            )
        for ref, item in zip(refs, sub.extract, strict=True):
            mine, theirs = C.kind_of(entity, ref), C.item_kind(sub, item)
            if mine != theirs and "multi" not in (mine, theirs):
                raise QueryError(f"'in' compares {ref.label} ({mine}) with {item.label} ({theirs})")
        return T.InQuery(refs, sub)

    def _subquery(self, entity: F.Entity, node: Any) -> T.Query:
        if not isinstance(node, list) or not node:
            raise QueryError('"in" takes ["extract", ...], ["from", ...] or ["array", [...]]')
        if node[0] == "from":
            return self.from_(node)
        if node[0] != "extract":
            raise QueryError('"in" takes ["extract", ...], ["from", ...] or ["array", [...]]')
        inner = node[2] if len(node) > 2 else None
        if (
            isinstance(inner, list)
            and inner
            and isinstance(inner[0], str)
            and inner[0].startswith("select_")
        ):
            other = F.entity(inner[0][len("select_") :])
            filtered = self.body(other, inner[1] if len(inner) > 1 else None)
            return replace(
                self._extract(other, ["extract", node[1], *node[3:]]), where=filtered.where
            )
        return self._extract(entity, node)

    def _implicit(self, entity: F.Entity, args: list[Any]) -> T.Expr:
        if not args or len(args) > 2:
            raise QueryError('"subquery" takes an entity and a query: ["subquery", "facts", ...]')
        other = F.entity(args[0])
        relation = entity.relations.get(other.name)
        if relation is None:
            raise QueryError(
                f"No implicit relationship for entity '{other.name}' from {entity.name}; "
                f"related: {', '.join(entity.relations) or 'none'}"
            )
        where = self.expr(other, args[1]) if len(args) == 2 else None
        columns = tuple(T.Column(T.Ref(f)) for f in relation.foreign)
        sub = T.Query(other, where=where, extract=columns)
        return T.InQuery(tuple(T.Ref(f) for f in relation.local), sub)

    def _fact(self, entity: F.Entity, condition: list[Any], name: Any) -> T.Expr:
        """``["fact", name]`` (nodes): the nodes whose fact ``name`` meets the condition."""
        if "certname" not in entity.fields:
            raise QueryError(f"['fact', ...] needs an entity with a certname, not {entity.name}")
        if not isinstance(name, str):
            raise QueryError(f"['fact', name] takes a fact name, not {name!r}")
        facts = F.entity("facts")
        where = T.And((T.Compare("=", T.Ref("name"), name), self.expr(facts, condition)))
        sub = T.Query(facts, where=where, extract=(T.Column(T.Ref("certname")),))
        return T.InQuery((T.Ref("certname"),), sub)

    @staticmethod
    def _parameter(entity: F.Entity, name: Any) -> T.Ref:
        """``["parameter", name]`` (resources): the field ``parameters.<name>``."""
        if entity.document != "parameters":
            raise QueryError(f"['parameter', ...] is for resources, not {entity.name}")
        if not isinstance(name, str) or not name:
            raise QueryError(f"['parameter', name] takes a parameter's name, not {name!r}")
        return T.Ref("parameters", P.Pattern((name,)), f"parameters.{name}")

    def _node_state(self, entity: F.Entity, value: Any) -> T.Expr:
        state = str(value).lower()
        if state not in ("active", "inactive", "any"):
            raise QueryError(f"node_state is active, inactive or any, not {value!r}")
        if not entity.per_node:
            raise QueryError(f"{entity.name} has no nodes: node_state does not apply")
        self.states.add(state)
        return T.And(()) if state == "any" else T.NodeState(state)
