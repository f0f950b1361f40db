"""The code directory: environments → modulepath → modules → tasks, and their files.

Layout::

    <root>/environments/<env>/environment.conf   optional: modulepath = modules:$basemodulepath
    <root>/environments/<env>/modules/<module>/tasks/<task>.json (+ executables)
    <root>/environments/<env>/modules/<module>/types/<name>.pp   type aliases (Mod::Name)
    <root>/modules/<module>/...                   the base modulepath, shared by all environments

Modulepath entries are folders relative to the environment or absolute (a shared
system folder such as ``/usr/share/puppet/modules``), and ``$basemodulepath``. Podium's
built-in modules (``podium``, ``package``, ``service``) come after them all, so a
user's module of the same name wins.

Every name that arrives from a request (environment, module, task, file path) is checked
before it becomes a path, and a file is only served when it resolves inside one of its
module's ``files/ lib/ tasks/ scripts/`` folders.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Final

from podium.errors import ConfigError, NotFound, PodiumError, ValidationError
from podium.tasks.metadata import (
    MOUNTS,
    NAME_PART,
    Implementation,
    Task,
    TaskFile,
    TaskImplementation,
    TaskMetadata,
    TaskParameter,
    load_metadata,
    parse_file_ref,
    split_task_name,
    task_display_name,
    task_executables,
    task_implementations,
)
from podium.types import PType, TypeAliases, parse_alias_file, parse_type

log = logging.getLogger(__name__)

UNKNOWN_ENVIRONMENT: Final = "puppetlabs.orchestrator/unknown-environment"
UNKNOWN_TASK: Final = "puppetlabs.orchestrator/unknown-task"
_ENVIRONMENT: Final = re.compile(r"\A[a-z0-9_]+\Z")
_MAX_PATH: Final = 4096
_CHUNK: Final = 1024 * 1024
# Modules shipped with Podium, on every environment's modulepath after the user's own.
BUILTIN_MODULES: Final = Path(__file__).resolve().parent.parent / "data" / "modules"


class CodeDir:
    """Read-only view of a code directory; cheap to call per request."""

    def __init__(
        self,
        root: Path,
        *,
        basemodulepath: Sequence[Path] | None = None,
        builtin: Path | None = BUILTIN_MODULES,
    ) -> None:
        self.root = Path(root)
        self.basemodulepath = (
            [self.root / "modules"] if basemodulepath is None else [Path(p) for p in basemodulepath]
        )
        self.builtin = builtin
        self._hashes = _HashCache()
        self._aliases = _AliasCache()

    def environments(self) -> list[str]:
        """Names of the environments, sorted."""
        try:
            entries = list(os.scandir(self.root / "environments"))
        except OSError:
            return []
        return sorted(e.name for e in entries if _ENVIRONMENT.match(e.name) and e.is_dir())

    def modulepath(self, env: str) -> list[Path]:
        """The folders searched for modules, in order (missing ones included)."""
        envdir = self._envdir(env)
        conf = envdir / "environment.conf"
        setting = _read_modulepath(conf)
        builtin = [self.builtin] if self.builtin is not None else []
        if setting is None:
            return [envdir / "modules", *self.basemodulepath, *builtin]
        paths = []
        for entry in (e.strip() for e in setting.split(":")):
            if not entry:
                continue
            if entry == "$basemodulepath":
                paths.extend(self.basemodulepath)
            elif "$" in entry:
                raise ConfigError(
                    f"{conf}: modulepath entry {entry!r} is not supported; use folders "
                    "(relative to the environment or absolute) and $basemodulepath",
                    details={"environment": env},
                )
            else:
                paths.append(envdir / entry)  # an absolute entry replaces envdir
        return [*paths, *builtin]

    def modules(self, env: str) -> dict[str, Path]:
        """Module name → folder; the first folder on the modulepath wins."""
        found: dict[str, Path] = {}
        for folder in self.modulepath(env):
            try:
                entries = sorted(os.scandir(folder), key=lambda e: e.name)
            except OSError:
                continue
            for entry in entries:
                if NAME_PART.match(entry.name) and entry.is_dir():
                    found.setdefault(entry.name, Path(entry.path))
        return found

    def list_tasks(self, env: str) -> list[Task]:
        """Every task of the environment, sorted by name.

        A broken task is logged and left out, so that one bad module does not hide the
        others; :meth:`task` reports what is wrong with it.
        """
        tasks = []
        for module, moddir in self.modules(env).items():
            filenames = _task_filenames(moddir)
            for short in _task_names(filenames):
                try:
                    tasks.append(self._load(env, module, moddir, short, filenames))
                except PodiumError as exc:
                    log.warning("environment %s: skipping task: %s", env, exc.msg)
        return sorted(tasks, key=lambda t: t.name)

    def task(self, env: str, name: str) -> Task:
        """One task by name (``mod`` or ``mod::task``)."""
        module, short = split_task_name(name)
        display = task_display_name(module, short)
        moddir = self._module_dir(env, module)
        if moddir is None:
            raise NotFound(
                f"no task {display} in environment {env}: there is no module {module!r} on "
                f"its modulepath ({':'.join(map(str, self.modulepath(env)))}); modules: "
                f"{_some(self.modules(env))}",
                kind=UNKNOWN_TASK,
                details={"environment": env, "task": display},
            )
        filenames = _task_filenames(moddir)
        if short not in _task_names(filenames):
            names = [task_display_name(module, s) for s in _task_names(filenames)]
            raise NotFound(
                f"no task {display} in environment {env}: module {module} has "
                + (f"the tasks {_some(names)}" if names else "no tasks"),
                kind=UNKNOWN_TASK,
                details={"environment": env, "task": display},
            )
        return self._load(env, module, moddir, short, filenames)

    def file_path(self, env: str, module: str, relative: str) -> Path:
        """The file to serve for ``<module>/<relative>``, e.g. ``files/lib.sh``.

        Only files of a module's files/, lib/, tasks/ and scripts/ folders are served, and
        only when they resolve (symlinks included) inside that module.
        """
        if not isinstance(module, str) or not NAME_PART.match(module):
            raise ValidationError(f"invalid module name {module!r}", details={"module": module})
        parts = _relative_parts(relative)
        moddir = self._module_dir(env, module)
        if moddir is None:
            raise NotFound(
                f"no module {module!r} in environment {env}",
                details={"environment": env, "module": module},
            )
        real = _contained(moddir, moddir.joinpath(*parts))
        if real is None:
            raise NotFound(
                f"no file {relative!r} in module {module} of environment {env}",
                details={"environment": env, "module": module, "path": relative},
            )
        return real

    def digest(self, path: Path) -> tuple[str, int]:
        """(SHA-256 hex, size) of a file, cached until the file changes."""
        return self._hashes.get(path)

    # -- loading ----------------------------------------------------------------------

    def _envdir(self, env: str) -> Path:
        valid = isinstance(env, str) and _ENVIRONMENT.match(env) is not None
        path = self.root / "environments" / env if valid else None
        if path is None or not path.is_dir():
            rule = "" if valid else " (names are lowercase letters, digits and '_')"
            raise NotFound(
                f"unknown environment {env!r}{rule}; environments: "
                f"{_some(self.environments()) or 'none'}",
                kind=UNKNOWN_ENVIRONMENT,
                details={"environment": env},
            )
        return path

    def _module_dir(self, env: str, module: str) -> Path | None:
        for folder in self.modulepath(env):
            candidate = folder / module
            if candidate.is_dir():
                return candidate
        return None

    def type_aliases(self, env: str) -> TypeAliases:
        """The type aliases that the modules of an environment define in ``types/``."""
        return self._aliases.get(self.modules(env))

    def _load(self, env: str, module: str, moddir: Path, short: str, filenames: list[str]) -> Task:
        display = task_display_name(module, short)
        meta = TaskMetadata()
        json_path = moddir / "tasks" / f"{short}.json"
        has_json = f"{short}.json" in filenames
        try:
            if has_json:
                try:
                    raw = json_path.read_bytes()
                except OSError as exc:
                    raise ValidationError(
                        f"task {display}: cannot read the metadata: {exc.strerror}",
                        details={"task": display},
                    ) from exc
                meta = load_metadata(display, raw)
            impls = task_implementations(display, short, meta, filenames)
            parameters = {
                name: replace(p, ptype=self._parameter_type(env, display, p))
                for name, p in meta.parameters.items()
            }
        except ValidationError as exc:
            where = json_path if has_json else moddir / "tasks"
            raise ValidationError(
                f"{exc.msg} (in {where})", details={**exc.details, "file": str(where)}
            ) from exc
        return Task(
            name=display,
            module=module,
            description=meta.description,
            parameters=parameters,
            supports_noop=meta.supports_noop,
            private=meta.private,
            remote=meta.remote,
            implementations=tuple(
                self._implementation(env, display, moddir, meta, impl) for impl in impls
            ),
            environment=env,
            source=json_path if has_json else moddir / "tasks" / impls[0].name,
            metadata=meta.raw,
        )

    def _parameter_type(self, env: str, task: str, param: TaskParameter) -> PType:
        try:
            return parse_type(param.type, self.type_aliases(env))
        except ValidationError as exc:
            raise ValidationError(
                f"task {task}: metadata key 'parameters.{param.name}.type': {exc.msg}",
                details={"task": task, "key": f"parameters.{param.name}.type"},
            ) from exc

    def _implementation(
        self, env: str, task: str, moddir: Path, meta: TaskMetadata, impl: Implementation
    ) -> TaskImplementation:
        exe = _contained(moddir, moddir / "tasks" / impl.name)
        if exe is None:
            raise ValidationError(
                f"task {task}: {impl.name} is not a file inside its module ({moddir})",
                details={"task": task},
            )
        return TaskImplementation(
            name=impl.name,
            requirements=impl.requirements,
            executable=self._task_file(impl.name, exe),
            files=self._extra_files(env, task, (*meta.files, *impl.files)),
            input_method=impl.input_method or meta.input_method,
        )

    def _extra_files(self, env: str, task: str, refs: tuple[str, ...]) -> tuple[TaskFile, ...]:
        found: dict[str, TaskFile] = {}
        for text in refs:
            ref = parse_file_ref(task, text)
            moddir = self._module_dir(env, ref.module)
            if moddir is None:
                raise ValidationError(
                    f"task {task} needs {ref}, but module {ref.module!r} is not on the "
                    f"modulepath of environment {env}",
                    details={"task": task, "file": str(ref)},
                )
            prefix = f"{ref.module}/{ref.mount}/"
            if ref.is_dir:
                listed = _walk(moddir, ref.mount, ref.path)
            else:
                real = _contained(moddir, moddir / ref.mount / ref.path)
                listed = [] if real is None else [(ref.path, real)]
            if not listed:
                raise ValidationError(
                    f"task {task} needs {ref}, which is missing from module {ref.module} "
                    "(or is not inside it)",
                    details={"task": task, "file": str(ref)},
                )
            for relative, real in listed:
                filename = prefix + relative
                if filename not in found:
                    found[filename] = self._task_file(filename, real)
        return tuple(found.values())

    def _task_file(self, filename: str, path: Path) -> TaskFile:
        try:
            sha256, size = self._hashes.get(path)
        except OSError as exc:
            raise ValidationError(f"cannot read {path}: {exc.strerror}") from exc
        return TaskFile(filename=filename, path=path, sha256=sha256, size_bytes=size)


class _HashCache:
    """SHA-256 by real path, reused while (mtime, ctime, size, inode) stay the same.

    Safe to share between threads; one entry per file, so it is bounded by the code dir.
    """

    def __init__(self) -> None:
        self._entries: dict[Path, tuple[tuple[int, int, int, int], str]] = {}
        self._lock = threading.Lock()

    def get(self, path: Path) -> tuple[str, int]:
        stamp = _stamp(path.stat())
        with self._lock:
            hit = self._entries.get(path)
        if hit is not None and hit[0] == stamp:
            return hit[1], stamp[2]
        with path.open("rb") as f:
            before = _stamp(os.fstat(f.fileno()))
            digest = hashlib.file_digest(f, "sha256").hexdigest()
            after = _stamp(os.fstat(f.fileno()))
        if before == after:  # a file rewritten while hashed is hashed again next time
            with self._lock:
                self._entries[path] = (after, digest)
        return digest, after[2]


class _AliasCache:
    """Type aliases by the ``types/*.pp`` files they come from, re-read when one changes."""

    def __init__(self) -> None:
        self._key: tuple[tuple[str, tuple[int, int, int, int]], ...] | None = None
        self._value = TypeAliases({})
        self._lock = threading.Lock()

    def get(self, modules: Mapping[str, Path]) -> TypeAliases:
        files = [
            (str(path), _stamp(path.stat()))
            for moddir in modules.values()
            for path in sorted((moddir / "types").rglob("*.pp"))
            if path.is_file()
        ]
        key = tuple(files)
        with self._lock:
            if key == self._key:
                return self._value
        definitions: dict[str, str] = {}
        for name, _ in files:
            path = Path(name)
            try:
                text = path.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                raise ValidationError(f"cannot read the type alias file {path}: {exc}") from exc
            for alias, type_text in parse_alias_file(text, str(path)):
                definitions.setdefault(alias, type_text)
        aliases = TypeAliases(definitions)
        with self._lock:
            self._key, self._value = key, aliases
        return aliases


def _stamp(st: os.stat_result) -> tuple[int, int, int, int]:
    return (st.st_mtime_ns, st.st_ctime_ns, st.st_size, st.st_ino)


def _read_modulepath(conf: Path) -> str | None:
    """The ``modulepath`` of an environment.conf (ini style, comments with # or ;)."""
    try:
        text = conf.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read {conf}: {exc}") from exc
    value = None
    for line in text.splitlines():
        key, sep, rest = line.partition("=")
        if sep and key.strip() == "modulepath":
            value = rest.strip().strip("\"'")
    return value


def _task_filenames(moddir: Path) -> list[str]:
    try:
        entries = list(os.scandir(moddir / "tasks"))
    except OSError:
        return []
    return sorted(e.name for e in entries if e.is_file())


def _task_names(filenames: list[str]) -> list[str]:
    """Short task names found in tasks/: metadata files and metadata-less executables."""
    names = set()
    for filename in filenames:
        stem = filename.partition(".")[0]
        if NAME_PART.match(stem) and (
            filename == f"{stem}.json" or task_executables(stem, [filename])
        ):
            names.add(stem)
    return sorted(names)


def _relative_parts(relative: object) -> list[str]:
    parts = relative.split("/") if isinstance(relative, str) and len(relative) <= _MAX_PATH else []
    if (
        len(parts) < 2
        or parts[0] not in MOUNTS
        or not all(p and p not in (".", "..") and "\\" not in p and "\0" not in p for p in parts)
    ):
        raise ValidationError(
            f"invalid module file path {relative!r}: use '<mount>/<path>' with mount one of "
            f"{', '.join(MOUNTS)}, forward slashes and no '..'",
            details={"path": relative if isinstance(relative, str) else repr(relative)},
        )
    return parts


def _contained(moddir: Path, path: Path) -> Path | None:
    """The real path of ``path`` if it is a regular file inside one of the module's mounts."""
    try:
        real = path.resolve(strict=True)
        root = moddir.resolve(strict=True)
    except (OSError, RuntimeError):  # missing, or a symlink loop
        return None
    if not real.is_relative_to(root) or not real.is_file():
        return None
    inside_mount = any(real.is_relative_to((moddir / m).resolve()) for m in MOUNTS)
    return real if inside_mount else None


def _walk(moddir: Path, mount: str, folder: str) -> list[tuple[str, Path]]:
    """(path relative to the mount, real path) of every file under a folder, sorted."""
    top = moddir / mount / folder
    if _contained_dir(moddir, top) is None:
        return []
    found = []
    for dirpath, dirnames, files in os.walk(top):
        dirnames.sort()
        for name in sorted(files):
            path = Path(dirpath) / name
            real = _contained(moddir, path)
            if real is None:
                log.warning("not serving %s: it leads outside its module", path)
                continue
            found.append((path.relative_to(moddir / mount).as_posix(), real))
    return found


def _contained_dir(moddir: Path, path: Path) -> Path | None:
    try:
        real = path.resolve(strict=True)
        root = moddir.resolve(strict=True)
    except (OSError, RuntimeError):
        return None
    return real if real.is_relative_to(root) and real.is_dir() else None


def _some(names: Iterable[str], limit: int = 20) -> str:
    items = sorted(names)
    shown = ", ".join(items[:limit])
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")
