"""Permissions: what they are called, what they grant, which nodes they reach (pure).

A permission is PE's triple ``object_type``, ``action``, ``instance`` (``"*"`` for every
instance), written ``tasks:run:package`` for short. Running things on nodes
(``tasks:run``, ``puppet_agent:run``) may be limited to the nodes of a node group or
those a PQL query matches: ``tasks:run:package@node_group=<id>``,
``puppet_agent:run@query=inventory[certname] { facts.os.family = "Debian" }``; in JSON
the limit is a fourth key, ``"nodes": {"node_group": "<id>"}`` or ``{"query": "..."}``.
Without one it reaches every node.

Who holds what is a :class:`Grants`: the union of a user's roles' permissions.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal

from podium.errors import ValidationError

ANY: Final = "*"
_KIND = "puppetlabs.rbac/invalid-permission"

NodeScopeKind = Literal["node_group", "query"]


@dataclass(frozen=True)
class Action:
    name: str
    display_name: str
    description: str
    has_instances: bool = False
    node_scoped: bool = False  # may be limited to a node group or a PQL query


@dataclass(frozen=True)
class ObjectType:
    object_type: str
    display_name: str
    description: str
    actions: tuple[Action, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "object_type": self.object_type,
            "display_name": self.display_name,
            "description": self.description,
            "actions": [
                {
                    "name": a.name,
                    "display_name": a.display_name,
                    "description": a.description,
                    "has_instances": a.has_instances,
                    "node_scoped": a.node_scoped,
                }
                for a in self.actions
            ],
        }


TYPES: Final[tuple[ObjectType, ...]] = (
    ObjectType(
        "orchestrator",
        "Orchestrator",
        "Jobs and the tasks that can be run.",
        (
            Action("view", "View", "See jobs, their nodes, events and results, and tasks."),
            Action("stop", "Stop any job", "Stop jobs other users started."),
        ),
    ),
    ObjectType(
        "tasks",
        "Tasks",
        "Tasks run on nodes.",
        (
            Action(
                "run",
                "Run",
                "Run a task (or every task: *) on all nodes, a node group's or a query's.",
                has_instances=True,
                node_scoped=True,
            ),
        ),
    ),
    ObjectType(
        "puppet_agent",
        "Puppet agent",
        "Puppet runs on nodes.",
        (
            Action(
                "run",
                "Run Puppet",
                "Run Puppet on all nodes, a node group's or a query's.",
                node_scoped=True,
            ),
        ),
    ),
    ObjectType(
        "plans",
        "Plans",
        "Plans run by the orchestrator.",
        (Action("run", "Run", "Run a plan (or every plan: *).", has_instances=True),),
    ),
    ObjectType(
        "nodes",
        "Nodes",
        "The inventory: nodes and their facts.",
        (
            Action("view_data", "View node data", "Read facts and query the inventory."),
            Action("edit_data", "Submit node data", "Submit facts and deactivate nodes."),
        ),
    ),
    ObjectType(
        "node_groups",
        "Node groups",
        "The classifier's node groups.",
        (Action("view", "View", "See node groups, their rules and nodes."),),
    ),
    ObjectType(
        "groups",
        "Node group changes",
        "Changing the classifier's node groups.",
        (Action("edit", "Edit", "Create, change and delete node groups; pin nodes."),),
    ),
    ObjectType(
        "users",
        "Users and roles",
        "Local and directory users, service accounts, roles, tokens.",
        (
            Action("view", "View", "See users, roles and directory groups."),
            Action(
                "edit",
                "Edit",
                "Create, change and delete users and roles; revoke others' tokens.",
            ),
        ),
    ),
    ObjectType(
        "activity",
        "Activity",
        "The activity log.",
        (Action("view", "View", "Read who did what, and when."),),
    ),
    ObjectType(
        "certificates",
        "Certificates",
        "The certificate authority.",
        (Action("sign", "Sign and revoke", "Sign, revoke and clean node certificates."),),
    ),
)

_ACTIONS: Final[dict[tuple[str, str], Action]] = {
    (t.object_type, a.name): a for t in TYPES for a in t.actions
}


@dataclass(frozen=True)
class NodeScope:
    """Which nodes a permission reaches: a node group's (by id) or a PQL query's."""

    kind: NodeScopeKind
    value: str

    def __str__(self) -> str:
        return f"{self.kind}={self.value}"

    def describe(self) -> str:
        return f"node group {self.value}" if self.kind == "node_group" else f"query {self.value}"


@dataclass(frozen=True)
class Permission:
    """PE's ``object_type``/``action``/``instance`` triple, maybe limited to some nodes."""

    object_type: str
    action: str
    instance: str = ANY
    nodes: NodeScope | None = None  # None: every node

    def __post_init__(self) -> None:
        if self.object_type == ANY:  # the administrators' all-powerful permission
            if self.action != ANY or self.instance != ANY or self.nodes is not None:
                raise ValidationError("the permission *:* must be *:*:* and reach every node")
            return
        action = _ACTIONS.get((self.object_type, self.action))
        if action is None:
            known = ", ".join(f"{t}:{a}" for t, a in _ACTIONS)
            raise ValidationError(
                f"unknown permission {self.object_type}:{self.action}; known: {known}",
                kind=_KIND,
            )
        if self.instance != ANY and not action.has_instances:
            raise ValidationError(
                f"{self.object_type}:{self.action} applies to every instance: use * "
                f"instead of {self.instance!r}",
                kind=_KIND,
            )
        if not self.instance:
            raise ValidationError("a permission's instance is a name or *", kind=_KIND)
        if self.nodes is not None:
            if not action.node_scoped:
                raise ValidationError(
                    f"{self.object_type}:{self.action} cannot be limited to nodes", kind=_KIND
                )
            if not self.nodes.value.strip():
                raise ValidationError(f"an empty {self.nodes.kind} limit", kind=_KIND)

    def __str__(self) -> str:
        text = f"{self.object_type}:{self.action}:{self.instance}"
        return f"{text}@{self.nodes}" if self.nodes is not None else text

    def grants(self, object_type: str, action: str, instance: str | None = None) -> bool:
        """Whether this allows ``action`` on ``object_type`` (on ``instance``; None: on
        some instance), on some nodes at least."""
        if self.object_type == ANY:
            return True
        if (self.object_type, self.action) != (object_type, action):
            return False
        return instance is None or self.instance in (ANY, instance)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "object_type": self.object_type,
            "action": self.action,
            "instance": self.instance,
        }
        if self.nodes is not None:
            out["nodes"] = {self.nodes.kind: self.nodes.value}
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Permission:
        """From the API's JSON; anything else is a :class:`ValidationError`."""
        if not isinstance(data, Mapping):
            raise ValidationError("a permission is an object with object_type, action, instance")
        unknown = set(data) - {"object_type", "action", "instance", "nodes"}
        if unknown:
            raise ValidationError(
                f"unknown keys in a permission: {', '.join(sorted(unknown))}", kind=_KIND
            )
        parts = [data.get(k, ANY if k == "instance" else None) for k in _TRIPLE]
        if not all(isinstance(p, str) for p in parts):
            raise ValidationError(
                "a permission's object_type, action and instance are strings", kind=_KIND
            )
        nodes = data.get("nodes")
        scope = None
        if nodes is not None:
            if not isinstance(nodes, Mapping) or len(nodes) != 1:
                raise ValidationError(
                    'a permission\'s "nodes" is {"node_group": ID} or {"query": PQL}', kind=_KIND
                )
            ((kind, value),) = nodes.items()
            scope = _scope(kind, value)
        object_type, action, instance = parts
        return cls(object_type, action, instance, nodes=scope)

    @classmethod
    def parse(cls, text: str) -> Permission:
        """From ``type:action[:instance][@node_group=ID|@query=PQL]``."""
        head, at, limit = text.partition("@")
        parts = head.strip().split(":", 2)
        if len(parts) < 2 or not all(parts):
            raise ValidationError(
                f"cannot read the permission {text!r}: write type:action[:instance], e.g. "
                "tasks:run:package or puppet_agent:run@node_group=<id>",
                kind=_KIND,
            )
        scope = None
        if at:
            kind, eq, value = limit.partition("=")
            if not eq:
                raise ValidationError(
                    f"cannot read the node limit {limit!r}: write @node_group=<id> or @query=<PQL>",
                    kind=_KIND,
                )
            scope = _scope(kind.strip(), value.strip())
        return cls(parts[0], parts[1], parts[2] if len(parts) == 3 else ANY, nodes=scope)


_TRIPLE: Final = ("object_type", "action", "instance")


def _scope(kind: Any, value: Any) -> NodeScope:
    if kind not in ("node_group", "query") or not isinstance(value, str):
        raise ValidationError(
            f"a node limit is node_group=<id> or query=<PQL>, not {kind}={value!r}", kind=_KIND
        )
    return NodeScope(kind, value)


EVERYTHING: Final = Permission(ANY, ANY)


@dataclass(frozen=True)
class Grants:
    """The permissions a principal holds (its roles' union); superusers hold everything."""

    permissions: tuple[Permission, ...] = ()
    superuser: bool = False

    def allows(self, object_type: str, action: str, instance: str | None = None) -> bool:
        """On some nodes at least, for node-scoped actions."""
        return self.superuser or any(
            p.grants(object_type, action, instance) for p in self.permissions
        )

    def node_scopes(self, object_type: str, action: str, instance: str) -> NodeReach:
        """Which nodes ``action`` on ``instance`` reaches."""
        if self.superuser:
            return NodeReach(everywhere=True)
        scopes: list[NodeScope] = []
        for p in self.permissions:
            if p.grants(object_type, action, instance):
                if p.nodes is None:
                    return NodeReach(everywhere=True)
                scopes.append(p.nodes)
        return NodeReach(scopes=tuple(dict.fromkeys(scopes)))


@dataclass(frozen=True)
class NodeReach:
    """The nodes a permission reaches: all of them, or those of some scopes."""

    everywhere: bool = False
    scopes: tuple[NodeScope, ...] = ()


@dataclass(frozen=True)
class Partition:
    """A target split by what the caller may touch."""

    allowed: tuple[str, ...]
    refused: tuple[str, ...]
    reason: str = ""  # why the refused ones are refused


def partition(
    certnames: Sequence[str],
    reach: NodeReach,
    members: Mapping[NodeScope, Iterable[str]],
    *,
    what: str,
) -> Partition:
    """Split ``certnames`` into those ``reach`` covers and the rest; ``members`` holds
    the nodes of each of its scopes. ``what`` names the permission, for the reason."""
    if reach.everywhere:
        return Partition(tuple(certnames), ())
    covered: set[str] = set()
    for scope in reach.scopes:
        covered.update(members.get(scope, ()))
    allowed = tuple(c for c in certnames if c in covered)
    refused = tuple(c for c in certnames if c not in covered)
    if not refused:
        return Partition(allowed, ())
    if reach.scopes:
        limits = " or ".join(s.describe() for s in reach.scopes)
        reason = f"{what} is granted only on the nodes of {limits}"
    else:
        reason = f"no role grants {what}"
    return Partition(allowed, refused, reason)


def default_roles() -> list[tuple[str, str, list[Permission]]]:
    """The roles a new installation starts with: (name, description, permissions)."""
    view = [
        Permission("orchestrator", "view"),
        Permission("nodes", "view_data"),
        Permission("node_groups", "view"),
    ]
    return [
        ("Administrators", "Everything, everywhere.", [EVERYTHING]),
        (
            "Operators",
            "Run Puppet, every task and every plan on every node; see everything they touch.",
            [
                *view,
                Permission("puppet_agent", "run"),
                Permission("tasks", "run"),
                Permission("plans", "run"),
            ],
        ),
        ("Viewers", "See jobs, nodes and node groups.", view),
    ]
