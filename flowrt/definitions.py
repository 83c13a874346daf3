"""Flow definitions: nodes, edges, retry policies and handler results.

Two styles build the same :class:`Flow`: the builder (``flow.node`` / ``flow.edge``)
and the class style (``@flow`` / ``@node`` / ``@edge`` / ``@entry``). A definition is
pure data plus callables; executing it is the engine's job.
"""

from __future__ import annotations

import inspect
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Callable, Literal

from .condition_text import condition_text
from .errors import DefinitionError

Handler = Callable[..., Any]
Condition = Callable[[Any], bool]
KeyFunction = Callable[[Any], str]


# --------------------------------------------------------------------------- results


@dataclass(frozen=True, slots=True)
class Ok:
    output: Any = None
    patch: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class Wait:
    reason: str | None = None
    until: str | datetime | timedelta | None = None
    patch: dict[str, Any] | None = None
    output: Any = None


@dataclass(frozen=True, slots=True)
class Fail:
    code: str
    message: str = ""
    retryable: bool | None = None
    traceback: str | None = None
    """Set by the engine when the failure is an exception the handler raised."""


Result = Ok | Wait | Fail


def ok(output: Any = None, patch: dict[str, Any] | None = None) -> Ok:
    """The node succeeded: store ``output`` and deep-merge ``patch`` into state."""
    return Ok(output, patch)


def wait(
    reason: str | None = None,
    until: str | datetime | timedelta | None = None,
    patch: dict[str, Any] | None = None,
    output: Any = None,
) -> Wait:
    """Park the run at this node until it is resumed (or ``until`` comes due)."""
    return Wait(reason, until, patch, output)


def fail(code: str, message: str = "", retryable: bool | None = None) -> Fail:
    """The node failed; it is retried while the retry policy allows and the error is retryable."""
    return Fail(code, message, retryable)


# --------------------------------------------------------------------------- retry

DEFAULT_MAX_RECOVERIES = 5


@dataclass(frozen=True, slots=True)
class Retry:
    """How often a failing node is tried, and how long to wait between tries."""

    max_attempts: int = 1
    backoff: Literal["fixed", "exponential"] = "fixed"
    base_delay_ms: int = 0
    max_delay_ms: int | None = None
    max_recoveries: int = DEFAULT_MAX_RECOVERIES
    """How often in a row the node may be interrupted mid-execution (its process was killed,
    shut down past its grace, or lost the database) and still be recovered. Interruptions are
    not the node's failures, so they never consume ``max_attempts``; this separate budget only
    stops a node that takes its process down every time."""

    def problems(self) -> list[str]:
        found = []
        if not isinstance(self.max_attempts, int) or self.max_attempts < 1:
            found.append("max_attempts must be an integer >= 1")
        if self.backoff not in ("fixed", "exponential"):
            found.append("backoff must be 'fixed' or 'exponential'")
        if not isinstance(self.base_delay_ms, int) or self.base_delay_ms < 0:
            found.append("base_delay_ms must be an integer >= 0")
        if isinstance(self.max_recoveries, bool) or not isinstance(self.max_recoveries, int) or self.max_recoveries < 0:
            found.append("max_recoveries must be an integer >= 0")
        if self.max_delay_ms is not None and (
            not isinstance(self.max_delay_ms, int) or self.max_delay_ms < 0
        ):
            found.append("max_delay_ms must be an integer >= 0 or None")
        return found

    def delay_ms(self, failed_attempt: int) -> int:
        """Delay before the attempt after ``failed_attempt`` (1-based)."""
        if self.backoff == "exponential":
            delay = self.base_delay_ms * (2 ** min(failed_attempt - 1, 40))
        else:
            delay = self.base_delay_ms
        if self.max_delay_ms is not None:
            delay = min(delay, self.max_delay_ms)
        return int(delay)

    def to_dict(self) -> dict[str, Any]:
        return {
            "maxAttempts": self.max_attempts,
            "backoff": self.backoff,
            "baseDelayMs": self.base_delay_ms,
            "maxDelayMs": self.max_delay_ms,
            "maxRecoveries": self.max_recoveries,
        }


NO_RETRY = Retry()


# --------------------------------------------------------------------------- nodes and edges


@dataclass(slots=True)
class Node:
    id: str
    handler: Handler
    retry: Retry = NO_RETRY
    timeout_ms: int | None = None
    idempotency_key: KeyFunction | None = None
    is_async: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "retry": self.retry.to_dict() if self.retry is not NO_RETRY else None,
            "timeoutMs": self.timeout_ms,
            "maxRecoveries": self.retry.max_recoveries,
            "hasIdempotencyKey": self.idempotency_key is not None,
            "async": self.is_async,
        }


@dataclass(slots=True)
class Edge:
    source: str
    target: str
    when: Condition | None = None
    priority: int = 0
    condition: str | None = None
    """What ``when`` says, for people (:mod:`flowrt.condition_text`); None if unknown or none."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "from": self.source,
            "to": self.target,
            "priority": self.priority,
            "hasCondition": self.when is not None,
            "condition": self.condition,
        }


# --------------------------------------------------------------------------- flow


class Flow:
    """A named, versioned graph of nodes joined by conditional, prioritised edges."""

    def __init__(self, flow_id: str, version: str = "1.0.0", *, description: str | None = None):
        if not isinstance(flow_id, str) or not flow_id:
            raise DefinitionError("flow id must be a non-empty string")
        if not isinstance(version, str) or not version:
            raise DefinitionError(f"flow {flow_id!r}: version must be a non-empty string")
        self.flow_id = flow_id
        self.version = version
        self.description = description
        self.nodes: dict[str, Node] = {}
        self.edges: list[Edge] = []
        self._entries: list[str] = []
        self._outgoing: dict[str, list[Edge]] | None = None

    def __repr__(self) -> str:
        return f"<Flow {self.flow_id}@{self.version} nodes={list(self.nodes)}>"

    @property
    def key(self) -> tuple[str, str]:
        return (self.flow_id, self.version)

    @property
    def entry(self) -> str:
        self.validate()
        return self._entries[0]

    # -- building

    def add_node(
        self,
        node_id: str,
        handler: Handler,
        *,
        entry: bool = False,
        retry: Retry | None = None,
        timeout_ms: int | None = None,
        idempotency_key: KeyFunction | None = None,
    ) -> Node:
        where = f"flow {self.flow_id!r} node {node_id!r}"
        if not isinstance(node_id, str) or not node_id:
            raise DefinitionError(f"flow {self.flow_id!r}: node id must be a non-empty string")
        if node_id in self.nodes:
            raise DefinitionError(f"{where}: duplicate node id")
        if not callable(handler):
            raise DefinitionError(f"{where}: handler is not callable")
        retry = retry or NO_RETRY
        if not isinstance(retry, Retry):
            raise DefinitionError(f"{where}: retry must be a flowrt.Retry")
        if retry.problems():
            raise DefinitionError(f"{where}: " + "; ".join(retry.problems()))
        if timeout_ms is not None and (
            isinstance(timeout_ms, bool) or not isinstance(timeout_ms, int) or timeout_ms <= 0
        ):
            raise DefinitionError(f"{where}: timeout_ms must be a positive integer")
        if idempotency_key is not None and not callable(idempotency_key):
            raise DefinitionError(f"{where}: idempotency_key must be a function of ctx")
        node = Node(
            node_id,
            handler,
            retry,
            timeout_ms,
            idempotency_key,
            inspect.iscoroutinefunction(handler),
        )
        self.nodes[node_id] = node
        if entry:
            self._entries.append(node_id)
        self._outgoing = None
        return node

    def node(
        self,
        fn: Handler | None = None,
        *,
        id: str | None = None,  # noqa: A002 - mirrors the spec's keyword
        entry: bool = False,
        retry: Retry | None = None,
        timeout_ms: int | None = None,
        idempotency_key: KeyFunction | None = None,
    ) -> Any:
        """Decorator: ``@flow.node`` or ``@flow.node(entry=True, retry=...)``."""

        def register(handler: Handler) -> Handler:
            self.add_node(
                id or handler.__name__,
                handler,
                entry=entry,
                retry=retry,
                timeout_ms=timeout_ms,
                idempotency_key=idempotency_key,
            )
            return handler

        return register(fn) if fn is not None else register

    def edge(
        self, source: str, target: str, when: Condition | None = None, priority: int = 0
    ) -> Flow:
        if when is not None and not callable(when):
            raise DefinitionError(f"flow {self.flow_id!r} edge {source}->{target}: when must be callable")
        if isinstance(priority, bool) or not isinstance(priority, (int, float)):
            raise DefinitionError(f"flow {self.flow_id!r} edge {source}->{target}: priority must be a number")
        self.edges.append(Edge(source, target, when, priority, condition_text(when)))
        self._outgoing = None
        return self

    # -- validation and lookups

    def validate(self) -> Flow:
        """Raise :class:`DefinitionError` naming the flow and the offending node or edge."""
        if self._outgoing is not None:
            return self
        name = f"flow {self.flow_id!r}@{self.version}"
        if not self.nodes:
            raise DefinitionError(f"{name}: has no nodes")
        if len(self._entries) != 1:
            found = ", ".join(self._entries) or "none"
            raise DefinitionError(f"{name}: needs exactly one entry node (found {found})")
        for edge in self.edges:
            for end in (edge.source, edge.target):
                if end not in self.nodes:
                    raise DefinitionError(
                        f"{name}: edge {edge.source}->{edge.target} names unknown node {end!r}"
                    )
        outgoing: dict[str, list[Edge]] = {node_id: [] for node_id in self.nodes}
        for edge in self.edges:
            outgoing[edge.source].append(edge)
        for edges in outgoing.values():
            edges.sort(key=lambda e: -e.priority)
        self._outgoing = outgoing
        return self

    def outgoing(self, node_id: str) -> list[Edge]:
        """Edges leaving ``node_id``, highest priority first."""
        if self._outgoing is None:
            self.validate()
        assert self._outgoing is not None
        return self._outgoing.get(node_id, [])

    def to_dict(self) -> dict[str, Any]:
        self.validate()
        return {
            "flowId": self.flow_id,
            "version": self.version,
            "description": self.description,
            "entry": self._entries[0],
            "nodes": {node_id: node.to_dict() for node_id, node in self.nodes.items()},
            "edges": [edge.to_dict() for edge in self.edges],
        }


# --------------------------------------------------------------------------- class style


@dataclass(slots=True)
class _NodeSpec:
    id: str | None = None
    entry: bool = False
    retry: Retry | None = None
    timeout_ms: int | None = None
    idempotency_key: KeyFunction | None = None
    declared: bool = False
    edges: list[tuple[str, Condition | None, int]] = field(default_factory=list)


def _spec(fn: Any) -> _NodeSpec:
    spec = getattr(fn, "__flowrt_node__", None)
    if spec is None:
        spec = _NodeSpec()
        fn.__flowrt_node__ = spec
    return spec


def node(
    node_id: Any = None,
    *,
    retry: Retry | None = None,
    timeout_ms: int | None = None,
    idempotency_key: KeyFunction | None = None,
) -> Any:
    """Mark a method of a ``@flow`` class as a node: ``@node``, ``@node("id")`` or ``@node(retry=...)``."""

    def mark(fn: Handler) -> Handler:
        spec = _spec(fn)
        spec.declared = True
        spec.id = node_id if isinstance(node_id, str) else None
        spec.retry, spec.timeout_ms, spec.idempotency_key = retry, timeout_ms, idempotency_key
        return fn

    if callable(node_id):  # bare @node
        fn, node_id = node_id, None
        return mark(fn)
    return mark


def entry(fn: Handler) -> Handler:
    """Mark the entry node of a ``@flow`` class."""
    _spec(fn).entry = True
    return fn


def edge(target: str, when: Condition | None = None, priority: int = 0) -> Callable[[Handler], Handler]:
    """Declare an edge from the decorated node to ``target``."""

    def mark(fn: Handler) -> Handler:
        # Decorators apply bottom-up; insert at the front to keep source order.
        _spec(fn).edges.insert(0, (target, when, priority))
        return fn

    return mark


def flow(flow_id: str, version: str = "1.0.0", *, description: str | None = None) -> Callable[[type], type]:
    """Class decorator: build a :class:`Flow` from a class's ``@node`` methods.

    The class is returned unchanged but for ``__flowrt_flow__``; it is instantiated
    once, without arguments, so nodes can share helpers and attributes via ``self``.
    """

    def build(cls: type) -> type:
        built = Flow(flow_id, version, description=description or (cls.__doc__ or "").strip() or None)
        instance = cls()
        for attr in list(vars(cls)):
            raw = vars(cls)[attr]
            spec = getattr(raw, "__flowrt_node__", None)
            if spec is None:
                continue
            if not spec.declared:
                raise DefinitionError(
                    f"flow {flow_id!r}: method {attr!r} has @entry/@edge but no @node"
                )
            bound = getattr(instance, attr)
            node_id = spec.id or attr
            built.add_node(
                node_id,
                bound,
                entry=spec.entry,
                retry=spec.retry,
                timeout_ms=spec.timeout_ms,
                idempotency_key=spec.idempotency_key,
            )
            for target, when, priority in spec.edges:
                built.edge(node_id, target, when, priority)
        built.validate()
        cls.__flowrt_flow__ = built  # type: ignore[attr-defined]
        return cls

    return build


def as_flow(obj: Any) -> Flow:
    """A :class:`Flow` from a Flow or a ``@flow`` class."""
    if isinstance(obj, Flow):
        return obj.validate()
    built = getattr(obj, "__flowrt_flow__", None)
    if isinstance(built, Flow):
        return built.validate()
    raise DefinitionError(f"{obj!r} is neither a flowrt.Flow nor a @flow class")


def version_key(version: str) -> tuple[Any, ...]:
    """Semantic-version order: numeric parts compare as numbers, and a pre-release
    (``1.0.0-beta``) sorts before its release; build metadata (``+...``) is ignored."""

    def parts(text: str) -> tuple[Any, ...]:
        return tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in re.split(r"[.\-]", text) if p)

    release, _, pre = version.split("+", 1)[0].partition("-")
    return (parts(release), (1,) if not pre else (0, parts(pre)))
