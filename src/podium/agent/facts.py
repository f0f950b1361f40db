"""What an agent reports about its node: its facts, in Facter 4's schema, and the
features it can run tasks with.

The facts are, each layer replacing the previous one's facts of the same name:

1. the core facts: ``facter --json`` when Facter is installed and answers in time,
   else Podium's own reads (:mod:`podium.agent.facter`);
2. external facts from the ``facts.d`` folders (:mod:`podium.agent.facter.external`);
3. the JSON object in ``facts_file``, if one is set;
4. Podium's own, which nothing replaces: ``certname`` and ``podium_agent_version``.

Re-sending (:class:`FactsTracker`): the agent sends its facts on every connect, then
collects them every ``facts_interval`` and sends them only if they changed since the
last send. The comparison leaves out the :data:`VOLATILE` facts (uptime, load averages,
the available and used parts of memory and of every mount point, the processor's
current speed), which would make every check a change; they are still sent, current,
with every send, and every :data:`REFRESH_EVERY`-th check sends whatever happened, so
that they are never older than that many intervals (6 hours with the default 30
minutes).

Size: facts are plain JSON data (no NaN) and fit one message. A document bigger than
``limit`` bytes loses its largest external facts first, then its largest other facts,
each with a warning that names it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from collections.abc import Callable, Collection, Iterable, Mapping
from pathlib import Path
from typing import Any, Final

from podium import __version__
from podium.agent.facter import collect, external

log = logging.getLogger(__name__)

# Where puppet-agent packages put the puppet command, often not on PATH.
PUPPET_BIN: Final = Path("/opt/puppetlabs/bin/puppet")
# Dotted paths, ``*`` standing for any one key, of facts that change all the time.
VOLATILE: Final = (
    "system_uptime",
    "load_averages",
    "processors.speed",
    *(
        f"{fact}.*.{part}"
        for fact in ("memory", "mountpoints")
        for part in ("available", "available_bytes", "used", "used_bytes", "capacity")
    ),
)
REFRESH_EVERY: Final = 12
_OWN: Final = ("certname", "podium_agent_version")
_CORE_MAX_NODES: Final = 10_000_000  # Facter's output is capped in bytes already


def gather(
    certname: str,
    facts_file: Path | None = None,
    *,
    factsdirs: Iterable[Path] = (),
    limit: int | None = None,
    facter: str | None = None,
    use_facter: bool = True,
) -> dict[str, Any]:
    """The node's facts (blocking: files are read, external facts run): see the module
    docstring for the layers. ``facter`` names Facter's command (default: found on PATH
    or in ``/opt/puppetlabs/bin``)."""
    core = collect.core(facter=facter, use_facter=use_facter)
    facts: dict[str, Any] = external.jsonable(core, max_nodes=_CORE_MAX_NODES)
    found = external.load(factsdirs)
    facts.update(found.facts)
    facts.update(_facts_file(facts_file))
    facts.update(certname=certname, podium_agent_version=__version__)
    if limit is not None:
        facts = fit(facts, limit=limit, external=found.origin.keys())
    return facts


def _facts_file(facts_file: Path | None) -> dict[str, Any]:
    if facts_file is None or not facts_file.exists():
        return {}
    try:
        if facts_file.stat().st_size > external.MAX_FILE_BYTES:
            raise external.BrokenFact(f"it is bigger than {external.MAX_FILE_BYTES} bytes")
        extra = external.parse_json(facts_file.read_text(errors="replace"))
        value: dict[str, Any] = external.jsonable(extra)
        return value
    except (OSError, external.BrokenFact) as exc:
        log.warning("ignoring facts file %s: %s", facts_file, exc)
        return {}


def _size(value: Any) -> int:
    return len(json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode())


def fit(facts: Mapping[str, Any], *, limit: int, external: Collection[str] = ()) -> dict[str, Any]:
    """``facts`` within ``limit`` bytes of JSON: the largest external facts are dropped
    first, then the largest others; ``certname`` and ``podium_agent_version`` stay."""
    result = dict(facts)
    size = _size(result)
    if size <= limit:
        return result
    sizes = {name: _size({name: value}) for name, value in result.items()}

    def largest(names: Iterable[str]) -> list[str]:
        return sorted(names, key=lambda name: sizes[name], reverse=True)

    candidates = largest(n for n in result if n in external)
    candidates += largest(n for n in result if n not in external and n not in _OWN)
    for name in candidates:
        if size <= limit:
            break
        del result[name]
        log.warning(
            "the facts are %d bytes, more than the %d bytes a message may carry: "
            "leaving out the %s fact %r (%d bytes)",
            size,
            limit,
            "external" if name in external else "core",
            name,
            sizes[name],
        )
        size = _size(result)
    return result


# -- change detection -------------------------------------------------------------------


def _without(value: Any, path: list[str]) -> Any:
    if not isinstance(value, dict) or not path:
        return value
    head, rest = path[0], path[1:]
    result = dict(value)
    for key in list(result) if head == "*" else [head]:
        if key not in result:
            continue
        if rest:
            result[key] = _without(result[key], rest)
        else:
            del result[key]
    return result


def stable(facts: Mapping[str, Any], volatile: Iterable[str] = VOLATILE) -> dict[str, Any]:
    """The facts without their :data:`VOLATILE` parts."""
    result: Any = dict(facts)
    for path in volatile:
        result = _without(result, path.split("."))
    return dict(result)


def fingerprint(facts: Mapping[str, Any]) -> str:
    """A hash of the facts' stable parts: equal when nothing worth sending changed."""
    text = json.dumps(stable(facts), sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


class FactsTracker:
    """Decides, at each periodic check, whether the facts should be sent again."""

    def __init__(self, *, refresh_every: int = REFRESH_EVERY) -> None:
        self.refresh_every = refresh_every
        self._last: str | None = None
        self._checks = 0

    def sent(self, facts: Mapping[str, Any]) -> None:
        """These facts reached the connection (on connect, or after :meth:`due`)."""
        self._last = fingerprint(facts)
        self._checks = 0

    def due(self, facts: Mapping[str, Any]) -> bool:
        """Whether the facts of this check should be sent: they changed, volatile facts
        aside, or this is the ``refresh_every``-th check since the last send."""
        self._checks += 1
        return fingerprint(facts) != self._last or self._checks >= self.refresh_every


# -- features ---------------------------------------------------------------------------


def features(
    *,
    which: Callable[[str], str | None] = shutil.which,
    exists: Callable[[Path], bool] = Path.exists,
    posix: bool = os.name == "posix",
) -> list[str]:
    """What this node can run tasks with, sorted, as Bolt names the features that task
    implementations require: ``shell``, ``powershell``, ``python``, ``puppet-agent``.

    Blocking (a few PATH look-ups): the agent works it out once, at start.
    """
    found = set()
    if posix:  # /bin/sh is POSIX's
        found.add("shell")
    if which("pwsh"):
        found.add("powershell")
    if which("python3"):
        found.add("python")
    if which("puppet") or exists(PUPPET_BIN):
        found.add("puppet-agent")
    return sorted(found)
