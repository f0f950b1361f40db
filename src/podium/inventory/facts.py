"""A facts document as the inventory indexes it: paths, types and values (pure).

A document is a JSON object of fact names to values. :func:`flatten` turns it into
:class:`Leaf` entries, one per scalar anywhere in it, one per empty object or array
(so that :func:`inflate` can give the document back exactly), and one per non-empty
structured top-level fact (PuppetDB's "facts" entity lists top-level facts).

A path is a tuple of keys and array indexes, ``("networking", "interfaces", 0)``; it
is stored as compact JSON (:func:`encode_path`), which keeps ``"0"`` (a key) apart
from ``0`` (an index). A leaf's value is stored in two columns, ``s`` for text and
``n`` for numbers (:func:`columns`); an integer beyond 2**53 also keeps its digits in
``s`` so that it comes back exact (:func:`value_of`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import IntEnum
from typing import Any, Final

import orjson

from podium.errors import ValidationError

Path = tuple[str | int, ...]

# Limits on untrusted documents: deeper or longer paths are refused, not truncated.
MAX_DEPTH: Final = 64
MAX_PATH_CHARS: Final = 1024
# Integers a double holds exactly; larger ones keep their digits as text too.
EXACT_INTEGER: Final = 2**53


class FactType(IntEnum):
    """The type of a leaf, as stored (PuppetDB's value type ids, with 5 split in two)."""

    STRING = 0
    INTEGER = 1
    FLOAT = 2
    BOOLEAN = 3
    NULL = 4
    OBJECT = 5  # an empty object, or a whole structured top-level fact
    ARRAY = 6  # likewise for arrays

    @property
    def label(self) -> str:
        """The name PuppetDB's fact-paths endpoint gives the type."""
        return "map" if self is FactType.OBJECT else self.name.lower()


SCALARS: Final = frozenset(
    {FactType.STRING, FactType.INTEGER, FactType.FLOAT, FactType.BOOLEAN, FactType.NULL}
)
NUMBERS: Final = frozenset({FactType.INTEGER, FactType.FLOAT})
CONTAINERS: Final = frozenset({FactType.OBJECT, FactType.ARRAY})


@dataclass(frozen=True, slots=True)
class Leaf:
    """One entry of a flattened document. ``value`` is the scalar, ``{}`` or ``[]`` for
    an empty container, and ``None`` for a non-empty structured top-level fact."""

    path: Path
    type: FactType
    value: Any

    @property
    def name(self) -> str:
        """The top-level fact this leaf belongs to."""
        return str(self.path[0])


def type_of(value: Any) -> FactType:
    """The :class:`FactType` of a JSON value."""
    if isinstance(value, str):
        return FactType.STRING
    if isinstance(value, bool):
        return FactType.BOOLEAN
    if isinstance(value, int):
        return FactType.INTEGER
    if isinstance(value, float):
        return FactType.FLOAT
    if value is None:
        return FactType.NULL
    if isinstance(value, Mapping):
        return FactType.OBJECT
    if isinstance(value, list | tuple):
        return FactType.ARRAY
    raise ValidationError(f"a fact value must be JSON, not {type(value).__name__}")


def flatten(values: Mapping[str, Any]) -> list[Leaf]:
    """Every leaf of a facts document, depth first, in the document's order."""
    if not isinstance(values, Mapping):
        raise ValidationError("facts must be a JSON object of fact names to values")
    leaves: list[Leaf] = []
    for name, value in values.items():
        if not isinstance(name, str) or not name:
            raise ValidationError(f"a fact name must be a non-empty string, not {name!r}")
        kind = type_of(value)
        if kind in CONTAINERS and value:
            leaves.append(Leaf((name,), kind, None))
        _walk(value, (name,), leaves)
    return leaves


def _walk(value: Any, path: Path, out: list[Leaf]) -> None:
    if len(path) > MAX_DEPTH:
        raise ValidationError(
            f"the fact {path[0]} nests deeper than {MAX_DEPTH} levels: flatten it"
        )
    if isinstance(value, Mapping):
        if not value:
            out.append(Leaf(path, FactType.OBJECT, {}))
        for key, item in value.items():
            if not isinstance(key, str):
                raise ValidationError(f"a key under {path[0]} is not a string: {key!r}")
            _walk(item, (*path, key), out)
    elif isinstance(value, list | tuple):
        if not value:
            out.append(Leaf(path, FactType.ARRAY, []))
        for index, item in enumerate(value):
            _walk(item, (*path, index), out)
    else:
        out.append(Leaf(path, type_of(value), value))


def inflate(leaves: Iterable[Leaf]) -> dict[str, Any]:
    """The document :func:`flatten` came from (structured top-level markers skipped)."""
    root: dict[str, Any] = {}
    for leaf in leaves:
        if leaf.value is None and leaf.type in CONTAINERS:
            continue
        node: Any = root
        for key, following in zip(leaf.path, leaf.path[1:], strict=False):
            node = _child(node, key, [] if isinstance(following, int) else {})
        value: Any = leaf.value
        if leaf.type in CONTAINERS:
            value = {} if leaf.type is FactType.OBJECT else []
        _set(node, leaf.path[-1], value)
    return root


def _child(node: Any, key: str | int, empty: Any) -> Any:
    if isinstance(node, list):
        assert isinstance(key, int)
        if key == len(node):
            node.append(empty)
        return node[key]
    return node.setdefault(key, empty)


def _set(node: Any, key: str | int, value: Any) -> None:
    if isinstance(node, list) and key == len(node):
        node.append(value)
    else:
        node[key] = value


def encode_path(path: Path) -> str:
    """A path as stored: compact JSON, ``["os","release","major"]``."""
    text = orjson.dumps(path).decode()
    if len(text) > MAX_PATH_CHARS:
        raise ValidationError(
            f"the fact path {text[:80]}... is longer than {MAX_PATH_CHARS} characters"
        )
    return text


def decode_path(text: str) -> Path:
    """The path :func:`encode_path` stored."""
    return tuple(orjson.loads(text))


def columns(kind: FactType, value: Any) -> tuple[str | None, float | None]:
    """The ``(s, n)`` columns a leaf's value is stored in."""
    if kind is FactType.STRING:
        return value, None
    if kind is FactType.BOOLEAN:
        return None, 1.0 if value else 0.0
    if kind is FactType.INTEGER:
        digits = str(value) if abs(value) > EXACT_INTEGER else None
        return digits, float(value)
    if kind is FactType.FLOAT:
        return None, value
    return None, None


def value_of(kind: FactType, s: str | None, n: float | None) -> Any:
    """The value stored as ``(s, n)`` for a scalar leaf of type ``kind``."""
    if kind is FactType.STRING:
        return s
    if kind is FactType.INTEGER:
        return int(s) if s is not None else int(n or 0)
    if kind is FactType.FLOAT:
        return n
    if kind is FactType.BOOLEAN:
        return bool(n)
    if kind is FactType.OBJECT:
        return {}
    if kind is FactType.ARRAY:
        return []
    return None


def rows(values: Mapping[str, Any]) -> dict[Path, tuple[FactType, str | None, float | None]]:
    """A document as the rows the inventory stores: path → (type, s, n)."""
    out: dict[Path, tuple[FactType, str | None, float | None]] = {}
    for leaf in flatten(values):
        out[leaf.path] = (leaf.type, *columns(leaf.type, leaf.value))
    return out


@dataclass(frozen=True)
class Changes:
    """What turns one document's rows into another's."""

    added: dict[Path, tuple[FactType, str | None, float | None]]
    changed: dict[Path, tuple[FactType, str | None, float | None]]  # same path and type
    removed: dict[Path, FactType]

    def __bool__(self) -> bool:
        return bool(self.added or self.changed or self.removed)


def diff(
    old: Mapping[Path, tuple[FactType, str | None, float | None]],
    new: Mapping[Path, tuple[FactType, str | None, float | None]],
) -> Changes:
    """The rows to add, rewrite and delete; a path whose type changed is both removed
    (under its old type) and added (under its new one)."""
    added: dict[Path, tuple[FactType, str | None, float | None]] = {}
    changed: dict[Path, tuple[FactType, str | None, float | None]] = {}
    removed: dict[Path, FactType] = {}
    for path, row in new.items():
        before = old.get(path)
        if before is None:
            added[path] = row
        elif before[0] != row[0]:
            removed[path] = before[0]
            added[path] = row
        elif before != row:
            changed[path] = row
    for path, before in old.items():
        if path not in new:
            removed[path] = before[0]
    return Changes(added, changed, removed)


def digest(values: Mapping[str, Any]) -> str:
    """SHA-1 of a document's canonical JSON (sorted keys): equal documents, equal hashes."""
    try:
        canonical = orjson.dumps(values, option=orjson.OPT_SORT_KEYS)
    except TypeError as error:
        raise ValidationError(f"facts must be JSON: {error}") from error
    if b"\\u0000" in canonical:  # PostgreSQL stores no NUL in text: refuse it everywhere
        raise ValidationError("facts cannot hold the NUL character (\\u0000)")
    return hashlib.sha1(canonical, usedforsecurity=False).hexdigest()


class PathTrie:
    """Path ids as a tree of keys, so that encoding a document builds no path for the
    paths it already knows: the hot loop of a fleet's facts arriving.

    :meth:`encode` gives a document's rows ``(path_id, factset, s, n)`` in document
    order, and the ``(row index, node, type)`` of those whose path has no id yet (their
    path_id is 0); the caller finds ids for them (:meth:`path` names the node),
    :meth:`assign`s them and replaces the rows. The rows are those :func:`rows` gives.
    """

    __slots__ = ("root",)

    def __init__(self) -> None:
        self.root = TrieNode(None, None)

    def encode(
        self, values: Mapping[str, Any], factset: int
    ) -> tuple[list[tuple[Any, ...]], list[tuple[int, TrieNode, FactType]]]:
        if not isinstance(values, Mapping):
            raise ValidationError("facts must be a JSON object of fact names to values")
        out: list[tuple[Any, ...]] = []
        misses: list[tuple[int, TrieNode, FactType]] = []
        root = self.root
        for name, value in values.items():
            if not isinstance(name, str) or not name:
                raise ValidationError(f"a fact name must be a non-empty string, not {name!r}")
            node = root.children.get(name) or root.child(name)
            kind = type(value)
            if (kind is dict or kind is list) and value:
                marker = FactType.OBJECT if kind is dict else FactType.ARRAY
                _emit(node, marker, None, None, factset, out, misses)
            _encode(value, node, 1, factset, out, misses)
        return out, misses

    @staticmethod
    def assign(node: TrieNode, kind: FactType, path_id: int) -> None:
        node.ids[kind] = path_id

    @staticmethod
    def path(node: TrieNode) -> Path:
        keys: list[str | int] = []
        at: TrieNode | None = node
        while at is not None and at.key is not None:
            keys.append(at.key)
            at = at.parent
        return tuple(reversed(keys))


class TrieNode:
    """One key of :class:`PathTrie`; ``ids`` has the path id for each type seen."""

    __slots__ = ("children", "ids", "key", "parent")

    def __init__(self, key: str | int | None, parent: TrieNode | None) -> None:
        self.key = key
        self.parent = parent
        self.children: dict[str | int, TrieNode] = {}
        self.ids: dict[FactType, int] = {}

    def child(self, key: str | int) -> TrieNode:
        node = self.children[key] = TrieNode(key, self)
        return node


def _emit(
    node: TrieNode,
    kind: FactType,
    s: str | None,
    n: float | None,
    factset: int,
    out: list[tuple[Any, ...]],
    misses: list[tuple[int, TrieNode, FactType]],
) -> None:
    path_id = node.ids.get(kind)
    if path_id is None:
        misses.append((len(out), node, kind))
        path_id = 0
    # Tuples, not lists: the garbage collector stops tracking tuples of atoms, and a
    # fleet's facts are millions of these.
    out.append((path_id, factset, s, n))


def _encode(
    value: Any,
    node: TrieNode,
    depth: int,
    factset: int,
    out: list[tuple[Any, ...]],
    misses: list[tuple[int, TrieNode, FactType]],
) -> None:
    kind = type(value)
    if kind is str:
        _emit(node, FactType.STRING, value, None, factset, out, misses)
    elif kind is dict:
        if depth >= MAX_DEPTH:
            raise ValidationError(f"a fact nests deeper than {MAX_DEPTH} levels: flatten it")
        if not value:
            _emit(node, FactType.OBJECT, None, None, factset, out, misses)
        children = node.children
        for key, item in value.items():
            if type(key) is not str:
                raise ValidationError(f"a key is not a string: {key!r}")
            child = children.get(key) or node.child(key)
            if type(item) is str:  # most leaves: no call for them
                path_id = child.ids.get(FactType.STRING)
                if path_id is None:
                    misses.append((len(out), child, FactType.STRING))
                    path_id = 0
                out.append((path_id, factset, item, None))
            else:
                _encode(item, child, depth + 1, factset, out, misses)
    elif kind is list:
        if depth >= MAX_DEPTH:
            raise ValidationError(f"a fact nests deeper than {MAX_DEPTH} levels: flatten it")
        if not value:
            _emit(node, FactType.ARRAY, None, None, factset, out, misses)
        children = node.children
        for index, item in enumerate(value):
            _encode(item, children.get(index) or node.child(index), depth + 1, factset, out, misses)
    elif kind is bool:
        _emit(node, FactType.BOOLEAN, None, 1.0 if value else 0.0, factset, out, misses)
    elif kind is int:
        digits = str(value) if abs(value) > EXACT_INTEGER else None
        _emit(node, FactType.INTEGER, digits, float(value), factset, out, misses)
    elif kind is float:
        _emit(node, FactType.FLOAT, None, value, factset, out, misses)
    elif value is None:
        _emit(node, FactType.NULL, None, None, factset, out, misses)
    else:  # another Mapping, sequence or number type: take the general road
        for leaf in _general(value, depth):
            s, n = columns(leaf.type, leaf.value)
            target = node
            for key in leaf.path:
                target = target.children.get(key) or target.child(key)
            _emit(target, leaf.type, s, n, factset, out, misses)


def _general(value: Any, depth: int) -> list[Leaf]:
    """Leaves of an unusual value, with paths relative to it."""
    if depth >= MAX_DEPTH:
        raise ValidationError(f"a fact nests deeper than {MAX_DEPTH} levels: flatten it")
    out: list[Leaf] = []
    _walk(value, (), out)
    return out
