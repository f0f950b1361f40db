"""Job kinds: what each kind of job sends a node and how it reads the result (pure).

A kind is what :class:`podium.jobs.core.JobCore` asks for a node's request; the task run
lives here, Puppet runs and plan steps come next to it. Pace options are read from a
job's stored options here too, so a resumed or rerun job keeps its pace.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import orjson

from podium.errors import ValidationError
from podium.jobs import states
from podium.jobs.core import Pace
from podium.jobs.payloads import task_request
from podium.protocol import envelope as pcp
from podium.tasks.metadata import Task

# What a node whose agent never listed its features is assumed to run.
DEFAULT_FEATURES = ("shell",)
# The pace options as the API and the stored job name them.
PACE_OPTIONS = (
    "concurrency",
    "batch",
    "batch_sleep",
    "fail_fast",
    "timeout",
    "job_timeout",
    "offline_ttl",
)


PUPPET_FLAGS = ("debug", "trace", "evaltrace")


class TaskRun:
    """A task on each node: the implementation its agent's features fit, one request
    per implementation shared by every node that runs it."""

    module = "task"
    action = "run"
    stop_action: str | None = "stop"

    def __init__(
        self,
        task: Task,
        params: dict[str, Any],
        *,
        features: Callable[[str], Sequence[str] | None],
        noop: bool = False,
        timeout: float | None = None,
    ) -> None:
        self.task = task
        self.params = params
        self.noop = noop
        self.timeout = timeout
        self._features = features
        self._requests: dict[str, dict[str, Any]] = {}  # implementation → request

    def request(self, certname: str) -> dict[str, Any] | str:
        have = self._features(certname)
        offered = list(have) if have is not None else list(DEFAULT_FEATURES)
        impl = self.task.implementation_for(offered)
        if impl is None:
            needs = "; ".join(
                f"{i.name} needs {', '.join(i.requirements) or 'nothing'}"
                for i in self.task.implementations
            )
            return (
                f"task {self.task.name} has no implementation that node {certname} can run: "
                f"its agent offers {', '.join(sorted(offered)) or 'no features'} ({needs})"
            )
        request = self._requests.get(impl.name)
        if request is None:
            request = self._requests[impl.name] = task_request(
                self.task, impl, self.params, noop=self.noop, timeout=self.timeout
            )
        return request

    def node_state(self, results: dict[str, Any]) -> str:
        return states.state_for_results(results)

    def check_size(self, max_message_bytes: int) -> None:
        """Refuse, before the job exists, parameters too large for one message."""
        for impl in self.task.implementations:
            request = task_request(
                self.task, impl, self.params, noop=self.noop, timeout=self.timeout
            )
            try:
                size = len(orjson.dumps(request)) + pcp.ENVELOPE_ROOM
            except orjson.JSONEncodeError as exc:
                raise ValidationError(f"the task's parameters cannot be sent: {exc}") from exc
            if size > max_message_bytes:
                raise ValidationError(
                    f"the request for task {self.task.name} would be {size} bytes, over the "
                    f"{max_message_bytes}-byte message limit; pass large data as a file "
                    "the task reads, not as a parameter",
                    details={"size": size, "limit": max_message_bytes},
                )


class PuppetRun:
    """A Puppet run on each node (``puppet``/``run``): in apply mode with the packed
    environment and the node's own classification, in agent mode against the site's
    Puppet Server.

    ``packs``: environment → the pack's file entry (apply mode); ``classified``:
    certname → its classification (``environment``, ``classes``, ``parameters``) or why
    it has none; a node whose environment has no pack runs nowhere (apply mode)."""

    module = "puppet"
    action = "run"
    stop_action: str | None = "stop"

    def __init__(
        self,
        *,
        mode: str,
        environment: str,
        flags: Mapping[str, Any],
        enforce_environment: bool = True,
        packs: Mapping[str, Mapping[str, Any]] | None = None,
        classified: Mapping[str, Mapping[str, Any] | str] | None = None,
        timeout: float | None = None,
    ) -> None:
        self.mode = mode
        self.environment = environment
        self.enforce_environment = enforce_environment
        self.packs = packs or {}
        self.classified = classified or {}
        self._base: dict[str, Any] = {"mode": mode, "environment": environment, **flags}
        if timeout is not None:
            self._base["timeout"] = timeout

    def request(self, certname: str) -> dict[str, Any] | str:
        if self.mode == "agent":
            return self._base
        found = self.classified.get(certname, {})
        if isinstance(found, str):
            return found
        environment = self.environment
        if not self.enforce_environment:
            environment = str(found.get("environment") or environment)
        pack = self.packs.get(environment)
        if pack is None:
            return f"environment {environment} of node {certname} could not be packed"
        return {
            **self._base,
            "environment": environment,
            "code": pack,
            "classification": {
                "classes": found.get("classes", {}),
                "parameters": found.get("parameters", {}),
            },
        }

    def node_state(self, results: dict[str, Any]) -> str:
        return states.state_for_results(results)


def puppet_flags(options: Mapping[str, Any]) -> dict[str, Any]:
    """The ``puppet``/``run`` flags of a deploy job's stored options: ``noop`` true
    (``--noop``), false (``--no-noop``, from ``no_noop``) or null (the node's own)."""
    noop = True if options.get("noop") else False if options.get("no_noop") else None
    flags: dict[str, Any] = {"noop": noop}
    for name in PUPPET_FLAGS:
        if options.get(name):
            flags[name] = True
    return flags


class Unrunnable:
    """A job whose kind cannot be built again (its task is gone after a restart): its
    nodes end at once with the reason."""

    module = "task"
    action = "run"
    stop_action: str | None = None

    def __init__(self, why: str) -> None:
        self.why = why

    def request(self, certname: str) -> dict[str, Any] | str:
        return self.why

    def node_state(self, results: dict[str, Any]) -> str:
        return states.state_for_results(results)


def batch_size(batch: int | str | None, node_count: int) -> int | None:
    """Nodes per batch: a number, or ``"N%"`` of the job's nodes (at least one)."""
    if batch is None:
        return None
    if isinstance(batch, str):
        percent = int(batch.rstrip("%"))
        return max(1, math.ceil(node_count * percent / 100))
    return batch


def pace_of(options: Mapping[str, Any], node_count: int) -> Pace:
    """A job's pace from its stored options (see :data:`PACE_OPTIONS`)."""
    return Pace(
        concurrency=options.get("concurrency"),
        batch=batch_size(options.get("batch"), node_count),
        batch_sleep=float(options.get("batch_sleep") or 0.0),
        fail_fast=bool(options.get("fail_fast")),
        node_timeout=options.get("timeout"),
        job_timeout=options.get("job_timeout"),
        offline_ttl=options.get("offline_ttl"),
    )
