"""Task metadata in the Bolt/PE format, and the choice of what runs on a node.

Everything here is pure: it takes the decoded metadata document and the names of the
files found beside it, and returns data. Reading files and hashing them is the job of
:mod:`podium.tasks.codedir`; parameter types are parsed by :mod:`podium.types`.

Keys read: ``description``, ``parameters`` (``type``, ``description``, ``sensitive``,
``default``), ``input_method``, ``supports_noop``, ``implementations`` (``name``,
``requirements``, ``files``, ``input_method``), ``files``, ``private``, ``remote``,
``extensions``, ``puppet_task_version``. Other keys are kept as written (the API
returns the document unchanged) but mean nothing to Podium.
"""

from __future__ import annotations

import enum
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Protocol, TypeVar

from podium.errors import ValidationError
from podium.types import PType, is_sensitive, parse_type

# Module and task names, e.g. "package" or "package::status".
NAME_PART: Final = re.compile(r"\A[a-z][a-z0-9_]*\Z")
INPUT_METHODS: Final = frozenset({"stdin", "environment", "both", "powershell"})
# Module folders whose files a task may list and an agent may download.
MOUNTS: Final = ("files", "lib", "tasks", "scripts")
_T = TypeVar("_T")


class _Requiring(Protocol):
    @property
    def requirements(self) -> tuple[str, ...]: ...


_Impl = TypeVar("_Impl", bound=_Requiring)
# Files in tasks/ that are never executables (Puppet ignores them too).
_NOT_EXECUTABLE: Final = frozenset({"json", "md", "conf"})
_EXECUTABLE: Final = re.compile(r"\A([a-z][a-z0-9_]*)(?:\.([A-Za-z0-9_]+))?\Z")


class _Missing(enum.Enum):
    MISSING = "MISSING"

    def __repr__(self) -> str:
        return "MISSING"


MISSING: Final = _Missing.MISSING
"""The default of a parameter that declares none (``None`` is a real default: JSON null)."""


@dataclass(frozen=True)
class TaskParameter:
    """One declared parameter; ``type`` is the Puppet data type as written, ``ptype`` the
    parsed tree (set when the task is loaded from its code directory)."""

    name: str
    type: str = "Any"
    description: str = ""
    sensitive: bool = False
    default: Any = MISSING
    ptype: PType | None = field(default=None, compare=False, repr=False)

    @property
    def has_default(self) -> bool:
        return self.default is not MISSING

    @property
    def parsed_type(self) -> PType:
        """The type tree (parsed from ``type`` when not loaded from a code directory)."""
        return self.ptype if self.ptype is not None else parse_type(self.type)

    @property
    def is_sensitive(self) -> bool:
        """Marked ``sensitive``, or of type ``Sensitive[...]``: never shown or logged."""
        if self.sensitive:
            return True
        try:
            return is_sensitive(self.parsed_type)
        except ValidationError:  # an unparsable type is refused elsewhere
            return False


@dataclass(frozen=True)
class TaskFile:
    """A file an agent downloads to run a task.

    ``filename`` is the executable's base name, or ``<module>/<mount>/<path>`` for the
    extra files, which is also where the runner places them under ``_installdir``.
    """

    filename: str
    path: Path
    sha256: str
    size_bytes: int


@dataclass(frozen=True)
class TaskImplementation:
    """One way to run a task, its files found and hashed."""

    name: str
    requirements: tuple[str, ...]
    executable: TaskFile
    files: tuple[TaskFile, ...]
    input_method: str | None


@dataclass(frozen=True)
class Task:
    """A task ready to run, with every implementation a node may be given.

    ``metadata`` is the document as written (the API returns it unchanged, extra keys
    and all); ``source`` is the metadata file, or the executable when there is none.
    """

    name: str
    module: str
    description: str
    parameters: dict[str, TaskParameter]
    supports_noop: bool
    private: bool
    implementations: tuple[TaskImplementation, ...]
    environment: str
    source: Path
    remote: bool = False
    metadata: Mapping[str, Any] = field(default_factory=dict)

    @property
    def short_name(self) -> str:
        return self.name.partition("::")[2] or "init"

    @property
    def declares_parameters(self) -> bool:
        """Whether undeclared parameters are refused; a task without ``parameters`` takes any."""
        return bool(self.parameters) or "parameters" in self.metadata

    @property
    def files(self) -> tuple[TaskFile, ...]:
        """Every file of every implementation, each once, executables first."""
        found: dict[str, TaskFile] = {}
        for impl in self.implementations:
            found.setdefault(impl.executable.filename, impl.executable)
        for impl in self.implementations:
            for extra in impl.files:
                found.setdefault(extra.filename, extra)
        return tuple(found.values())

    def implementation_for(self, features: Iterable[str]) -> TaskImplementation | None:
        """What a node with these features runs, or None when nothing fits it."""
        return choose_implementation(self.implementations, features)


@dataclass(frozen=True)
class Implementation:
    """One entry of ``implementations``: an executable in the same ``tasks/`` folder."""

    name: str
    requirements: tuple[str, ...] = ()
    files: tuple[str, ...] = ()
    input_method: str | None = None


@dataclass(frozen=True)
class TaskMetadata:
    """A parsed metadata document; ``raw`` is the document itself."""

    description: str = ""
    parameters: dict[str, TaskParameter] = field(default_factory=dict)
    input_method: str | None = None
    supports_noop: bool = False
    private: bool = False
    remote: bool = False
    implementations: tuple[Implementation, ...] = ()
    files: tuple[str, ...] = ()
    extensions: Mapping[str, Any] = field(default_factory=dict)
    raw: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class FileRef:
    """A ``files`` entry split up: ``mod/files/dir/`` is ("mod", "files", "dir", True)."""

    module: str
    mount: str
    path: str
    is_dir: bool

    def __str__(self) -> str:
        return f"{self.module}/{self.mount}/{self.path}" + ("/" if self.is_dir else "")


def split_task_name(name: object) -> tuple[str, str]:
    """``"mod"`` → ``("mod", "init")``, ``"mod::task"`` → ``("mod", "task")``."""
    parts = name.split("::") if isinstance(name, str) else []
    if not 1 <= len(parts) <= 2 or not all(NAME_PART.match(p) for p in parts):
        raise ValidationError(
            f"invalid task name {name!r}: use 'module' or 'module::task', each part "
            "lowercase letters, digits and '_', starting with a letter",
            details={"task": name if isinstance(name, str) else repr(name)},
        )
    return parts[0], parts[1] if len(parts) == 2 else "init"


def task_display_name(module: str, short: str) -> str:
    """The name users type: a module's ``init`` task is called by the module's name."""
    return module if short == "init" else f"{module}::{short}"


def load_metadata(task: str, raw: bytes | str) -> TaskMetadata:
    """Decode and parse a metadata file's content."""
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValidationError(
            f"task {task}: the metadata is not valid JSON: {exc}", details={"task": task}
        ) from exc
    return parse_metadata(task, data)


def parse_metadata(task: str, data: object) -> TaskMetadata:
    """Check a decoded metadata document; unknown keys are kept, wrong types refused."""
    if not isinstance(data, dict):
        raise _invalid(task, "", "the metadata must be a JSON object")
    parameters = _parse_parameters(task, data.get("parameters"))
    implementations = data.get("implementations")
    if implementations is not None and not isinstance(implementations, list):
        raise _invalid(task, "implementations", "must be a list of objects")
    version = data.get("puppet_task_version")
    if version is not None and version != 1:
        raise _invalid(task, "puppet_task_version", f"must be 1, got {json.dumps(version)[:20]}")
    return TaskMetadata(
        description=_optional(task, data, "description", str, "a string") or "",
        parameters=parameters,
        input_method=_input_method(task, data, "input_method"),
        supports_noop=_optional(task, data, "supports_noop", bool, "true or false") or False,
        private=_optional(task, data, "private", bool, "true or false") or False,
        remote=_optional(task, data, "remote", bool, "true or false") or False,
        extensions=_optional(task, data, "extensions", dict, "an object") or {},
        implementations=tuple(
            _parse_implementation(task, i, entry) for i, entry in enumerate(implementations or [])
        ),
        files=_file_list(task, data, "files"),
        raw=data,
    )


def task_executables(task_short_name: str, filenames: Iterable[str]) -> list[str]:
    """The files in ``tasks/`` that can implement a task without ``implementations``:
    ``<name>`` or ``<name>.<ext>``, but not metadata or documentation."""
    found = []
    for filename in filenames:
        m = _EXECUTABLE.match(filename)
        if m and m[1] == task_short_name and (m[2] or "").lower() not in _NOT_EXECUTABLE:
            found.append(filename)
    return sorted(found)


def task_implementations(
    task: str, short: str, meta: TaskMetadata, filenames: Iterable[str]
) -> tuple[Implementation, ...]:
    """Every way the task can run, in the order a node's features are tried on them.

    With ``implementations``, each entry, its executable checked to be in ``tasks/``;
    without, the single ``<short>.<ext>`` (runs anywhere), or a POSIX script for nodes
    with ``shell`` and a ``.ps1`` beside it for nodes with ``powershell``.
    """
    present = set(filenames)
    if meta.implementations:
        for impl in meta.implementations:
            if impl.name not in present:
                raise ValidationError(
                    f"task {task} has no executable {impl.name!r}: its metadata names that "
                    f"implementation, expected in the module's tasks/ folder beside {short}.json",
                    details={"task": task, "key": "implementations", "expected": [impl.name]},
                )
        return meta.implementations
    candidates = task_executables(short, present)
    posix = [c for c in candidates if not c.endswith(".ps1")]
    windows = [c for c in candidates if c.endswith(".ps1")]
    if not candidates:
        raise ValidationError(
            f"task {task} has no executable: expected a file named {short}.<ext> (for "
            f"example {short}.sh or {short}.py) beside {short}.json in the module's tasks/ "
            "folder, or an 'implementations' list in the metadata",
            details={"task": task, "expected": [f"{short}.<ext>"]},
        )
    if len(posix) > 1 or len(windows) > 1:
        raise ValidationError(
            f"task {task} has several executables ({', '.join(candidates)}): keep one, or "
            "say which runs where with an 'implementations' list in the metadata",
            details={"task": task, "found": candidates},
        )
    if posix and windows:  # one for each kind of node
        return (
            Implementation(name=posix[0], requirements=("shell",)),
            Implementation(name=windows[0], requirements=("powershell",)),
        )
    return (Implementation(name=candidates[0]),)


def choose_implementation(
    implementations: Sequence[_Impl], features: Iterable[str]
) -> _Impl | None:
    """The first implementation whose requirements the node's features all meet."""
    have = frozenset(features)
    return next((i for i in implementations if have.issuperset(i.requirements)), None)


def parse_file_ref(task: str, ref: object) -> FileRef:
    """Check a ``files`` entry: ``<module>/<files|lib|tasks|scripts>/<path>[/]``."""
    if not isinstance(ref, str):
        raise _invalid(task, "files", f"entries must be strings, got {ref!r}")
    is_dir = ref.endswith("/")
    parts = (ref[:-1] if is_dir else ref).split("/")
    ok = (
        len(parts) >= 3
        and NAME_PART.match(parts[0]) is not None
        and parts[1] in MOUNTS
        and all(p and p not in (".", "..") and "\\" not in p and "\0" not in p for p in parts)
    )
    if not ok:
        raise _invalid(
            task,
            "files",
            f"{ref!r} is not a module file: use '<module>/<mount>/<path>' with mount one of "
            f"{', '.join(MOUNTS)}, forward slashes, no '..', and a trailing '/' for a folder",
        )
    return FileRef(parts[0], parts[1], "/".join(parts[2:]), is_dir)


def _parse_parameters(task: str, value: object) -> dict[str, TaskParameter]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _invalid(task, "parameters", "must be an object of parameter name → definition")
    params = {}
    for name, spec in value.items():
        key = f"parameters.{name}"
        if not NAME_PART.match(name):
            raise _invalid(
                task,
                key,
                "parameter names are lowercase letters, digits and '_', starting with a letter",
            )
        if spec is None:
            spec = {}
        if not isinstance(spec, dict):
            raise _invalid(task, key, "must be an object with type, description, sensitive")
        params[name] = TaskParameter(
            name=name,
            type=_optional(task, spec, "type", str, "a string", prefix=key) or "Any",
            description=_optional(task, spec, "description", str, "a string", prefix=key) or "",
            sensitive=_optional(task, spec, "sensitive", bool, "true or false", prefix=key)
            or False,
            default=spec.get("default", MISSING),
        )
    return params


def _parse_implementation(task: str, index: int, entry: object) -> Implementation:
    key = f"implementations[{index}]"
    if not isinstance(entry, dict):
        raise _invalid(task, key, "must be an object with a name and requirements")
    name = entry.get("name")
    if not isinstance(name, str) or not name or "/" in name or name in (".", ".."):
        raise _invalid(task, f"{key}.name", "must be the file name of an executable in tasks/")
    requirements = entry.get("requirements") or []
    if not isinstance(requirements, list) or not all(isinstance(r, str) for r in requirements):
        raise _invalid(task, f"{key}.requirements", "must be a list of feature names")
    return Implementation(
        name=name,
        requirements=tuple(requirements),
        files=_file_list(task, entry, "files", prefix=key),
        input_method=_input_method(task, entry, "input_method", prefix=key),
    )


def _file_list(task: str, data: dict[str, Any], key: str, prefix: str = "") -> tuple[str, ...]:
    value = data.get(key)
    if value is None:
        return ()
    where = f"{prefix}.{key}" if prefix else key
    if not isinstance(value, list):
        raise _invalid(task, where, "must be a list of '<module>/<mount>/<path>' strings")
    for ref in value:
        parse_file_ref(task, ref)
    return tuple(value)


def _input_method(task: str, data: dict[str, Any], key: str, prefix: str = "") -> str | None:
    value = data.get(key)
    if value is None:
        return None
    if value not in INPUT_METHODS:
        where = f"{prefix}.{key}" if prefix else key
        raise _invalid(task, where, f"must be one of {', '.join(sorted(INPUT_METHODS))}")
    return str(value)


def _optional(
    task: str, data: dict[str, Any], key: str, kind: type[_T], what: str, prefix: str = ""
) -> _T | None:
    """``data[key]`` when present and of ``kind``; JSON null counts as absent."""
    value = data.get(key)
    if value is None:
        return None
    if not isinstance(value, kind):
        where = f"{prefix}.{key}" if prefix else key
        raise _invalid(task, where, f"must be {what}, got {json.dumps(value)[:60]}")
    return value


def _invalid(task: str, key: str, problem: str) -> ValidationError:
    where = f" key {key!r}" if key else ""
    return ValidationError(
        f"task {task}: metadata{where} {problem}", details={"task": task, "key": key}
    )
