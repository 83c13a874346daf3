"""The probes: ``/health`` (liveness), ``/ready`` (readiness) and ``/startup``.

Kubernetes probes and load balancers written for the reference keep working: each body
starts with the reference's fields (its HTTP framework's ``HealthCheckManager``) and
flowrt adds its own after them.

- ``/health`` is **liveness**: ``status`` is always ``"alive"`` and the answer is 200
  while the process serves requests, even when the database is away (restarting the
  process would not bring the database back). flowrt's own verdict moved to
  ``condition``: ``ok``, ``degraded`` (the in-memory fallback, a driver missing, the limit
  of abandoned handler threads reached, a blocked event loop) or ``unavailable`` (the
  database does not answer, or does not take writes: a full disk passes a ping).
- ``/ready`` is **readiness**: ``{"status": "healthy", "timestamp", "uptime", "checks"}``,
  200 only when every check is healthy, else 503 (the reference's rule), so a server whose
  database is unreachable or not writable, that fell back to memory, or that is shutting
  down gets no new traffic. It recovers by itself when the database does.
- ``/startup`` is ``{"status": "started", "uptime", "timestamp"}``, 200 once the app
  serves (with ``--no-drive`` startup recovery finishes before the listener opens).

Every figure comes from the :class:`ApiState` the routes share; :func:`health_body` and
:func:`readiness_body` are the one place each body is built, so a new field or check is
one edit there.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Literal

import msgspec
from litestar import Response, get
from litestar.handlers import HTTPRouteHandler
from litestar.openapi.datastructures import ResponseSpec

from .. import __version__
from ..runs import iso, now_ms

if TYPE_CHECKING:
    from .app import ApiState

Condition = Literal["ok", "degraded", "unavailable"]
CheckStatus = Literal["healthy", "degraded", "unhealthy"]

_encode = msgspec.json.Encoder().encode

FALLBACK_REASON = "the configured database could not be reached at startup (the server log says why)"
"""What the open probes say of a memory fallback: the full reason names the database's host,
user and name, which anyone who can reach /health could read; it is in the log instead."""


class Health(msgspec.Struct, rename="camel"):
    """``GET /health``: the reference's ``{status: "alive", timestamp}``, then flowrt's fields."""

    status: Literal["alive"]
    timestamp: str
    condition: Condition
    storage: Literal["sqlite", "memory", "postgres"]
    durable: bool
    fallback: bool
    version: str
    fallback_reason: str | None = None
    schema_version: int | None = None
    driving: bool = False
    workers: int = 0
    workers_alive: int = 0
    workers_replaced: int = 0
    """Drivers that died of something nothing else caught, and were replaced."""
    flows: int = 0
    uptime_seconds: float = 0.0
    writable: bool = True
    """False while database writes fail (a full disk lets reads and pings through)."""
    storage_problem: str | None = None
    """Why the database is unavailable, in words that name no host, user or path."""
    storage_error_seconds: float | None = None
    """How long writes have been failing, when they are."""
    steps_in_flight: int = 0
    abandoned_threads: int = 0
    """Threads of sync handlers that timed out and are still running."""
    abandoned_threads_limit: int = 0
    blocked_event_loops: int = 0
    """Event loops an async handler is blocking right now."""


class Check(msgspec.Struct, rename="camel", omit_defaults=True):
    """One readiness check, shaped like the reference's (``message`` only when not healthy)."""

    status: CheckStatus
    response_time: int
    details: dict[str, Any]
    message: str | None = None


class Readiness(msgspec.Struct):
    """``GET /ready``: overall status, uptime in milliseconds (as the reference), the checks."""

    status: CheckStatus
    timestamp: str
    uptime: int
    checks: dict[str, Check]
    version: str


class Startup(msgspec.Struct):
    """``GET /startup``: the reference's body."""

    status: Literal["started"]
    uptime: int
    timestamp: str


class _StorageProbe(msgspec.Struct):
    reachable: bool
    schema_version: int | None
    response_ms: int
    problem: str | None
    """None when the database answers and takes writes."""


async def _probe_storage(state: ApiState) -> _StorageProbe:
    """One round trip to the database (off the event loop where the engine offloads); after
    a failed write, one write that changes nothing, to see whether writes work again."""
    engine = state.engine
    storage = engine.storage
    began = time.monotonic()
    reachable: bool = await engine.offload(storage.ping)
    schema: int | None = await engine.offload(storage.schema_version) if reachable else None
    problem: str | None = "the database cannot be reached"
    if reachable:
        writable: bool = await engine.offload(storage.probe_write)
        problem = storage.write_trouble() if writable else "database writes are failing"
    return _StorageProbe(reachable, schema, round((time.monotonic() - began) * 1000), problem)


def _uptime_ms(state: ApiState) -> int:
    return round((time.monotonic() - state.started) * 1000)


def _now() -> str:
    return iso(now_ms()) or ""


async def health_body(state: ApiState) -> Health:
    """The ``/health`` body of this server, now. Add liveness fields here."""
    engine = state.engine
    storage = engine.storage
    probe = await _probe_storage(state)
    drivers = state.drivers
    handlers = engine.executor.status()
    failing = storage.write_error
    condition: Condition
    if probe.problem is not None:
        condition = "unavailable"
    elif (
        state.fallback_reason is not None
        or (drivers is not None and drivers.alive() < drivers.workers and not state.stopping)
        or handlers["abandonedThreads"] >= handlers["abandonedThreadsLimit"]
        or handlers["blockedEventLoops"]
    ):
        condition = "degraded"
    else:
        condition = "ok"
    return Health(
        status="alive",
        timestamp=_now(),
        condition=condition,
        storage=storage.kind,  # type: ignore[arg-type]
        durable=storage.durable,
        fallback=state.fallback_reason is not None,
        fallback_reason=FALLBACK_REASON if state.fallback_reason is not None else None,
        version=__version__,
        schema_version=probe.schema_version,
        driving=state.drivers is not None,
        workers=drivers.workers if drivers is not None else 0,
        workers_alive=drivers.alive() if drivers is not None else 0,
        workers_replaced=drivers.replaced if drivers is not None else 0,
        flows=len(engine.flows),
        uptime_seconds=round(time.monotonic() - state.started, 3),
        writable=probe.problem is None,
        storage_problem=probe.problem,
        storage_error_seconds=None if failing is None else round(time.monotonic() - failing[1], 1),
        steps_in_flight=len(engine.steps_in_flight()),
        abandoned_threads=handlers["abandonedThreads"],
        abandoned_threads_limit=handlers["abandonedThreadsLimit"],
        blocked_event_loops=handlers["blockedEventLoops"],
    )


def _storage_check(state: ApiState, probe: _StorageProbe) -> Check:
    storage = state.engine.storage
    details: dict[str, Any] = {"kind": storage.kind, "durable": storage.durable, "schemaVersion": probe.schema_version}
    if probe.problem is not None:
        return Check("unhealthy", probe.response_ms, details, probe.problem)
    if state.fallback_reason is not None:
        message = f"running on the in-memory fallback, runs are lost on restart: {FALLBACK_REASON}"
        return Check("degraded", probe.response_ms, details, message)
    return Check("healthy", probe.response_ms, details)


def _server_check(state: ApiState) -> Check:
    details = {"stopping": state.stopping, "driving": state.drivers is not None}
    if state.stopping:
        return Check("unhealthy", 0, details, "the server is shutting down")
    return Check("healthy", 0, details)


async def readiness_body(state: ApiState) -> Readiness:
    """The ``/ready`` body of this server, now. Add readiness checks here."""
    checks = {"storage": _storage_check(state, await _probe_storage(state)), "server": _server_check(state)}
    statuses = {check.status for check in checks.values()}
    overall: CheckStatus = "healthy"
    for worst in ("degraded", "unhealthy"):
        if worst in statuses:
            overall = worst
    return Readiness(overall, _now(), _uptime_ms(state), checks, __version__)


def _json(body: msgspec.Struct, status_code: int = 200) -> Response[bytes]:
    return Response(_encode(body), status_code=status_code, media_type="application/json")


def probe_handlers(state: ApiState) -> list[HTTPRouteHandler]:
    """The three probe routes over ``state``; they need no token and reveal no secret."""

    @get(
        "/health",
        summary="Liveness: the process answers; flowrt's storage and driver status",
        tags=["probes"],
        responses={200: ResponseSpec(Health, description="alive", generate_examples=False)},
    )
    async def health() -> Response[bytes]:
        return _json(await health_body(state))

    @get(
        "/ready",
        summary="Readiness: the database answers, durably, and the server is not stopping",
        tags=["probes"],
        responses={
            200: ResponseSpec(Readiness, description="ready for traffic", generate_examples=False),
            503: ResponseSpec(Readiness, description="a check is not healthy", generate_examples=False),
        },
    )
    async def ready() -> Response[bytes]:
        body = await readiness_body(state)
        return _json(body, 200 if body.status == "healthy" else 503)

    @get(
        "/startup",
        summary="Startup: the server has started",
        tags=["probes"],
        responses={200: ResponseSpec(Startup, description="started", generate_examples=False)},
    )
    async def startup() -> Response[bytes]:
        return _json(Startup("started", _uptime_ms(state), _now()))

    return [health, ready, startup]
