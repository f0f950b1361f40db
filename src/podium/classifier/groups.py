"""Node groups: their tree, the changes it accepts, and how a node is classified. Pure.

Groups form a tree under the root, "All Nodes" (its own parent). A node matches a group
when it matches the group's rule and that of every ancestor; a group without a rule
matches no node. Pinned nodes live in the rule (see :mod:`podium.classifier.rules`), so
a pinned node still has to match the ancestors, as in PE.

A node's classification merges its *leaf* groups (matched groups with no matched child):
each leaf brings its classes, class parameters, variables and ``config_data`` with what
it inherits (nearer groups override farther ones); leaves that set different values for
the same parameter or variable, or different environments, are a
:class:`ClassificationConflict` — unless exactly one environment comes from groups
with ``environment_trumps``, which then wins.

Sizes: a :class:`Hierarchy` compiles each rule once; :func:`group_members` then costs a
few rule evaluations per node: about 25 ms per 10,000 nodes on one core for a group two
levels below the root with five comparisons in all (classifying one node against a
small tree, about 25 µs).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from functools import cached_property
from typing import Any, Final, NewType

from podium.classifier import rules
from podium.classifier.rules import Matcher, Rule
from podium.errors import Conflict, NotFound, PodiumError, ValidationError

GroupId = NewType("GroupId", str)

ROOT_ID: Final = GroupId("00000000-0000-4000-8000-000000000000")
ROOT_NAME: Final = "All Nodes"
ROOT_RULE: Final[Rule] = ["and", ["~", "name", ".*"]]
DEFAULT_ENVIRONMENT: Final = "production"

UUID: Final = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
ENVIRONMENT: Final = re.compile(r"[a-z0-9_]+")
CLASS_NAME: Final = re.compile(r"(?:::)?[a-z][a-z0-9_]*(?:::[a-z][a-z0-9_]*)*")
MAX_NAME: Final = 255

# Keys of a group object; those after the first line are read-only and ignored on input.
_GROUP_KEYS: Final = frozenset(
    {"id", "name", "parent", "description", "environment", "environment_trumps", "rule"}
    | {"classes", "variables", "config_data", "serial_number"}
    | {"last_edited", "deleted"}
)


class GroupError(PodiumError):
    """A change the group tree cannot take; PE answers these 422 Unprocessable Entity."""

    kind = "unprocessable-entity"
    status = 422


class ClassificationConflict(PodiumError):
    """A node's leaf groups disagree; ``details`` lists each value and where it came from."""

    kind = "classification-conflict"
    status = 500


def schema_violation(msg: str, submitted: object) -> ValidationError:
    """A request body that does not have the shape PE's API takes (400)."""
    return ValidationError(msg, kind="schema-violation", details={"submitted": submitted})


@dataclass(frozen=True)
class Group:
    """A node group as PE's classifier has it; ``rule`` None matches no node."""

    id: GroupId
    name: str
    parent: GroupId
    rule: Rule | None = None
    environment: str = DEFAULT_ENVIRONMENT
    environment_trumps: bool = False
    description: str | None = None
    classes: dict[str, dict[str, Any]] = field(default_factory=dict)
    variables: dict[str, Any] = field(default_factory=dict)
    config_data: dict[str, dict[str, Any]] = field(default_factory=dict)
    serial_number: int = 0
    last_edited: datetime | None = None

    @property
    def is_root(self) -> bool:
        return self.id == ROOT_ID

    @property
    def pinned(self) -> list[str]:
        """The certnames pinned to this group."""
        return rules.pinned_nodes(self.rule)

    def same_content(self, other: Group) -> bool:
        """Equal but for the bookkeeping (serial number, last edit)."""
        return replace(self, serial_number=0, last_edited=None) == replace(
            other, serial_number=0, last_edited=None
        )

    def to_json(self) -> dict[str, Any]:
        """The group in the shape of PE's ``/classifier-api/v1/groups``."""
        out: dict[str, Any] = {
            "id": self.id,
            "name": self.name,
            "parent": self.parent,
            "environment": self.environment,
            "environment_trumps": self.environment_trumps,
            "classes": self.classes,
            "variables": self.variables,
            "config_data": self.config_data,
            "serial_number": self.serial_number,
            "last_edited": _timestamp(self.last_edited),
        }
        if self.description is not None:
            out["description"] = self.description
        if self.rule is not None:
            out["rule"] = self.rule
        return out


def _timestamp(at: datetime | None) -> str | None:
    return None if at is None else at.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def root_group() -> Group:
    """ "All Nodes", as a new classifier has it."""
    return Group(id=ROOT_ID, name=ROOT_NAME, parent=ROOT_ID, rule=list(ROOT_RULE))


# -- reading request bodies -----------------------------------------------------------


def _object(value: object, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise schema_violation(f"{what} must be a JSON object, not {_kind(value)}", value)
    return value


def _kind(value: object) -> str:
    names = {dict: "an object", list: "an array", str: "a string", bool: "a boolean"}
    if value is None:
        return "null"
    return names.get(type(value), "a number" if isinstance(value, int | float) else "a value")


def check_group_id(raw: str) -> GroupId:
    """``raw`` if it is a group id (a lower-case UUID), else a ``malformed-uuid`` 400."""
    if not UUID.fullmatch(raw):
        raise ValidationError(
            f"{raw!r} is not a node group id: ids are UUIDs such as {ROOT_ID}",
            kind="malformed-uuid",
            details={"id": raw},
        )
    return GroupId(raw)


def _name(value: object, body: object) -> str:
    if not isinstance(value, str) or not value.strip():
        raise schema_violation(f"a group's name is a non-empty string, not {_kind(value)}", body)
    if len(value) > MAX_NAME or any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise schema_violation(
            f"a group's name has at most {MAX_NAME} characters and no control characters", body
        )
    return value


def _parent(value: object, body: object) -> GroupId:
    if not isinstance(value, str) or not UUID.fullmatch(value):
        raise schema_violation(
            f"parent must be the id of a group (a UUID such as {ROOT_ID}), not {value!r}", body
        )
    return GroupId(value)


def _environment(value: object, body: object) -> str:
    if not isinstance(value, str) or not ENVIRONMENT.fullmatch(value):
        raise schema_violation(
            f"invalid environment {value!r}: environment names are lower-case letters, "
            "digits and underscores, such as production",
            body,
        )
    return value


def _flag(value: object, what: str, body: object) -> bool:
    if not isinstance(value, bool):
        raise schema_violation(f"{what} is true or false, not {_kind(value)}", body)
    return value


def _description(value: object, body: object) -> str | None:
    if value is not None and not isinstance(value, str):
        raise schema_violation(f"description is a string, not {_kind(value)}", body)
    return value


def _rule(value: object, body: object) -> Rule | None:
    if value is None:
        return None
    try:
        return rules.validate_rule(value)
    except rules.RuleError as exc:
        exc.details = {**exc.details, "submitted": body}
        raise


def _classes(value: object, what: str, body: object, *, delta: bool) -> dict[str, Any]:
    """``classes`` or ``config_data``: ``{class: {parameter: value}}``; in a delta a null
    class or parameter means "remove it"."""
    if not isinstance(value, dict):
        raise schema_violation(
            f'{what} is an object of classes, such as {{"ntp": {{"servers": []}}}}, '
            f"not {_kind(value)}",
            body,
        )
    for name, params in value.items():
        if not CLASS_NAME.fullmatch(name):
            raise schema_violation(
                f"{what}: {name!r} is not a Puppet class name (such as ntp or profile::web)",
                body,
            )
        if params is None and delta:
            continue
        if not isinstance(params, dict):
            raise schema_violation(
                f"{what}.{name} is an object of parameters (or {{}}), not {_kind(params)}", body
            )
        for param in params:
            if not param:
                raise schema_violation(f"{what}.{name} has a parameter with an empty name", body)
    return value


def _variables(value: object, body: object) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise schema_violation(f"variables is an object, not {_kind(value)}", body)
    if "" in value:
        raise schema_violation("variables has a variable with an empty name", body)
    return value


def _check_keys(obj: dict[str, Any], what: str) -> None:
    unknown = sorted(set(obj) - _GROUP_KEYS)
    if unknown:
        raise schema_violation(
            f"{what} has unknown keys {', '.join(map(repr, unknown))}; a group has "
            "name, parent, rule, environment, environment_trumps, description, classes, "
            "variables and config_data",
            obj,
        )


def _check_id(obj: dict[str, Any], group_id: GroupId) -> None:
    if "id" in obj and obj["id"] != group_id:
        raise ValidationError(
            f"the body's id {obj['id']!r} is not the id in the URL, {group_id}: "
            "leave it out or make them the same",
            kind="conflicting-ids",
            details={"submitted": obj["id"], "fromUrl": group_id},
        )


def parse_group(body: object, group_id: GroupId) -> Group:
    """A whole group from a ``POST /groups`` or ``PUT /groups/:id`` body.

    ``name``, ``parent`` and ``classes`` are required, as in PE; read-only keys
    (``serial_number``, ``last_edited``, ``deleted``) are ignored.
    """
    obj = _object(body, "a group")
    _check_keys(obj, "the group")
    _check_id(obj, group_id)
    for key in ("name", "parent", "classes"):
        if key not in obj:
            raise schema_violation(f"a group needs {key!r} (name, parent and classes)", obj)
    return Group(
        id=group_id,
        name=_name(obj["name"], obj),
        parent=_parent(obj["parent"], obj),
        rule=_rule(obj.get("rule"), obj),
        environment=_environment(obj.get("environment", DEFAULT_ENVIRONMENT), obj),
        environment_trumps=_flag(obj.get("environment_trumps", False), "environment_trumps", obj),
        description=_description(obj.get("description"), obj),
        classes=_classes(obj["classes"], "classes", obj, delta=False),
        variables=_variables(obj.get("variables", {}), obj),
        config_data=_classes(obj.get("config_data", {}), "config_data", obj, delta=False),
    )


def expected_serial(body: object) -> int | None:
    """The ``serial_number`` a write says it is based on, if it gives one."""
    if not isinstance(body, dict) or "serial_number" not in body:
        return None
    value = body["serial_number"]
    if isinstance(value, bool) or not isinstance(value, int):
        raise schema_violation(f"serial_number is a whole number, not {_kind(value)}", body)
    return value


def check_serial(current: Group, expected: int | None) -> None:
    """Refuse (409) a write based on another version of ``current`` than its own."""
    if expected is not None and expected != current.serial_number:
        raise Conflict(
            f"the group {current.name!r} changed since you read it (serial number "
            f"{current.serial_number}, not {expected}): read it again and redo your change",
            kind="conflict",
            details={"serial_number": current.serial_number, "submitted": expected},
        )


def _merge_classes(old: dict[str, Any], delta: dict[str, Any]) -> dict[str, Any]:
    merged = {name: dict(params) for name, params in old.items()}
    for name, params in delta.items():
        if params is None:
            merged.pop(name, None)
            continue
        combined = {**merged.get(name, {}), **params}
        merged[name] = {k: v for k, v in combined.items() if v is not None}
    return merged


def apply_delta(group: Group, delta: object) -> Group:
    """``group`` changed as ``POST /groups/:id`` changes it, PE's way.

    ``classes``, ``config_data`` and ``variables`` are merged into the group's, and a key
    set to null removes it; ``rule`` (null removes it), ``name``, ``parent``,
    ``environment``, ``environment_trumps`` and ``description`` are replaced. A
    ``serial_number`` that is not the group's is refused (409).
    """
    obj = _object(delta, "a group delta")
    _check_keys(obj, "the delta")
    _check_id(obj, group.id)
    check_serial(group, expected_serial(obj))
    changes: dict[str, Any] = {}
    if "name" in obj:
        changes["name"] = _name(obj["name"], obj)
    if "parent" in obj:
        changes["parent"] = _parent(obj["parent"], obj)
    if "rule" in obj:
        changes["rule"] = _rule(obj["rule"], obj)
    if "environment" in obj:
        changes["environment"] = _environment(obj["environment"], obj)
    if "environment_trumps" in obj:
        changes["environment_trumps"] = _flag(obj["environment_trumps"], "environment_trumps", obj)
    if "description" in obj:
        changes["description"] = _description(obj["description"], obj)
    if "classes" in obj:
        delta_classes = _classes(obj["classes"], "classes", obj, delta=True)
        changes["classes"] = _merge_classes(group.classes, delta_classes)
    if "config_data" in obj:
        delta_data = _classes(obj["config_data"], "config_data", obj, delta=True)
        changes["config_data"] = _merge_classes(group.config_data, delta_data)
    if "variables" in obj:
        merged = {**group.variables, **_variables(obj["variables"], obj)}
        changes["variables"] = {k: v for k, v in merged.items() if v is not None}
    return replace(group, **changes)


def pin_nodes(group: Group, certnames: Iterable[str]) -> Group:
    """``group`` with ``certnames`` pinned to it."""
    return replace(group, rule=rules.pin(group.rule, certnames))


def unpin_nodes(group: Group, certnames: Iterable[str]) -> Group:
    """``group`` without the pins of ``certnames`` (nodes not pinned are ignored)."""
    return replace(group, rule=rules.unpin(group.rule, certnames))


# -- the tree -------------------------------------------------------------------------


class Hierarchy:
    """The groups by id, with their children; compiles each rule once, when first needed."""

    def __init__(self, groups: Iterable[Group]) -> None:
        self.by_id: dict[GroupId, Group] = {g.id: g for g in groups}
        self.children: dict[GroupId, list[Group]] = {}
        for group in sorted(self.by_id.values(), key=lambda g: g.name):
            if group.parent != group.id:
                self.children.setdefault(group.parent, []).append(group)

    def get(self, group_id: str) -> Group:
        group = self.by_id.get(GroupId(group_id))
        if group is None:
            raise unknown_group(group_id)
        return group

    def lineage(self, group_id: str) -> list[Group]:
        """The group, its parent, ... up to the root; shorter if the chain is broken."""
        chain = [self.get(group_id)]
        seen = {chain[0].id}
        while chain[-1].parent != chain[-1].id:
            parent = self.by_id.get(chain[-1].parent)
            if parent is None or parent.id in seen:
                break
            chain.append(parent)
            seen.add(parent.id)
        return chain

    def reaches_root(self, lineage: list[Group]) -> bool:
        return lineage[-1].is_root

    def in_tree_order(self) -> list[tuple[int, Group]]:
        """Every group reachable from the root with its depth, parents before children."""
        out: list[tuple[int, Group]] = []
        root = self.by_id.get(ROOT_ID)
        stack = [(0, root)] if root is not None else []
        while stack:
            depth, group = stack.pop()
            out.append((depth, group))
            stack.extend((depth + 1, c) for c in reversed(self.children.get(group.id, [])))
        return out

    @cached_property
    def matchers(self) -> dict[GroupId, Matcher | None]:
        return {
            gid: None if g.rule is None else rules.compile_rule(g.rule)
            for gid, g in self.by_id.items()
        }

    def inherited(self, group_id: str) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
        """The classes, variables and config_data the group has with its ancestors'."""
        classes: dict[str, Any] = {}
        variables: dict[str, Any] = {}
        config_data: dict[str, Any] = {}
        for group in reversed(self.lineage(group_id)):
            classes = _merge_classes(classes, group.classes)
            variables = {**variables, **group.variables}
            config_data = _merge_classes(config_data, group.config_data)
        return classes, variables, config_data

    def inherited_json(self, group_id: str) -> dict[str, Any]:
        """The group's JSON with what it inherits (``GET /groups?inherited=true``)."""
        classes, variables, config_data = self.inherited(group_id)
        return {
            **self.get(group_id).to_json(),
            "classes": classes,
            "variables": variables,
            "config_data": config_data,
        }

    def rule_with_inherited(self, group_id: str) -> Rule | None:
        """The rule a node must match to be in the group: its own and its ancestors'."""
        lineage = self.lineage(group_id)
        if not self.reaches_root(lineage) or any(g.rule is None for g in lineage):
            return None
        if len(lineage) == 1:
            return lineage[0].rule
        return ["and", *(g.rule for g in lineage)]


def _hierarchy(groups: Hierarchy | Iterable[Group]) -> Hierarchy:
    return groups if isinstance(groups, Hierarchy) else Hierarchy(groups)


def unknown_group(group_id: str) -> NotFound:
    return NotFound(
        f"no node group has the id {group_id}: list them with GET /classifier-api/v1/groups",
        kind="not-found",
        details={"id": group_id},
    )


def check_change(groups: Hierarchy | Iterable[Group], new: Group) -> None:
    """Refuse (422) a new or replaced group that would break the tree: a missing parent,
    a cycle, a name another group has, or a change to the root's rule or parent."""
    tree = _hierarchy(groups)
    if new.is_root:
        if new.rule != ROOT_RULE:
            raise GroupError(
                f"the rule of {new.name!r}, the root group, matches every node and cannot "
                "change: put the rule on a child group instead",
                kind="root-rule-edit",
                details={"submitted": new.to_json()},
            )
        if new.parent != ROOT_ID:
            raise GroupError(
                "the root group is its own parent and cannot have another",
                kind="inheritance-cycle",
                details={"submitted": new.to_json()},
            )
    elif new.parent not in tree.by_id and new.parent != new.id:
        raise GroupError(
            f"the parent {new.parent} of {new.name!r} is not a group: create it first or "
            "choose another",
            kind="missing-parent",
            details={"submitted": new.to_json()},
        )
    for other in tree.by_id.values():
        if other.name == new.name and other.id != new.id:
            raise GroupError(
                f"a group named {new.name!r} already exists ({other.id}): choose another name",
                kind="uniqueness-violation",
                details={"conflict": {"name": new.name}, "constraintName": "uq_node_groups_name"},
            )
    if not new.is_root and new.parent == new.id:
        raise GroupError(
            f"{new.name!r} cannot be its own parent (a cycle): only the root group is",
            kind="inheritance-cycle",
            details={"groups": [new.to_json()]},
        )
    if not new.is_root:
        by_id = {**tree.by_id, new.id: new}
        chain = [new]
        seen = {new.id}
        while chain[-1].parent != chain[-1].id:
            parent = by_id.get(chain[-1].parent)
            if parent is None:
                break
            if parent.id in seen:
                cycle = " -> ".join(repr(g.name) for g in [*chain, parent])
                raise GroupError(
                    f"making {new.name!r} a child of {by_id[new.parent].name!r} would be a "
                    f"cycle ({cycle}): a group cannot descend from itself",
                    kind="inheritance-cycle",
                    details={"groups": [g.to_json() for g in chain]},
                )
            chain.append(parent)
            seen.add(parent.id)


def check_delete(groups: Hierarchy | Iterable[Group], group_id: str) -> Group:
    """The group to delete, or 422 if it is the root or has children (named)."""
    tree = _hierarchy(groups)
    group = tree.get(group_id)
    if group.is_root:
        raise GroupError(
            f"{group.name!r} is the root group and cannot be deleted",
            kind="root-group-delete",
            details={"group": group.to_json()},
        )
    children = tree.children.get(group.id, [])
    if children:
        names = ", ".join(repr(c.name) for c in children)
        raise GroupError(
            f"{group.name!r} has child groups ({names}): delete them or give them another "
            "parent first",
            kind="children-present",
            details={"group": group.to_json(), "children": [c.to_json() for c in children]},
        )
    return group


# -- matching and classifying ---------------------------------------------------------


def groups_matching(
    groups: Hierarchy | Iterable[Group],
    certname: str,
    facts: Mapping[str, Any],
    trusted: Mapping[str, Any],
) -> list[Group]:
    """The groups the node matches (its rule and its ancestors'), parents first."""
    tree = _hierarchy(groups)
    matchers = tree.matchers
    memo: dict[GroupId, bool] = {}

    def own(gid: GroupId) -> bool:
        matcher = matchers[gid]
        return matcher is not None and matcher(certname, facts, trusted)

    for start in tree.by_id:
        path: list[GroupId] = []
        gid = start
        above: bool | None
        while True:
            if gid in memo:
                above = memo[gid]
                break
            group = tree.by_id.get(gid)
            if group is None or gid in path:  # a missing parent, or a cycle
                above = None
                break
            path.append(gid)
            if group.parent == gid:  # the root: nothing above it
                above = True
                break
            gid = group.parent
        if above is None:
            memo.update(dict.fromkeys(path, False))
            continue
        for pid in reversed(path):
            above = above and own(pid)
            memo[pid] = above
    return [group for _, group in tree.in_tree_order() if memo.get(group.id)]


@dataclass(frozen=True)
class Classification:
    """What the classifier tells Puppet about one node (PE's v1 classification)."""

    name: str
    environment: str
    groups: list[GroupId]  # every group the node matched, parents first
    classes: dict[str, dict[str, Any]]
    variables: dict[str, Any]
    config_data: dict[str, dict[str, Any]]

    @property
    def parameters(self) -> dict[str, Any]:
        """PE's name for the top-level variables."""
        return self.variables

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "groups": self.groups,
            "environment": self.environment,
            "classes": self.classes,
            "parameters": self.variables,
            "config_data": self.config_data,
        }


def _canonical(value: object) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def classify(
    groups: Hierarchy | Iterable[Group],
    certname: str,
    facts: Mapping[str, Any],
    trusted: Mapping[str, Any],
) -> Classification:
    """The node's classification, or :class:`ClassificationConflict` (PE's 500)."""
    tree = _hierarchy(groups)
    matched = groups_matching(tree, certname, facts, trusted)
    parents = {g.parent for g in matched if g.parent != g.id}
    leaves = [g for g in matched if g.id not in parents]
    inherited = {leaf.id: tree.inherited(leaf.id) for leaf in leaves}
    _raise_conflicts(tree, certname, leaves, inherited)
    classes: dict[str, Any] = {}
    variables: dict[str, Any] = {}
    config_data: dict[str, Any] = {}
    for leaf in leaves:
        leaf_classes, leaf_variables, leaf_data = inherited[leaf.id]
        classes = _merge_classes(classes, leaf_classes)
        variables = {**variables, **leaf_variables}
        config_data = _merge_classes(config_data, leaf_data)
    trumps = [leaf.environment for leaf in leaves if leaf.environment_trumps]
    environment = (trumps or [leaf.environment for leaf in leaves] or [DEFAULT_ENVIRONMENT])[0]
    return Classification(
        name=certname,
        environment=environment,
        groups=[g.id for g in matched],
        classes=classes,
        variables=variables,
        config_data=config_data,
    )


def _raise_conflicts(
    tree: Hierarchy,
    certname: str,
    leaves: list[Group],
    inherited: dict[GroupId, tuple[dict[str, Any], dict[str, Any], dict[str, Any]]],
) -> None:
    details: dict[str, Any] = {}
    problems: list[str] = []

    def source(leaf: Group, path: tuple[str, ...], value: object) -> dict[str, Any]:
        defined_by = next(
            (g for g in tree.lineage(leaf.id) if _get_path(g, path) == _canonical(value)), leaf
        )
        return {"value": value, "from": leaf.to_json(), "defined_by": defined_by.to_json()}

    trumping = [leaf for leaf in leaves if leaf.environment_trumps]
    deciders = trumping or leaves
    if len({leaf.environment for leaf in deciders}) > 1:
        details["environment"] = [
            {"value": leaf.environment, "from": leaf.to_json(), "defined_by": leaf.to_json()}
            for leaf in deciders
        ]
        envs = ", ".join(f"{leaf.environment} from {leaf.name!r}" for leaf in deciders)
        advice = (
            "only one of them may set environment_trumps"
            if trumping
            else "set environment_trumps on the group whose environment should win"
        )
        problems.append(f"environment ({envs}; {advice})")
    for index, section in ((0, "classes"), (2, "config_data")):
        found: dict[tuple[str, str], dict[str, tuple[Group, object]]] = {}
        for leaf in leaves:
            for cls, params in inherited[leaf.id][index].items():
                for param, value in params.items():
                    found.setdefault((cls, param), {}).setdefault(_canonical(value), (leaf, value))
        for (cls, param), values in found.items():
            if len(values) > 1:
                entries = [source(leaf, (section, cls, param), v) for leaf, v in values.values()]
                details.setdefault(section, {}).setdefault(cls, {})[param] = entries
                problems.append(f"{section} {cls}::{param}")
    seen_vars: dict[str, dict[str, tuple[Group, object]]] = {}
    for leaf in leaves:
        for name, value in inherited[leaf.id][1].items():
            seen_vars.setdefault(name, {}).setdefault(_canonical(value), (leaf, value))
    for name, values in seen_vars.items():
        if len(values) > 1:
            details.setdefault("variables", {})[name] = [
                source(leaf, ("variables", name), v) for leaf, v in values.values()
            ]
            problems.append(f"variable {name}")
    if problems:
        raise ClassificationConflict(
            f"{certname} is in unrelated node groups that set different values for "
            f"{'; '.join(problems)}: set the value in one group, or make one group the "
            "parent of the other",
            details=details,
        )


def _get_path(group: Group, path: tuple[str, ...]) -> str | None:
    section, *keys = path
    value: Any = getattr(group, section)
    for key in keys:
        if not isinstance(value, dict) or key not in value:
            return None
        value = value[key]
    return _canonical(value)


def group_members(
    groups: Hierarchy | Iterable[Group],
    group_id: str,
    nodes: Iterable[tuple[str, Mapping[str, Any], Mapping[str, Any]]],
) -> list[str]:
    """The certnames, among ``nodes`` ``(certname, facts, trusted)``, that the group
    ``group_id`` matches (pinned nodes included), in the order given.

    Compiles the group's and its ancestors' rules once, then evaluates them per node:
    a few microseconds a node, about 25 ms per 10,000.
    """
    tree = _hierarchy(groups)
    lineage = tree.lineage(group_id)
    if not tree.reaches_root(lineage):
        return []
    found = [tree.matchers[g.id] for g in lineage]
    if any(m is None for m in found):
        return []
    matchers = [m for m in found if m is not None]
    return [
        certname
        for certname, facts, trusted in nodes
        if all(m(certname, facts, trusted) for m in matchers)
    ]
