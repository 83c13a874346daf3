"""What a run and its timeline look like to callers: :class:`Run`, :class:`Event`, :class:`RunStatus`."""

from __future__ import annotations

import functools
import os
import random
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any


class RunStatus(StrEnum):
    """A run's status; compares equal to the plain strings ``"RUNNING"``, ..."""

    RUNNING = "RUNNING"
    WAITING = "WAITING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"

    @property
    def finished(self) -> bool:
        return self in FINISHED


FINISHED = frozenset({RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.CANCELLED})
ACTIVE = frozenset({RunStatus.RUNNING, RunStatus.WAITING})


class EventType(StrEnum):
    RUN_STARTED = "RUN_STARTED"
    NODE_STARTED = "NODE_STARTED"
    NODE_FINISHED = "NODE_FINISHED"
    NODE_FAILED = "NODE_FAILED"
    RUN_WAITING = "RUN_WAITING"
    RUN_RESUMED = "RUN_RESUMED"
    RUN_COMPLETED = "RUN_COMPLETED"
    RUN_ABORTED = "RUN_ABORTED"
    RUN_CANCELLED = "RUN_CANCELLED"
    RUN_RETRIED = "RUN_RETRIED"
    RUN_REWOUND = "RUN_REWOUND"


def now_ms() -> int:
    return int(time.time() * 1000)


def iso(ms: int | None) -> str | None:
    """Epoch milliseconds as ISO-8601 UTC with a ``Z``, as the reference's JSON dates."""
    if ms is None:
        return None
    return f"{_iso_second(ms // 1000)}{ms % 1000:03d}Z"


@functools.lru_cache(maxsize=4096)
def _iso_second(seconds: int) -> str:
    # Every run object carries two or three dates, mostly of the same few seconds; strftime
    # showed in the server's profile.
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S.")


def to_datetime(ms: int | None) -> datetime | None:
    return None if ms is None else datetime.fromtimestamp(ms / 1000, UTC)


_id_lock = threading.Lock()
# The random part of an id must be unique, not secret: a generator of flowrt's own (seeded from
# os.urandom, and again in a forked child; a user's random.seed() does not touch it) saves a
# system call per start over os.urandom.
_id_random = random.Random()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_id_random.seed)
_id_last = [0, 0]  # last millisecond, counter within it


def new_run_id() -> str:
    """A UUIDv7: time-ordered (with a per-process counter inside one millisecond), so the
    primary key doubles as the listing order and inserts land at the end of the index."""
    with _id_lock:
        ms = now_ms()
        if ms <= _id_last[0]:
            ms = _id_last[0]
            _id_last[1] += 1
            if _id_last[1] >= 1 << 12:
                ms += 1
                _id_last[1] = 0
        else:
            _id_last[1] = 0
        _id_last[0] = ms
        counter = _id_last[1]
    value = (ms & ((1 << 48) - 1)) << 80 | 0x7 << 76 | counter << 64
    value |= 0x2 << 62 | _id_random.getrandbits(62)
    h = f"{value:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


@functools.cache
def _raw() -> Any:
    """``msgspec.Raw``, imported on first use: flowrt.client imports this module and stays light."""
    from msgspec import Raw

    return Raw


@dataclass(frozen=True, slots=True)
class Run:
    """A run as one call saw it. ``replayed`` is True only on what a start returns when its
    idempotency key found an earlier start: this call made nothing new (the CLI says so; a
    client whose first attempt may have reached the server reports False). It belongs to the
    answer, not the run, so it is neither stored nor in :meth:`to_json`."""

    run_id: str
    flow_id: str
    flow_version: str
    tenant_id: str | None
    status: RunStatus
    current_node_id: str | None
    input: Any
    state: dict[str, Any]
    outputs: dict[str, Any]
    attempts: dict[str, int]
    error: dict[str, Any] | None
    wait_reason: str | None
    wait_until: str | None
    wake_at: datetime | None
    created_at: datetime
    updated_at: datetime
    replayed: bool = field(default=False, compare=False)

    @property
    def finished(self) -> bool:
        return self.status in FINISHED

    def to_json(self) -> dict[str, Any]:
        """The HTTP API's run object (the reference's fields, plus attempts/waitReason/wakeAt/error)."""
        return {
            "runId": self.run_id,
            "flowId": self.flow_id,
            "flowVersion": self.flow_version,
            "tenantId": self.tenant_id,
            "status": str(self.status),
            "currentNodeId": self.current_node_id,
            "inputJson": self.input,
            "stateJson": self.state,
            "outputsJson": self.outputs,
            "attempts": self.attempts,
            "waitReason": self.wait_reason,
            "waitUntil": self.wait_until,
            "wakeAt": _iso_dt(self.wake_at),
            "error": self.error,
            "createdAt": _iso_dt(self.created_at),
            "updatedAt": _iso_dt(self.updated_at),
        }

    @staticmethod
    def stored_to_json(row: Any) -> dict[str, Any]:
        """:meth:`to_json` of a run as stored (a :class:`flowrt.storage.RunRow`), without
        building the :class:`Run`: its JSON columns go into the answer as they are stored
        (``msgspec.Raw``), not decoded and encoded again. The HTTP server answers ticks, GETs
        and the event stream's end this way: 3 µs an answer, where building the Run and
        encoding it took 11.5 (docs/performance.md). The same answer byte for byte
        (tests/test_wire_json.py), but that a float stored in exponent form keeps its stored
        spelling (``1e+100``, not ``1e100``): the same number."""
        raw = _raw()
        error = row.error_json
        return {
            "runId": row.run_id,
            "flowId": row.flow_id,
            "flowVersion": row.flow_version,
            "tenantId": row.tenant_id,
            "status": row.status,
            "currentNodeId": row.current_node_id,
            "inputJson": raw(row.input_json),
            "stateJson": raw(row.state_json),
            "outputsJson": raw(row.outputs_json),
            "attempts": raw(row.attempts_json),
            "waitReason": row.wait_reason,
            "waitUntil": row.wait_until,
            "wakeAt": iso(row.wake_at),
            "error": None if error is None else raw(error),
            "createdAt": iso(row.created_at),
            "updatedAt": iso(row.updated_at),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Run:
        """A run object off the wire (what :meth:`to_json` writes). Fields the reference
        runtime does not send (attempts, waitReason, wakeAt, error, ...) default to empty."""
        return cls(
            run_id=data["runId"],
            flow_id=data["flowId"],
            flow_version=data["flowVersion"],
            tenant_id=data.get("tenantId"),
            status=RunStatus(data["status"]),
            current_node_id=data.get("currentNodeId"),
            input=data.get("inputJson"),
            state=data.get("stateJson") or {},
            outputs=data.get("outputsJson") or {},
            attempts=data.get("attempts") or {},
            error=data.get("error"),
            wait_reason=data.get("waitReason"),
            wait_until=data.get("waitUntil"),
            wake_at=parse_iso(data.get("wakeAt")),
            created_at=parse_iso(data["createdAt"]),  # type: ignore[arg-type]
            updated_at=parse_iso(data["updatedAt"]),  # type: ignore[arg-type]
        )


def parse_iso(value: str | None) -> datetime | None:
    """An ISO-8601 time off the wire (``...Z`` or with an offset) as an aware UTC datetime."""
    if value is None:
        return None
    parsed = datetime.fromisoformat(value)
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def _iso_dt(value: datetime | None) -> str | None:
    return None if value is None else iso(int(value.timestamp() * 1000 + 0.5))


@dataclass(frozen=True, slots=True)
class Event:
    run_id: str
    seq: int
    at: datetime
    type: str
    node_id: str | None
    attempt: int | None
    payload: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {
            "runId": self.run_id,
            "seq": self.seq,
            "at": _iso_dt(self.at),
            "type": self.type,
            "nodeId": self.node_id,
            "attempt": self.attempt,
            "payloadJson": self.payload,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any], *, run_id: str | None = None, seq: int | None = None) -> Event:
        """An event off the wire. The reference runtime sends neither ``runId`` nor ``seq``:
        pass them (the run asked about, the event's 1-based position in its timeline)."""
        return cls(
            run_id=data.get("runId") or run_id or "",
            seq=int(data.get("seq") or seq or 0),
            at=parse_iso(data["at"]),  # type: ignore[arg-type]
            type=data["type"],
            node_id=data.get("nodeId"),
            attempt=data.get("attempt"),
            payload=data.get("payloadJson") or {},
        )
