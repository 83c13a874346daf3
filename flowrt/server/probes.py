"""The probes: ``/health`` (liveness), ``/ready`` (readiness) and ``/startup``.

Kubernetes probes and load balancers written for the reference keep working: each body
starts with the reference's fields (its HTTP framework's ``HealthCheckManager``) and
flowrt adds its own after them.

- ``/health`` is **liveness**: ``status`` is always ``"alive"`` and the answer is 200
  while the process serves requests, even when the database is away (restarting the
  process would not bring the database back). flowrt's own verdict moved to
  ``condition``: ``ok``, ``degraded`` (running on the in-memory fallback) or
  ``unavailable`` (the database does not answer).
- ``/ready`` is **readiness**: ``{"status": "healthy", "timestamp", "uptime", "checks"}``,
  200 only when every check is healthy, else 503 (the reference's rule), so a server whose
  database is unreachable, that fell back to memory, or that is shutting down gets no
  new traffic.
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
    flows: int = 0
    uptime_seconds: float = 0.0


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


async def _probe_storage(state: ApiState) -> _StorageProbe:
    """One round trip to the database (off the event loop where the engine offloads)."""
    engine = state.engine
    began = time.monotonic()
    reachable: bool = await engine.offload(engine.storage.ping)
    schema: int | None = await engine.offload(engine.storage.schema_version) if reachable else None
    return _StorageProbe(reachable, schema, round((time.monotonic() - began) * 1000))


def _uptime_ms(state: ApiState) -> int:
    return round((time.monotonic() - state.started) * 1000)


def _now() -> str:
    return iso(now_ms()) or ""


async def health_body(state: ApiState) -> Health:
    """The ``/health`` body of this server, now. Add liveness fields here."""
    engine = state.engine
    storage = engine.storage
    probe = await _probe_storage(state)
    condition: Condition
    if not probe.reachable:
        condition = "unavailable"
    elif state.fallback_reason is not None:
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
        fallback_reason=state.fallback_reason,
        version=__version__,
        schema_version=probe.schema_version,
        driving=state.drivers is not None,
        workers=state.drivers.workers if state.drivers is not None else 0,
        flows=len(engine.flows),
        uptime_seconds=round(time.monotonic() - state.started, 3),
    )


def _storage_check(state: ApiState, probe: _StorageProbe) -> Check:
    storage = state.engine.storage
    details: dict[str, Any] = {"kind": storage.kind, "durable": storage.durable, "schemaVersion": probe.schema_version}
    if not probe.reachable:
        return Check("unhealthy", probe.response_ms, details, "the database cannot be reached")
    if state.fallback_reason is not None:
        message = f"running on the in-memory fallback, runs are lost on restart: {state.fallback_reason}"
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
