"""Applications: components on nodes, ordered by what they produce and consume (pure).

An environment's ``applications/<name>.yaml`` files (the format is in
``docs/applications.md``) each define one application instance: components, each on
some nodes, producing and consuming capabilities. A component that consumes a
capability runs after every component of the same application that produces it, and a
node runs after the nodes of the components its own components run after. A node runs
once per job, whatever number of components it holds, so it never waits for itself.

:func:`parse_application` checks one file's text (pure; every error names the file and
the key); :func:`load_applications` reads an environment's files. :func:`run_order`
gives, for the nodes a job targets, what each waits for (the job core's ``after``) and
the levels they run in. Applications none of whose nodes is targeted play no part; those
with some do, their other nodes included: when ``lb`` runs after ``web`` which runs
after ``db``, a job on ``db-1`` and ``lb-1`` runs ``lb-1`` after ``db-1``.

A cycle, among an application's components or among the nodes of the applications a
job touches, is a :class:`~podium.errors.ValidationError` of kind
:data:`DEPENDENCY_CYCLE` naming its components and nodes.
"""

from __future__ import annotations

import os
import re
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path
from typing import Any, Final

from podium.errors import ConfigError, ValidationError
from podium.protocol.names import CERTNAME_RULE, is_certname
from podium.tasks.codedir import CodeDir

DEPENDENCY_CYCLE: Final = "puppetlabs.orchestrator/dependency-cycle"
FOLDER: Final = "applications"  # in an environment's folder
SUFFIX: Final = ".yaml"
MAX_FILE_BYTES: Final = 1024 * 1024

_NAME: Final = re.compile(r"[a-z][a-z0-9_-]{0,63}")  # applications and components
_NAME_RULE: Final = (
    "names are 1 to 64 lowercase letters, digits, '_' and '-', starting with a letter"
)
_CAPABILITY: Final = re.compile(r"[A-Z][A-Za-z0-9_]{0,63}(?:::[A-Z][A-Za-z0-9_]{0,63}){0,7}")
_CAPABILITY_RULE: Final = (
    "capabilities are named as Puppet's types are: capitalized words joined by '::' "
    "(Sql, Http, Mysql::Db)"
)
_TOP_KEYS: Final = ("description", "components")
_COMPONENT_KEYS: Final = ("nodes", "produces", "consumes")


@dataclass(frozen=True, slots=True)
class Component:
    """A part of an application, on ``nodes``, with the capabilities it produces and consumes."""

    name: str
    nodes: tuple[str, ...]
    produces: tuple[str, ...] = ()
    consumes: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Application:
    """An application instance: one file of an environment's ``applications/`` folder."""

    name: str
    components: tuple[Component, ...]
    description: str = ""
    source: str = ""  # the file it was read from, for messages
    # component → the components it runs after, in the order written
    after: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    def component(self, name: str) -> Component:
        return next(c for c in self.components if c.name == name)


@dataclass(frozen=True, slots=True)
class RunOrder:
    """The run order of a job's nodes (see :func:`run_order`)."""

    after: dict[str, tuple[str, ...]]  # every targeted node → the targeted nodes it waits for
    levels: list[list[str]]  # level 0 first; each in the order the nodes were targeted
    roles: dict[str, tuple[tuple[str, str], ...]]  # node → its (application, component)s


# -- parsing -------------------------------------------------------------------------------


def parse_application(name: str, text: str, *, source: str = "") -> Application:
    """The application ``name`` (its file's stem) defined by ``text``, checked in full."""
    where = source or f"application {name}"
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise _invalid(where, "", f"the file name {name!r} is no application name: {_NAME_RULE}")
    data = _yaml(text, where)
    if not isinstance(data, dict):
        raise _invalid(where, "", "it must be a mapping with a 'components' key")
    _known_keys(data, _TOP_KEYS, where, "")
    description = data.get("description", "")
    if not isinstance(description, str):
        raise _invalid(where, "description", "it must be a string")
    raw = data.get("components")
    if not isinstance(raw, dict) or not raw:
        raise _invalid(
            where, "components", "give a mapping of component name → nodes, produces, consumes"
        )
    components = tuple(_component(cname, body, where) for cname, body in raw.items())
    after = _component_order(name, components, where)
    app = Application(name, components, description, source, after)
    _check_cycles(_node_edges([app]), where)
    return app


def _component(name: object, body: object, where: str) -> Component:
    key = f"components.{name}"
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise _invalid(where, key, f"{name!r} is no component name: {_NAME_RULE}")
    if not isinstance(body, dict):
        raise _invalid(where, key, "it must be a mapping with 'nodes' (and 'produces', 'consumes')")
    _known_keys(body, _COMPONENT_KEYS, where, key)
    if "nodes" not in body:
        raise _invalid(where, f"{key}.nodes", "every component needs a list of nodes")
    nodes = _names(body["nodes"], where, f"{key}.nodes", "certname")
    if not nodes:
        raise _invalid(where, f"{key}.nodes", "give at least one node")
    produces = _names(body.get("produces", []), where, f"{key}.produces", "capability")
    consumes = _names(body.get("consumes", []), where, f"{key}.consumes", "capability")
    both = [c for c in consumes if c in produces]
    if both:
        raise _invalid(
            where,
            f"{key}.consumes",
            f"{name} consumes {both[0]}, which it produces itself: a component cannot "
            "run after itself",
        )
    return Component(name, nodes, produces, consumes)


def _names(value: object, where: str, key: str, what: str) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise _invalid(where, key, f"it must be a list of {what}s")
    seen: dict[str, None] = {}
    for index, item in enumerate(value):
        at = f"{key}[{index}]"
        if not isinstance(item, str):
            raise _invalid(where, at, f"{item!r} is not a {what} (quote it if it is one)")
        if what == "certname" and not is_certname(item):
            raise _invalid(where, at, f"{item!r} is not a certname: {CERTNAME_RULE}")
        if what == "capability" and not _CAPABILITY.fullmatch(item):
            raise _invalid(where, at, f"{item!r} is not a capability: {_CAPABILITY_RULE}")
        if item in seen:
            raise _invalid(where, at, f"{item} is listed twice")
        seen[item] = None
    return tuple(seen)


def _component_order(
    name: str, components: Sequence[Component], where: str
) -> dict[str, tuple[str, ...]]:
    """Each component → the components it runs after: those producing what it consumes."""
    producers: dict[str, list[str]] = {}
    for component in components:
        for capability in component.produces:
            producers.setdefault(capability, []).append(component.name)
    after: dict[str, tuple[str, ...]] = {}
    for component in components:
        before: dict[str, None] = {}
        for capability in component.consumes:
            if capability not in producers:
                made = ", ".join(sorted(producers)) or "nothing"
                raise _invalid(
                    where,
                    f"components.{component.name}.consumes",
                    f"no component of {name} produces {capability} (they produce: {made}); "
                    f"add it to the produces of the component that provides it",
                )
            before.update(dict.fromkeys(producers[capability]))
        after[component.name] = tuple(before)
    cycle = _find_cycle(after)
    if cycle is not None:
        by_name = {c.name: c for c in components}
        steps = []
        for later, earlier in pairwise(cycle):
            why = [c for c in by_name[later].consumes if c in by_name[earlier].produces]
            steps.append(f"{later} runs after {earlier} ({later} consumes {why[0]})")
        on = "; ".join(f"{c}: {', '.join(by_name[c].nodes)}" for c in dict.fromkeys(cycle))
        raise ValidationError(
            f"{where}: the components of {name} form a dependency cycle: "
            f"{', '.join(steps)}; nodes of {on}. Remove one of these consumes",
            kind=DEPENDENCY_CYCLE,
            details={"file": where, "key": "components", "cycle": cycle},
        )
    return after


# -- reading -------------------------------------------------------------------------------


def load_applications(envdir: Path) -> list[Application]:
    """The applications of the environment folder ``envdir`` (blocking: reads the files),
    by name; none when it has no ``applications/`` folder."""
    folder = envdir / FOLDER
    try:
        entries = sorted(os.scandir(folder), key=lambda e: e.name)
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise ConfigError(f"cannot read {folder}: {exc.strerror}") from exc
    apps = []
    for entry in entries:
        if not entry.name.endswith(SUFFIX) or entry.name.startswith("."):
            continue  # a README beside them, an editor's swap file
        path = Path(entry.path)
        apps.append(parse_application(entry.name[: -len(SUFFIX)], _read(path), source=str(path)))
    return apps


def applications_of(codedir: CodeDir, env: str) -> list[Application]:
    """The applications of environment ``env`` of ``codedir`` (blocking); NotFound, naming
    the environments there are, for an unknown one."""
    codedir.modulepath(env)  # checks the name and that the environment exists
    return load_applications(codedir.root / "environments" / env)


def _read(path: Path) -> str:
    try:
        with path.open("rb") as f:
            raw = f.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from exc
    if len(raw) > MAX_FILE_BYTES:
        raise _invalid(str(path), "", f"the file is larger than {MAX_FILE_BYTES // 1024} KiB")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _invalid(str(path), "", f"the file is not UTF-8 ({exc.reason})") from exc


def _yaml(text: str, where: str) -> Any:
    yaml, loader = _yaml_loader()
    try:
        return yaml.load(text, Loader=loader)
    except yaml.YAMLError as exc:
        raise _invalid(where, "", f"it is not valid YAML: {_yaml_problem(exc)}") from exc
    except RecursionError as exc:  # nesting thousands deep
        raise _invalid(where, "", "it is nested too deeply to be an application") from exc


def _yaml_problem(exc: Exception) -> str:
    """PyYAML's error on one line: what is wrong, and where."""
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None)
    if mark is None or not problem:
        return " ".join(str(exc).split())
    context = getattr(exc, "context", None)
    what = f"{context}: {problem}" if context else problem
    return f"{what} (line {mark.line + 1}, column {mark.column + 1})"


def _yaml_loader() -> Any:
    import yaml

    base = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    timestamp = "tag:yaml.org,2002:timestamp"

    class Loader(base):  # type: ignore[misc, valid-type]
        # Names stay the strings they are written as (no dates); a key given twice is
        # an error rather than the last one silently winning.
        yaml_implicit_resolvers = {
            first: [(tag, regexp) for tag, regexp in resolvers if tag != timestamp]
            for first, resolvers in base.yaml_implicit_resolvers.items()
        }

        def construct_mapping(self, node: Any, deep: bool = False) -> Any:
            seen: set[str] = set()
            for key, _ in node.value:
                if isinstance(key, yaml.ScalarNode) and key.tag.endswith(":str"):
                    if key.value in seen:
                        raise yaml.constructor.ConstructorError(
                            None, None, f"the key {key.value!r} is given twice", key.start_mark
                        )
                    seen.add(key.value)
            return super().construct_mapping(node, deep)

    return yaml, Loader


def _known_keys(data: dict[Any, Any], known: Sequence[str], where: str, key: str) -> None:
    for name in data:
        if name not in known:
            at = f"{key}.{name}" if key else str(name)
            raise _invalid(where, at, f"unknown key; the keys here are {', '.join(known)}")


def _invalid(where: str, key: str, message: str) -> ValidationError:
    at = f" key '{key}':" if key else ""
    return ValidationError(f"{where}:{at} {message}", details={"file": where, "key": key})


# -- run order -----------------------------------------------------------------------------

# node → {node it runs after: (application, its component, the other's component)}
_Edges = dict[str, dict[str, tuple[str, str, str]]]


def _node_edges(apps: Iterable[Application]) -> _Edges:
    edges: _Edges = {}
    for app in apps:
        by_name = {c.name: c for c in app.components}
        for component in app.components:
            for earlier in app.after.get(component.name, ()):
                for node in component.nodes:
                    mine = edges.setdefault(node, {})
                    for other in by_name[earlier].nodes:
                        if other != node:
                            mine.setdefault(other, (app.name, component.name, earlier))
    return edges


def _check_cycles(edges: _Edges, where: str = "") -> None:
    cycle = _find_cycle({node: tuple(before) for node, before in edges.items()})
    if cycle is None:
        return
    steps = []
    for later, earlier in pairwise(cycle):
        app, mine, theirs = edges[later][earlier]
        steps.append(f"{later} runs after {earlier} ({app}: {mine} runs after {theirs})")
    raise ValidationError(
        (f"{where}: " if where else "")
        + f"the nodes form a dependency cycle: {', '.join(steps)}. A node runs once per "
        "job, so it cannot be both before and after another; move it to one component",
        kind=DEPENDENCY_CYCLE,
        details={"cycle": cycle, **({"file": where} if where else {})},
    )


def _find_cycle(after: Mapping[str, Collection[str]]) -> list[str] | None:
    """A cycle of ``after`` (x → what x runs after) as ``[a, b, ..., a]``, or None.

    Depth-first with an explicit stack, so a long chain cannot exhaust Python's."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    for start in after:
        if start in state:
            continue
        path = [start]
        state[start] = 1
        stack = [iter(after.get(start, ()))]
        while stack:
            nxt = next(stack[-1], None)
            if nxt is None:
                stack.pop()
                state[path.pop()] = 2
            elif state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            elif nxt not in state:
                state[nxt] = 1
                path.append(nxt)
                stack.append(iter(after.get(nxt, ())))
    return None


def prerequisites(
    applications: Sequence[Application], targets: Sequence[str]
) -> dict[str, frozenset[str]]:
    """Each of ``targets`` → the targeted nodes it must wait for (empty for most).

    Only applications with a targeted node take part, and order passes through their
    nodes that are not targeted. A cycle among their nodes is a dependency-cycle error."""
    targeted = dict.fromkeys(targets)
    touched = [a for a in applications if any(n in targeted for c in a.components for n in c.nodes)]
    edges = _node_edges(touched)
    _check_cycles(edges)
    # What each node waits for among the targeted ones, in an order where a node comes
    # after everything it runs after (acyclic: checked above).
    reach: dict[str, frozenset[str]] = {}
    for node in _topological(edges):
        found: set[str] = set()
        for earlier in edges.get(node, ()):
            if earlier in targeted:
                found.add(earlier)
            else:
                found |= reach[earlier]
        reach[node] = frozenset(found)
    return {t: reach.get(t, frozenset()) for t in targeted}


def _topological(after: Mapping[str, Collection[str]]) -> list[str]:
    """Every node of ``after``, each after all it runs after (for an acyclic graph)."""
    placed: dict[str, None] = {}
    for start in after:
        if start in placed:
            continue
        stack = [(start, iter(after.get(start, ())))]
        opened = {start}
        while stack:
            node, pending = stack[-1]
            nxt = next(pending, None)
            if nxt is None:
                stack.pop()
                placed[node] = None
            elif nxt not in placed and nxt not in opened:
                opened.add(nxt)
                stack.append((nxt, iter(after.get(nxt, ()))))
    return list(placed)


def levels(after: Mapping[str, Collection[str]], nodes: Sequence[str]) -> list[list[str]]:
    """``nodes`` by level: level 0 waits for nothing, level n+1 for some node of level n
    (and none later); each level keeps the order of ``nodes``. Names in ``after`` that
    are not in ``nodes`` are left out; a cycle is a dependency-cycle error."""
    wanted = dict.fromkeys(nodes)
    graph = {
        n: tuple(dict.fromkeys(p for p in after.get(n, ()) if p in wanted and p != n))
        for n in wanted
    }
    cycle = _find_cycle(graph)
    if cycle is not None:
        raise ValidationError(
            f"the run order has a dependency cycle: {' runs after '.join(cycle)}",
            kind=DEPENDENCY_CYCLE,
            details={"cycle": cycle},
        )
    level: dict[str, int] = {}
    for node in _topological(graph):
        level[node] = 1 + max((level[p] for p in graph[node]), default=-1)
    out: list[list[str]] = [[] for _ in range(1 + max(level.values(), default=-1))]
    for node in wanted:
        out[level[node]].append(node)
    return out


def roles(applications: Iterable[Application]) -> dict[str, tuple[tuple[str, str], ...]]:
    """Each node of ``applications`` → its (application, component)s, sorted."""
    found: dict[str, set[tuple[str, str]]] = {}
    for app in applications:
        for component in app.components:
            for node in component.nodes:
                found.setdefault(node, set()).add((app.name, component.name))
    return {node: tuple(sorted(pairs)) for node, pairs in found.items()}


def run_order(applications: Sequence[Application], targets: Sequence[str]) -> RunOrder:
    """What each of ``targets`` waits for, the levels they run in, and their roles."""
    wanted = list(dict.fromkeys(targets))
    waits = prerequisites(applications, wanted)
    position = {n: i for i, n in enumerate(wanted)}
    after = {n: tuple(sorted(waits[n], key=position.__getitem__)) for n in wanted}
    known = roles(applications)
    return RunOrder(
        after=after,
        levels=levels(after, wanted),
        roles={n: known[n] for n in wanted if n in known},
    )
