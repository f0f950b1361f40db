"""External facts: what an administrator drops in a ``facts.d`` folder, read as Facter
reads them.

- ``*.json``: a JSON object; ``*.yaml`` / ``*.yml``: a YAML mapping; ``*.txt``:
  ``key=value`` lines. Each top-level key is a fact, its name lowercased.
- Any other file that is executable is run (no arguments, standard input closed, at
  most ``timeout`` seconds) and its output read as a JSON object, a YAML mapping or
  ``key=value`` lines; what it writes on standard error is logged as a warning, as
  Facter does. One that exits non-zero is broken.
- Hidden files are skipped, and so is an executable that others may write to (it would
  run as the agent's user, often root). Files are read in name order, folders in the
  order given: a later one overrides an earlier one's fact of the same name.
- A broken file (bad syntax, not a mapping, bigger than ``max_bytes``, an executable
  that fails, hangs or prints more than ``max_bytes``) is skipped with a warning naming
  it; the other files still count.

YAML is read with PyYAML, imported only when a YAML file or a YAML output is met, so an
agent without YAML facts never loads it. Timestamps stay strings, as Facter keeps them.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import re
import selectors
import signal
import stat
import subprocess
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any, Final

log = logging.getLogger(__name__)

MAX_FILE_BYTES: Final = 1024 * 1024
EXEC_TIMEOUT: Final = 10.0
# A YAML alias bomb is small on disk and huge once expanded: stop converting it here.
MAX_NODES: Final = 200_000
_DATA_SUFFIXES = {".json": "json", ".yaml": "yaml", ".yml": "yaml", ".txt": "text"}
_KEY_VALUE = re.compile(r"^(.+?)=(.+)$")


class BrokenFact(ValueError):
    """An external fact file that cannot be used; the message says why."""


# -- pure parses ------------------------------------------------------------------------


def jsonable(value: Any, *, max_nodes: int = MAX_NODES) -> Any:
    """``value`` as plain JSON data: keys become strings, dates ISO strings, tuples and
    sets lists, bytes text; NaN and infinities become null."""
    budget = [max_nodes]

    def convert(item: Any) -> Any:
        budget[0] -= 1
        if budget[0] < 0:
            raise BrokenFact(f"it holds more than {max_nodes} values")
        if item is None or isinstance(item, bool | int | str):
            return item
        if isinstance(item, float):
            return item if math.isfinite(item) else None
        if isinstance(item, Mapping):
            return {_key(k): convert(v) for k, v in item.items()}
        if isinstance(item, list | tuple | set | frozenset):
            return [convert(v) for v in item]
        if isinstance(item, datetime | date):
            return item.isoformat()
        if isinstance(item, bytes):
            return item.decode("utf-8", "replace")
        return str(item)

    return convert(value)


def _key(key: Any) -> str:
    if isinstance(key, bool) or key is None:
        return json.dumps(key)  # "true", "null": what a JSON encoder would write
    return str(key)


def _no_constants(name: str) -> Any:
    raise BrokenFact(f"{name} is not JSON")


def parse_json(text: str) -> dict[str, Any]:
    """A JSON object (NaN and Infinity, which JSON has not, are refused)."""
    try:
        value = json.loads(text, parse_constant=_no_constants)
    except ValueError as exc:
        raise BrokenFact(f"it is not valid JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise BrokenFact("it must hold a JSON object")
    return value


def _yaml_loader() -> Any:
    try:
        import yaml
    except ImportError as exc:  # pragma: no cover - PyYAML is a dependency
        raise BrokenFact("reading YAML needs PyYAML, which is not installed") from exc

    base = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    timestamp = "tag:yaml.org,2002:timestamp"

    class Loader(base):  # type: ignore[misc, valid-type]
        yaml_implicit_resolvers = {
            first: [(tag, regexp) for tag, regexp in resolvers if tag != timestamp]
            for first, resolvers in base.yaml_implicit_resolvers.items()
        }

    return yaml, Loader


def parse_yaml(text: str) -> dict[str, Any]:
    """A YAML mapping (timestamps kept as the strings they are written as)."""
    yaml, loader = _yaml_loader()
    try:
        value = yaml.load(text, Loader=loader)
    except yaml.YAMLError as exc:
        raise BrokenFact(f"it is not valid YAML: {exc}") from exc
    if not isinstance(value, dict):
        raise BrokenFact("it must hold a YAML mapping")
    return value


def parse_text(text: str) -> dict[str, Any]:
    """``key=value`` lines; other lines are ignored, as Facter ignores them."""
    facts: dict[str, Any] = {}
    for line in text.splitlines():
        found = _KEY_VALUE.match(line)
        if found:
            facts[found.group(1)] = found.group(2)
    return facts


def parse_output(text: str) -> dict[str, Any]:
    """What an executable printed: a JSON object, else ``key=value`` lines when every
    line is one, else a YAML mapping, else whatever ``key=value`` lines it has."""
    stripped = text.strip()
    if not stripped:
        return {}
    if stripped.startswith("{"):
        try:
            return parse_json(stripped)
        except BrokenFact:
            pass
    lines = [line for line in stripped.splitlines() if line.strip()]
    if all(_KEY_VALUE.match(line) for line in lines):
        return parse_text(stripped)
    try:
        return parse_yaml(stripped)
    except BrokenFact:
        return parse_text(stripped)


def facts_from(data: Mapping[str, Any]) -> dict[str, Any]:
    """Parsed data as facts: names lowercased, values plain JSON data."""
    return {_key(name).lower(): jsonable(value) for name, value in data.items()}


# -- reading ----------------------------------------------------------------------------


@dataclass
class External:
    """External facts, and the file each came from."""

    facts: dict[str, Any] = field(default_factory=dict)
    origin: dict[str, Path] = field(default_factory=dict)

    def update(self, facts: Mapping[str, Any], path: Path) -> None:
        for name, value in facts.items():
            self.facts[name] = value
            self.origin[name] = path


def load(
    directories: Iterable[Path],
    *,
    timeout: float = EXEC_TIMEOUT,
    max_bytes: int = MAX_FILE_BYTES,
) -> External:
    """The external facts of these folders (blocking: files are read, executables run)."""
    found = External()
    for directory in directories:
        try:
            entries = sorted(os.scandir(directory), key=lambda entry: entry.name)
        except FileNotFoundError:
            log.debug("no external facts folder %s", directory)
            continue
        except OSError as exc:
            log.warning("cannot read the external facts folder %s: %s", directory, exc)
            continue
        for entry in entries:
            path = Path(entry.path)
            if entry.name.startswith("."):
                continue
            try:
                facts = read_file(path, timeout=timeout, max_bytes=max_bytes)
            except BrokenFact as exc:
                log.warning("skipping the external fact file %s: %s", path, exc)
                continue
            if facts is not None:
                found.update(facts, path)
    return found


def read_file(path: Path, *, timeout: float, max_bytes: int) -> dict[str, Any] | None:
    """One file's facts; None for a file that is no external fact (not data, not
    executable); :class:`BrokenFact` for one that should be and cannot be read."""
    try:
        info = path.stat()
    except OSError as exc:
        raise BrokenFact(exc.strerror or str(exc)) from exc
    if not stat.S_ISREG(info.st_mode):
        return None
    kind = _DATA_SUFFIXES.get(path.suffix.lower())
    if kind is None:
        if not os.access(path, os.X_OK):
            log.debug("ignoring %s: neither a data file nor executable", path)
            return None
        if info.st_mode & stat.S_IWOTH:
            raise BrokenFact("it is executable and anyone may change it")
        return facts_from(parse_output(run([str(path)], timeout=timeout, max_bytes=max_bytes)))
    if info.st_size > max_bytes:
        raise BrokenFact(f"it is bigger than {max_bytes} bytes")
    try:
        with path.open("rb") as stream:
            raw = stream.read(max_bytes + 1)
    except OSError as exc:
        raise BrokenFact(exc.strerror or str(exc)) from exc
    if len(raw) > max_bytes:
        raise BrokenFact(f"it is bigger than {max_bytes} bytes")
    text = raw.decode("utf-8", "replace")
    parse = {"json": parse_json, "yaml": parse_yaml, "text": parse_text}[kind]
    return facts_from(parse(text))


def run(command: Sequence[str], *, timeout: float, max_bytes: int) -> str:
    """Run a command (an executable fact); its standard output, or :class:`BrokenFact`."""
    try:
        process = subprocess.Popen(
            list(command),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,  # so that a timeout ends its children too
        )
    except OSError as exc:
        raise BrokenFact(f"it cannot be run: {exc.strerror or exc}") from exc
    assert process.stdout is not None and process.stderr is not None
    out, err = bytearray(), bytearray()
    problem = None
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ, out)
        selector.register(process.stderr, selectors.EVENT_READ, err)
        deadline = time.monotonic() + timeout
        while selector.get_map():
            left = deadline - time.monotonic()
            if left <= 0:
                problem = f"it did not finish within {timeout:g} s"
                break
            for key, _ in selector.select(left):
                chunk = os.read(key.fd, 65536)
                if not chunk:
                    selector.unregister(key.fileobj)
                    continue
                key.data.extend(chunk)
            if len(out) > max_bytes or len(err) > max_bytes:
                problem = f"it printed more than {max_bytes} bytes"
                break
    process.stdout.close()
    process.stderr.close()
    if problem is None:
        try:  # it may have closed its output and still be running
            process.wait(max(deadline - time.monotonic(), 0.0))
        except subprocess.TimeoutExpired:
            problem = f"it did not finish within {timeout:g} s"
    if problem is not None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
    code = process.wait()
    if problem is not None:
        raise BrokenFact(problem)
    message = err.decode("utf-8", "replace").strip()
    if code != 0:
        detail = f": {message[-500:]}" if message else ""
        raise BrokenFact(f"it exited with status {code}{detail}")
    if message:
        log.warning("%s wrote on standard error: %s", command[0], message[-2000:])
    return out.decode("utf-8", "replace")
