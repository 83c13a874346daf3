"""Server-sent events: a run's new timeline events, and changes to runs (docs/http-api.md).

``GET /v1/runs/{runId}/events`` follows one run; ``GET /v1/runs/changes`` tells about
every run that changes. Both read only what the JSON API reads, with no schema of their
own, so they cost nothing while nobody listens and little while somebody does:

- a run's stream reads the run's row by primary key and, only when its ``last_seq`` moved,
  the new events (``(run_id, seq)`` is the events' key): a quiet stream is one indexed
  read a second; a running run is read up to ten times a second, so the page keeps up.
- the changes stream shares one watcher between all subscribers of an app, which exists
  only while somebody subscribes. Each poll reads ``(run_id, status, last_seq)`` of the
  runs that can still change (``status IN (RUNNING, WAITING)``, the status index) and of
  the runs created in the last few seconds (a key range on the UUIDv7 run id, which catches
  runs that started and ended between two polls, in any process); a run whose ``last_seq``
  or status moved, or that left the active set, is read and sent. The poll interval grows
  with the scan's cost so the watcher never takes more than a small share of the server.

The engine's in-process notifications wake both early; polling covers what they miss
(other processes, and steps that end a run). Every stream ends within a fraction of a
second of shutdown, so SIGTERM stays prompt.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, AsyncIterator

from litestar import Request, get
from litestar.exceptions import HTTPException
from litestar.handlers import HTTPRouteHandler
from litestar.params import Parameter
from litestar.response import Stream

from .. import sse
from ..errors import FlowrtError, InvalidInput, RunNotFound
from ..runs import Run, RunStatus

log = logging.getLogger("flowrt.server.stream")

KEEPALIVE_SECONDS = 15.0
"""A ``: keepalive`` comment after this long without a message (proxies drop silent connections)."""
SLICE_SECONDS = 0.25
"""The longest a quiet stream goes without looking at shutdown (no I/O involved)."""
RUN_POLL_FAST = 0.02
RUN_POLL_RUNNING = 0.1
RUN_POLL_IDLE = 1.0
EVENTS_BATCH = 500
CHANGES_INTERVAL = 1.0
CHANGES_MIN_INTERVAL = 0.1
CHANGES_DUTY = 0.05
"""The watcher waits at least its last scan's duration divided by this between scans."""
RECENT_WINDOW_MS = 10_000
"""Runs created this recently are scanned whatever their status (covers clock skew between processes)."""

_ENDED = frozenset({RunStatus.COMPLETED.value, RunStatus.FAILED.value, RunStatus.CANCELLED.value})
_ACTIVE = (RunStatus.RUNNING.value, RunStatus.WAITING.value)
_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


class Pulse:
    """Wakes waiting streams when the engine says a run moved (from any thread), coalesced."""

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._event = asyncio.Event()
        self._pending = False
        self.waiters = 0

    def attach(self) -> None:
        if self._loop is None:
            self._loop = asyncio.get_running_loop()

    def notify(self) -> None:
        """The engine's listener: nearly free while no stream waits."""
        loop = self._loop
        if loop is None or self.waiters == 0 or self._pending:
            return
        self._pending = True
        try:
            loop.call_soon_threadsafe(self._fire)
        except RuntimeError:  # the loop has closed: the server is gone
            self._pending = False

    def _fire(self) -> None:
        self._pending = False
        event, self._event = self._event, asyncio.Event()
        event.set()

    async def nap(self, seconds: float, stopping: Any) -> None:
        """Sleep up to ``seconds``; return early on a pulse or once ``stopping()`` is true."""
        deadline = time.monotonic() + seconds
        self.waiters += 1
        try:
            while not stopping():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return
                event = self._event
                try:
                    await asyncio.wait_for(event.wait(), min(remaining, SLICE_SECONDS))
                    return
                except TimeoutError:
                    continue
        finally:
            self.waiters -= 1


def _uuid7_floor(ms: int) -> str:
    """The smallest run id (UUIDv7, see :func:`flowrt.runs.new_run_id`) issued at or after ``ms``."""
    h = f"{max(ms, 0) & ((1 << 48) - 1):012x}"
    return f"{h[:8]}-{h[8:12]}"


class Subscriber:
    """One changes stream: the latest JSON of each run that changed since it last read (coalesced)."""

    def __init__(self, status: str | None, flow_id: str | None, tenant_id: str | None) -> None:
        self.filters = {"status": status, "flowId": flow_id, "tenantId": tenant_id}
        self.pending: dict[str, dict[str, Any]] = {}
        self.ready = asyncio.Event()

    def offer(self, run: dict[str, Any]) -> None:
        if all(value is None or run.get(key) == value for key, value in self.filters.items()):
            self.pending.pop(run["runId"], None)  # re-inserted last: sent in the order of change
            self.pending[run["runId"]] = run
            self.ready.set()


class RunWatcher:
    """The one poller behind every ``/v1/runs/changes`` stream of an app; runs only while subscribed."""

    def __init__(self, api: Any, pulse: Pulse) -> None:
        self.api = api
        self.pulse = pulse
        self.subscribers: set[Subscriber] = set()
        self.snapshot: dict[str, tuple[str, int]] = {}
        self.task: asyncio.Task[None] | None = None
        self.baseline = asyncio.Event()
        self.scans = 0
        self.last_scan_seconds = 0.0
        storage = api.engine.storage
        p = storage.db.param
        self._active_sql = f"SELECT run_id, status, last_seq FROM flowrt_runs WHERE status IN ({p}, {p})"
        self._recent_sql = f"SELECT run_id, status, last_seq FROM flowrt_runs WHERE run_id > {p}"

    async def subscribe(self, subscriber: Subscriber) -> None:
        """Register ``subscriber``; returns once the watcher has its baseline (later changes are sent)."""
        if self.task is None or self.task.done():
            self.baseline = asyncio.Event()
            self.task = asyncio.get_running_loop().create_task(self._run(self.baseline), name="flowrt-run-watcher")
        self.subscribers.add(subscriber)
        await self.baseline.wait()

    def unsubscribe(self, subscriber: Subscriber) -> None:
        self.subscribers.discard(subscriber)
        if not self.subscribers and self.task is not None:
            self.task.cancel()
            self.task = None

    def _scan(self) -> dict[str, tuple[str, int]]:
        # Storage's own read path (connection, lock, error translation); the SQL is ours.
        storage = self.api.engine.storage
        rows = storage._read(self._active_sql, _ACTIVE)
        rows += storage._read(self._recent_sql, (_uuid7_floor(int(time.time() * 1000) - RECENT_WINDOW_MS),))
        return {run_id: (status, last_seq) for run_id, status, last_seq in rows}

    async def _run(self, baseline: asyncio.Event) -> None:
        try:
            await self._watch(baseline)
        finally:
            baseline.set()  # nobody waits for a baseline that will never come

    async def _watch(self, baseline: asyncio.Event) -> None:
        failing = False
        self.snapshot = {}
        while not self.api.stopping:
            began = time.monotonic()
            try:
                if baseline.is_set():
                    await self._poll()
                else:
                    self.snapshot = await self.api.engine.offload(self._scan)
                failing = False
            except FlowrtError as exc:  # the database is away: keep the streams, try again later
                if not failing:
                    log.warning("run watcher: %s", exc.message)
                failing = True
            except Exception:  # noqa: BLE001 - a watcher bug must not take the server down
                log.exception("run watcher failed")
            baseline.set()
            cost = time.monotonic() - began
            self.last_scan_seconds = cost
            floor = max(CHANGES_MIN_INTERVAL, cost / CHANGES_DUTY)
            await asyncio.sleep(floor)
            await self.pulse.nap(max(0.0, CHANGES_INTERVAL - floor), lambda: self.api.stopping)

    async def _poll(self) -> None:
        engine = self.api.engine
        current = await engine.offload(self._scan)
        self.scans += 1
        changed = [run_id for run_id, seen in current.items() if self.snapshot.get(run_id) != seen]
        # An active run that fell out of the scan has ended (or was deleted): read it once more.
        changed += [r for r, (status, _) in self.snapshot.items() if r not in current and status in _ACTIVE]
        self.snapshot = current
        for run_id in changed:
            run = await engine.get_async(run_id)
            if run is None:
                continue
            body = run.to_json()
            for subscriber in tuple(self.subscribers):
                subscriber.offer(body)


def _last_event_id(request: Request[Any, Any, Any], after: int) -> int:
    raw = request.headers.get("last-event-id")
    if raw is None or raw.strip() == "":
        return after
    try:
        value = int(raw)
    except ValueError:
        raise InvalidInput(f"Last-Event-ID {raw[:40]!r} is not an event sequence number") from None
    if not 0 <= value <= 2**62:
        raise InvalidInput("Last-Event-ID is out of range")
    return value


def stream_handlers(api: Any, check_run_id: Any) -> list[HTTPRouteHandler]:
    """The two SSE routes, bound to the app's :class:`~flowrt.server.app.ApiState` (mounted under /v1)."""
    engine = api.engine
    pulse = Pulse()
    engine.add_listener(pulse.notify)
    watcher = RunWatcher(api, pulse)
    api.run_watcher = watcher

    def stopping() -> bool:
        return bool(api.stopping)

    async def follow(run_id: str, sent: int) -> AsyncIterator[bytes]:
        delay, quiet_since, failing = RUN_POLL_FAST, time.monotonic(), False
        while not stopping():
            try:
                row = await engine.get_stored_async(run_id)
                if row is None:
                    return  # deleted while followed
                if row.last_seq > sent:
                    for event in await engine.offload(engine.timeline, run_id, sent, EVENTS_BATCH):
                        yield sse.message(event.type, event.to_json(), event.seq)
                        sent = event.seq
                    delay, quiet_since = RUN_POLL_FAST, time.monotonic()
                    continue
                if row.status in _ENDED:
                    yield sse.message("end", Run.stored_to_json(row))  # the row in hand: no second read
                    return
                failing = False
            except FlowrtError as exc:
                if not failing:
                    log.warning("events stream of run %s: %s", run_id, exc.message)
                failing, row = True, None
            if time.monotonic() - quiet_since >= KEEPALIVE_SECONDS:
                yield sse.comment("keepalive")
                quiet_since = time.monotonic()
            await pulse.nap(delay, stopping)
            running = row is not None and row.status == RunStatus.RUNNING.value
            delay = min(delay * 2, RUN_POLL_RUNNING if running else RUN_POLL_IDLE)

    @get(
        "/runs/{run_id:str}/events",
        summary="Follow a run's events (server-sent events)",
        description=(
            "text/event-stream: one message per timeline event (id: seq, event: type, data: the event), "
            "then `event: end` with the run once it has ended. Honours Last-Event-ID and ?after=."
        ),
        media_type="text/event-stream",
        responses={404: _error_spec()},
    )
    async def run_events(
        request: Request[Any, Any, Any],
        run_id: str,
        after: int = Parameter(ge=0, le=2**62, default=0, description="only events with seq > after"),
    ) -> Stream:
        check_run_id(run_id)
        start = _last_event_id(request, after)
        if await engine.get_stored_async(run_id) is None:
            raise RunNotFound(f"run {run_id} not found", run_id=run_id)
        pulse.attach()
        return Stream(follow(run_id, start), media_type="text/event-stream", headers=_HEADERS)

    async def changes(subscriber: Subscriber) -> AsyncIterator[bytes]:
        # Subscribed here, not in the handler: a generator that never starts never runs its finally.
        await watcher.subscribe(subscriber)
        try:
            yield sse.comment("subscribed")  # from here on, every change is sent
            quiet_since = time.monotonic()
            while not stopping():
                if subscriber.pending:
                    batch, subscriber.pending = subscriber.pending, {}
                    subscriber.ready.clear()
                    for body in batch.values():
                        yield sse.message("run", body)
                    quiet_since = time.monotonic()
                    continue
                if time.monotonic() - quiet_since >= KEEPALIVE_SECONDS:
                    yield sse.comment("keepalive")
                    quiet_since = time.monotonic()
                try:
                    await asyncio.wait_for(subscriber.ready.wait(), SLICE_SECONDS)
                except TimeoutError:
                    pass
        finally:
            watcher.unsubscribe(subscriber)

    @get(
        "/runs/changes",
        summary="Follow changes to runs (server-sent events)",
        description="text/event-stream of `event: run` with the run object whenever a run changes; optional filters.",
        media_type="text/event-stream",
    )
    async def run_changes(
        status: RunStatus | None = Parameter(required=False),
        flowId: str | None = Parameter(required=False, max_length=200, pattern="^[^\x00]*$"),  # noqa: N803
        tenantId: str | None = Parameter(required=False, max_length=200, pattern="^[^\x00]*$"),  # noqa: N803
    ) -> Stream:
        if stopping():
            raise HTTPException(status_code=503, detail="the server is shutting down")
        pulse.attach()
        subscriber = Subscriber(None if status is None else status.value, flowId, tenantId)
        return Stream(changes(subscriber), media_type="text/event-stream", headers=_HEADERS)

    return [run_changes, run_events]


def _error_spec() -> Any:
    from litestar.openapi.datastructures import ResponseSpec

    from .wire import ErrorBody

    return ResponseSpec(ErrorBody, description="Error", generate_examples=False)
