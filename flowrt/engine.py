"""The engine: start, step, resume and cancel runs, durably, one transaction per step.

A step is: claim the run's lease (one short write), run the node's handler with no
transaction open, then commit state, outputs, attempts, status, events and the
idempotency record in one transaction that is fenced by the lease epoch, so a step
whose lease moved on (cancelled, or reclaimed after a crash) writes nothing.

The step logic is written once, as generators that *yield* the work they need done
outside the database (run a handler, sleep through a short backoff). ``_run_sync``
performs those requests in the calling thread for the Python API and the drivers;
``_run_async`` performs them on an event loop for the HTTP server. Nothing else
differs between the two.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import inspect
import json
import logging
import os
import re
import socket
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Callable, Generator, Iterable

import msgspec

from .definitions import Fail, Flow, Node, Ok, Result, Wait, as_flow
from .errors import (
    DefinitionError,
    FlowNotFound,
    FlowNotRegistered,
    InvalidInput,
    RunBusy,
    RunFinished,
    RunNotFound,
    RunNotWaiting,
)
from .runs import ACTIVE, FINISHED, Event, EventType, Run, RunStatus, new_run_id, now_ms, to_datetime
from .storage import DEFAULT_URL, EventRow, LeaseLost, RunRow, Storage

log = logging.getLogger("flowrt.engine")

RETRYABLE_CODES = frozenset({"TIMEOUT", "NETWORK_ERROR", "RATE_LIMIT"})
_CURSOR = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")  # a run id

_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.decode


def _dumps(value: Any) -> str:
    """Engine-built JSON (already validated parts): the fast encoder."""
    return _encode(value).decode()


def dumps_user(value: Any) -> str:
    """User-supplied values must be plain JSON: no NaN, no datetimes, no objects."""
    if value is None:
        return "null"
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def _loads(text: str | None) -> Any:
    return None if text is None else _decode(text)


def deep_merge(base: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    """Merge ``patch`` into ``base`` in place: dicts merge recursively, anything else replaces."""
    for key, value in patch.items():
        current = base.get(key)
        if isinstance(value, dict) and isinstance(current, dict):
            deep_merge(current, value)
        else:
            base[key] = value
    return base


def _version_key(version: str) -> tuple[Any, ...]:
    """Semantic-version order: numeric parts compare as numbers, and a pre-release
    (``1.0.0-beta``) sorts before its release; build metadata (``+...``) is ignored."""

    def parts(text: str) -> tuple[Any, ...]:
        return tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in re.split(r"[.\-]", text) if p)

    release, _, pre = version.split("+", 1)[0].partition("-")
    return (parts(release), (1,) if not pre else (0, parts(pre)))


class Context:
    """What a handler (and an edge condition) sees of its run."""

    __slots__ = (
        "run_id",
        "flow_id",
        "flow_version",
        "tenant_id",
        "node_id",
        "input",
        "state",
        "outputs",
        "attempt",
        "attempts",
        "started_at",
        "services",
        "resume_payload",
    )

    def __init__(
        self,
        run_id: str,
        flow_id: str,
        flow_version: str,
        tenant_id: str | None,
        node_id: str | None,
        input: Any,  # noqa: A002
        state: dict[str, Any],
        outputs: dict[str, Any],
        attempt: int,
        attempts: dict[str, int],
        started_at: datetime | None,
        services: dict[str, Any],
        resume_payload: Any,
    ) -> None:
        self.run_id, self.flow_id, self.flow_version, self.tenant_id = run_id, flow_id, flow_version, tenant_id
        self.node_id, self.input, self.state, self.outputs = node_id, input, state, outputs
        self.attempt, self.attempts, self.started_at = attempt, attempts, started_at
        self.services, self.resume_payload = services, resume_payload

    def _with(self, state: dict[str, Any], outputs: dict[str, Any]) -> Context:
        """The same context after a step: edge conditions see the updated state and outputs."""
        return Context(
            self.run_id, self.flow_id, self.flow_version, self.tenant_id, self.node_id, self.input,
            state, outputs, self.attempt, self.attempts, self.started_at, self.services, self.resume_payload,
        )

    def __repr__(self) -> str:
        return f"<Context run={self.run_id} node={self.node_id} attempt={self.attempt}>"


@dataclass(slots=True)
class _Execute:
    """A request from the step core: run this node's handler and send back its Result."""

    node: Node
    ctx: Context


@dataclass(slots=True)
class _Sleep:
    seconds: float


@dataclass(slots=True)
class _Lease:
    run_id: str
    epoch: int
    held: bool = True
    executing: bool = False  # a handler of this run is running right now


class _NodeTimeout(Exception):
    pass


def failure_from(exc: BaseException) -> Fail:
    """A raised exception as a failure: its ``code`` attribute or class name, its ``retryable``."""
    code = getattr(exc, "code", None)
    code = code if isinstance(code, str) and code else type(exc).__name__
    retryable = getattr(exc, "retryable", None)
    return Fail(code, str(exc) or type(exc).__name__, retryable if isinstance(retryable, bool) else None)


def as_result(value: Any) -> Result:
    if isinstance(value, (Ok, Wait, Fail)):
        return value
    return Ok(output=value)


class Engine:
    """Runs flows durably on one database. Thread-safe; one per process is typical."""

    def __init__(
        self,
        database_url: str | None = None,
        *,
        flows: Iterable[Any] = (),
        services: dict[str, Any] | None = None,
        lease_ttl: float = 30.0,
        inline_backoff: float = 5.0,
        pool_size: int = 16,
        owner: str | None = None,
        storage: Storage | None = None,
    ) -> None:
        self.database_url = database_url or os.environ.get("DATABASE_URL") or DEFAULT_URL
        self.storage = storage or Storage(self.database_url, pool_size=pool_size)
        self.services: dict[str, Any] = dict(services or {})
        self.lease_ttl_ms = int(lease_ttl * 1000)
        self.inline_backoff = inline_backoff
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}:{os.urandom(3).hex()}"
        self._flows: dict[tuple[str, str], Flow] = {}
        self._flow_keys: list[str] = []  # "flow_id@version": what this process's drivers may claim
        self._latest: dict[str, Flow] = {}
        self._held: dict[str, _Lease] = {}
        self._held_lock = threading.Lock()
        self._renewer: threading.Thread | None = None
        self._stopping = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: threading.Thread | None = None
        self._loop_lock = threading.Lock()
        self._handler_threads: concurrent.futures.ThreadPoolExecutor | None = None
        self._db_threads: concurrent.futures.ThreadPoolExecutor | None = None
        self._offload_db = self.storage.kind == "postgres"
        self._pool_size = pool_size
        self._listeners: list[Callable[[], None]] = []
        self.register(*flows)

    # ------------------------------------------------------------------ lifecycle

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop background threads; the database stays as it is.

        A lease still held here belongs to a step whose handler is still running (a
        finished step has released its lease). Its lease is expired rather than
        released: the next claimer then records the abandoned attempt as WORKER_LOST
        and counts it, as it would after a crash, instead of silently running it again.
        """
        self._stopping.set()
        with self._held_lock:
            run_ids = list(self._held)
            self._held.clear()
        if run_ids:
            log.warning("closing with %d step(s) still running; their attempts will count as WORKER_LOST", len(run_ids))
            with contextlib.suppress(Exception):
                self.storage.expire(self.owner, run_ids)
        if self._loop is not None:
            loop, thread = self._loop, self._loop_thread
            loop.call_soon_threadsafe(loop.stop)
            if thread is not None:
                thread.join(5)
            if not loop.is_running():
                loop.close()
        for pool in (self._handler_threads, self._db_threads):
            if pool is not None:
                pool.shutdown(wait=False, cancel_futures=True)
        self.storage.close()

    # ------------------------------------------------------------------ definitions

    def register(self, *flows: Any) -> Engine:
        """Register Flows or ``@flow`` classes (or lists of them)."""
        for item in flows:
            if isinstance(item, (list, tuple, set)):
                self.register(*item)
                continue
            flow = as_flow(item)
            existing = self._flows.get(flow.key)
            if existing is not None and existing is not flow:
                raise DefinitionError(f"flow {flow.flow_id!r}@{flow.version} is already registered")
            self._flows[flow.key] = flow
            self._flow_keys = [f"{fid}@{ver}" for fid, ver in self._flows]
            latest = self._latest.get(flow.flow_id)
            if latest is None or _version_key(flow.version) > _version_key(latest.version):
                self._latest[flow.flow_id] = flow
        return self

    @property
    def flows(self) -> list[Flow]:
        return sorted(self._flows.values(), key=lambda f: (f.flow_id, _version_key(f.version)))

    def list_flows(self) -> list[dict[str, Any]]:
        return [
            {"flowId": f.flow_id, "version": f.version, "definitionJson": f.to_dict()} for f in self.flows
        ]

    def flow(self, flow_id: str, version: str | None = None) -> Flow:
        found = self._latest.get(flow_id) if version is None else self._flows.get((flow_id, version))
        if found is None:
            what = flow_id if version is None else f"{flow_id}@{version}"
            raise FlowNotFound(f"flow {what} is not registered", flow_id=flow_id, version=version)
        return found

    def _flow_of(self, row: RunRow) -> Flow:
        found = self._flows.get((row.flow_id, row.flow_version))
        if found is None:
            raise FlowNotRegistered(
                f"run {row.run_id} belongs to flow {row.flow_id}@{row.flow_version}, which is not loaded in this process",
                run_id=row.run_id,
            )
        return found

    # ------------------------------------------------------------------ reads

    def get(self, run_id: str) -> Run | None:
        row = self.storage.get_run(run_id)
        return None if row is None else self._to_run(row)

    def timeline(self, run_id: str, after: int = 0, limit: int | None = None) -> list[Event]:
        rows = self.storage.events(run_id, after, limit)
        if not rows and self.storage.get_run(run_id) is None:
            raise RunNotFound(f"run {run_id} not found", run_id=run_id)
        return [
            Event(r[0], r[1], to_datetime(r[2]), r[3], r[4], r[5], _loads(r[6]))  # type: ignore[arg-type]
            for r in rows
        ]

    def list_runs(
        self,
        *,
        status: str | None = None,
        flow_id: str | None = None,
        tenant_id: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> tuple[list[Run], str | None]:
        """One page of runs, newest first, and the cursor of the next page (or None).

        ``since`` (inclusive) and ``until`` (exclusive) bound when the runs were started.
        """
        if status is not None and status not in RunStatus.__members__:
            raise InvalidInput(f"unknown status {status!r}; one of {', '.join(RunStatus)}")
        if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= 1000:
            raise InvalidInput("limit must be an integer from 1 to 1000")
        if cursor is not None and not _CURSOR.fullmatch(cursor):
            raise InvalidInput("cursor is not one this API issued: pass nextCursor from the previous page")
        bounds = [None if t is None else int(t.timestamp() * 1000) for t in (since, until)]
        rows = self.storage.list_runs(
            status=status, flow_id=flow_id, tenant_id=tenant_id, limit=limit + 1, cursor=cursor,
            since=bounds[0], until=bounds[1],
        )
        next_cursor = rows[limit - 1].run_id if len(rows) > limit else None
        return [self._to_run(r) for r in rows[:limit]], next_cursor

    def running_run_ids(self) -> list[str]:
        return self.storage.running_ids()

    def _to_run(self, row: RunRow) -> Run:
        return Run(
            run_id=row.run_id,
            flow_id=row.flow_id,
            flow_version=row.flow_version,
            tenant_id=row.tenant_id,
            status=RunStatus(row.status),
            current_node_id=row.current_node_id,
            input=_loads(row.input_json),
            state=_loads(row.state_json),
            outputs=_loads(row.outputs_json),
            attempts=_loads(row.attempts_json),
            error=_loads(row.error_json),
            wait_reason=row.wait_reason,
            wait_until=row.wait_until,
            wake_at=to_datetime(row.wake_at),
            created_at=to_datetime(row.created_at),  # type: ignore[arg-type]
            updated_at=to_datetime(row.updated_at),  # type: ignore[arg-type]
        )

    # ------------------------------------------------------------------ commands

    def start(
        self,
        flow_id: str,
        version: str | None = None,
        input: Any = None,  # noqa: A002 - the spec's name
        *,
        tenant_id: str | None = None,
        initial_state: dict[str, Any] | None = None,
    ) -> Run:
        """Create a run at the flow's entry node, RUNNING. Nothing executes yet."""
        flow = self.flow(flow_id, version)
        if initial_state is not None and not isinstance(initial_state, dict):
            raise InvalidInput("initialState must be a JSON object")
        if tenant_id is not None and not isinstance(tenant_id, str):
            raise InvalidInput("tenantId must be a string")
        try:
            input_json = dumps_user({} if input is None else input)
            state_json = dumps_user(initial_state or {})
        except (TypeError, ValueError, RecursionError) as exc:
            raise InvalidInput(f"input and initial state must be JSON values: {exc}") from exc
        now = now_ms()
        row = RunRow(
            run_id=new_run_id(),
            flow_id=flow.flow_id,
            flow_version=flow.version,
            tenant_id=tenant_id,
            status=RunStatus.RUNNING,
            current_node_id=flow.entry,
            input_json=input_json,
            state_json=state_json,
            outputs_json="{}",
            attempts_json="{}",
            failures=0,
            error_json=None,
            wait_reason=None,
            wait_until=None,
            wake_at=None,
            resume_json=None,
            last_seq=1,
            lease_owner=None,
            lease_expires_at=None,
            lease_epoch=0,
            stale_owner=None,
            created_at=now,
            updated_at=now,
        )
        self.storage.insert_run(row, [(row.run_id, 1, now, EventType.RUN_STARTED, None, None, "{}")])
        self._notify()
        return self._to_run(row)

    def tick(self, run_id: str) -> Run:
        """One step: execute the current node once (a WAITING run's node is polled)."""
        return self._to_run(self._run_sync(self._tick(run_id), run_id))

    def resume(self, run_id: str, payload: Any = None, *, by: str = "api") -> Run:
        """Wake a WAITING run: record the payload durably, then execute the waiting node."""
        return self._to_run(self._run_sync(self._resume(run_id, payload, by), run_id))

    def run_until_blocked(self, run_id: str) -> Run:
        """Step a run until it waits or ends, sleeping through retry backoffs."""
        return self._to_run(self._run_sync(self._until_blocked(run_id), run_id))

    def cancel(self, run_id: str, reason: str | None = None) -> Run:
        """End a RUNNING or WAITING run as CANCELLED; a step in flight is discarded."""
        if reason is not None and not isinstance(reason, str):
            raise InvalidInput("reason must be a string")
        row = self.storage.cancel(
            run_id, reason, (EventType.RUN_CANCELLED, None, None, _dumps({"reason": reason}))
        )
        if row is None:
            if self.storage.get_run(run_id) is None:
                raise RunNotFound(f"run {run_id} not found", run_id=run_id)
            raise RunFinished(f"run {run_id} has already ended", run_id=run_id)
        with self._held_lock:
            self._held.pop(run_id, None)
        return self._to_run(row)

    def drive_next(
        self, *, max_sleep: float | None = None, should_stop: Callable[[], bool] | None = None
    ) -> bool:
        """Claim the oldest runnable run (or due timer) and drive it; False when there is none.

        ``should_stop`` is asked between steps: a shutting-down driver hands the run back
        after the step in hand commits, instead of finishing the whole run.
        """
        for timers in (False, True):
            row = self.storage.claim_next(self.owner, self.lease_ttl_ms, self._flow_keys, timers=timers)
            if row is None:
                continue
            sleep_limit = self.inline_backoff if max_sleep is None else max_sleep
            self._run_sync(self._drive(row, sleep_limit, should_stop), row.run_id)
            return True
        return False

    # async twins for the server: the same generators, another executor

    async def tick_async(self, run_id: str) -> Run:
        return self._to_run(await self._run_async(self._tick(run_id), run_id))

    async def resume_async(self, run_id: str, payload: Any = None, *, by: str = "api") -> Run:
        return self._to_run(await self._run_async(self._resume(run_id, payload, by), run_id))

    async def run_until_blocked_async(self, run_id: str) -> Run:
        return self._to_run(await self._run_async(self._until_blocked(run_id), run_id))

    async def offload(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run a storage-bound call from async code: inline for SQLite (cheaper than a thread hop), in a thread for Postgres."""
        if not self._offload_db:
            return fn(*args, **kwargs)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._db_pool(), lambda: fn(*args, **kwargs))

    def add_listener(self, callback: Callable[[], None]) -> None:
        """Called (from any thread) when a run may have become runnable; drivers use it to wake."""
        self._listeners.append(callback)

    def _notify(self) -> None:
        for callback in self._listeners:
            callback()

    # ------------------------------------------------------------------ step core (generators)

    def _claim(self, run_id: str) -> tuple[RunRow, bool]:
        """``(row, claimed)``; an ended run comes back unclaimed, a held one raises RunBusy."""
        row = self.storage.claim(run_id, self.owner, self.lease_ttl_ms)
        if row is not None:
            return row, True
        row = self.storage.get_run(run_id)
        if row is None:
            raise RunNotFound(f"run {run_id} not found", run_id=run_id)
        if row.status in FINISHED:
            return row, False
        raise RunBusy(f"run {run_id} is being executed by {row.lease_owner}", run_id=run_id)

    @contextlib.contextmanager
    def _holding(self, row: RunRow) -> Any:
        """Track a claimed lease: renewed while held, released if the block ends still holding it."""
        lease = _Lease(row.run_id, row.lease_epoch)
        with self._held_lock:
            self._held[row.run_id] = lease
        self._ensure_renewer()
        try:
            yield lease
        finally:
            with self._held_lock:
                if self._held.get(row.run_id) is lease:
                    del self._held[row.run_id]
            if lease.held:
                with contextlib.suppress(Exception):
                    if lease.executing:
                        # Interrupted inside the handler (KeyboardInterrupt, SystemExit, a
                        # cancelled task): like a crash, the next claimer counts it as lost.
                        self.storage.expire(self.owner, [lease.run_id])
                    else:
                        self.storage.release(lease.run_id, lease.epoch)

    def _tick(self, run_id: str) -> Generator[Any, Any, RunRow]:
        row, claimed = self._claim(run_id)
        if not claimed:
            return row
        with self._holding(row) as lease:
            flow, row = self._take_over(row, lease)
            if row.status == RunStatus.RUNNING and row.wake_at is not None:
                delay = (row.wake_at - now_ms()) / 1000
                if delay > self.inline_backoff:
                    return row  # parked for a long backoff; the lease is released on exit
                if delay > 0:
                    yield _Sleep(delay)
            if row.status in ACTIVE:
                row = yield from self._step(row, flow, lease, hold=False)
        return row

    def _resume(self, run_id: str, payload: Any, by: str) -> Generator[Any, Any, RunRow]:
        try:
            payload_json = dumps_user(payload)
        except (TypeError, ValueError, RecursionError) as exc:
            raise InvalidInput(f"resume payload must be a JSON value: {exc}") from exc
        row = self.storage.claim(run_id, self.owner, self.lease_ttl_ms)
        if row is None:
            current = self.storage.get_run(run_id)
            if current is None:
                raise RunNotFound(f"run {run_id} not found", run_id=run_id)
            if current.status != RunStatus.WAITING:
                raise RunNotWaiting(f"run {run_id} is {current.status}, not WAITING", run_id=run_id)
            raise RunBusy(f"run {run_id} is being executed by {current.lease_owner}", run_id=run_id)
        with self._holding(row) as lease:
            if row.status != RunStatus.WAITING:
                raise RunNotWaiting(f"run {run_id} is {row.status}, not WAITING", run_id=run_id)
            flow = self._flow_of(row)
            row = self._mark_resumed(row, lease, payload_json, by)
            row = yield from self._step(row, flow, lease, hold=False)
        return row

    def _until_blocked(self, run_id: str) -> Generator[Any, Any, RunRow]:
        row, claimed = self._claim(run_id)
        if not claimed:
            return row
        return (yield from self._drive(row, None))

    def _drive(
        self, row: RunRow, max_sleep: float | None, should_stop: Callable[[], bool] | None = None
    ) -> Generator[Any, Any, RunRow]:
        """Step a claimed run until it waits, ends, or parks for longer than ``max_sleep``."""
        with self._holding(row) as lease:
            flow, row = self._take_over(row, lease)
            while row.status == RunStatus.RUNNING:
                if should_stop is not None and should_stop():
                    break  # the lease is released on exit; any process may continue the run
                if row.wake_at is not None:
                    delay = (row.wake_at - now_ms()) / 1000
                    if max_sleep is not None and delay > max_sleep:
                        break
                    if delay > 0:
                        yield _Sleep(delay)
                row = yield from self._step(row, flow, lease, hold=True)
        return row

    def _take_over(self, row: RunRow, lease: _Lease) -> tuple[Flow, RunRow]:
        """What every claim of a run to step starts with: its flow (or FlowNotRegistered),
        the record of a dead previous holder, and a due timer fired (even without drivers)."""
        flow = self._flow_of(row)
        row = self._record_lost_worker(row, flow, lease)
        if row.status == RunStatus.WAITING and row.wake_at is not None and row.wake_at <= now_ms():
            row = self._mark_resumed(row, lease, "null", "timer")
        return flow, row

    def _commit(self, new: RunRow, lease: _Lease, events: list[EventRow], idem: tuple[Any, ...] | None = None) -> RunRow:
        try:
            self.storage.commit_step(new, lease.epoch, events, idem)
        except LeaseLost:
            lease.held = False
            raise
        lease.held = new.lease_owner is not None
        return new

    def _hold_or_release(self, new: RunRow, hold: bool) -> None:
        if hold and new.status == RunStatus.RUNNING:
            new.lease_owner = self.owner
            new.lease_expires_at = now_ms() + self.lease_ttl_ms
        else:
            new.lease_owner = None
            new.lease_expires_at = None

    def _mark_resumed(self, row: RunRow, lease: _Lease, payload_json: str, by: str) -> RunRow:
        """Durably record the resume before running the node: an approval is never lost."""
        now = now_ms()
        new = row.evolve(
            status=RunStatus.RUNNING,
            resume_json=payload_json,
            wait_reason=None,
            wait_until=None,
            wake_at=None,
            last_seq=row.last_seq + 1,
            updated_at=now,
            lease_owner=self.owner,
            lease_expires_at=now + self.lease_ttl_ms,
        )
        payload = '{"by":' + _dumps(by) + ',"payload":' + payload_json + "}"
        event = (row.run_id, new.last_seq, now, EventType.RUN_RESUMED, row.current_node_id, None, payload)
        return self._commit(new, lease, [event])

    def _record_lost_worker(self, row: RunRow, flow: Flow, lease: _Lease) -> RunRow:
        """A claim that found an expired lease: the holder died mid-node; count that attempt."""
        if row.stale_owner is None or row.status != RunStatus.RUNNING or row.current_node_id is None:
            return row
        node = flow.nodes.get(row.current_node_id)
        node_id = row.current_node_id
        attempts = _loads(row.attempts_json)
        attempts[node_id] = attempts.get(node_id, 0) + 1
        now = now_ms()
        error: dict[str, Any] = {
            "code": "WORKER_LOST",
            "message": f"worker {row.stale_owner} stopped while executing node {node_id} (lease expired)",
            "retryable": True,
        }
        new = row.evolve(attempts_json=_dumps(attempts), failures=row.failures + 1, updated_at=now)
        events: list[EventRow] = []

        def event(kind: str, payload: dict[str, Any], at: int) -> None:
            events.append((row.run_id, row.last_seq + len(events) + 1, at, kind, node_id, attempts[node_id], _dumps(payload)))

        # Retried at once: the lease expiry already made it wait.
        _apply_failure(new, node, error, event, now, backoff=False)
        new.last_seq = row.last_seq + len(events)
        self._hold_or_release(new, hold=True)
        log.warning("run %s: %s", row.run_id, error["message"])
        return self._commit(new, lease, events)

    def _step(self, row: RunRow, flow: Flow, lease: _Lease, *, hold: bool) -> Generator[Any, Any, RunRow]:
        """Execute the current node once and commit the outcome. The one place results become state."""
        run_id, node_id = row.run_id, row.current_node_id
        started = now_ms()
        attempts = _loads(row.attempts_json)
        attempt = attempts.get(node_id, 0) + 1
        attempts[node_id] = attempt
        events: list[EventRow] = []
        seq = row.last_seq

        def event(kind: str, payload: dict[str, Any], at: int) -> None:
            nonlocal seq
            seq += 1
            events.append((run_id, seq, at, kind, node_id, attempt, _dumps(payload)))

        node = flow.nodes.get(node_id) if node_id else None
        cached = False
        idem_key: str | None = None
        result: Result
        ctx = Context(
            run_id=run_id,
            flow_id=row.flow_id,
            flow_version=row.flow_version,
            tenant_id=row.tenant_id,
            node_id=node_id,
            input=_loads(row.input_json),
            state=_loads(row.state_json),
            outputs=_loads(row.outputs_json),
            attempt=attempt,
            attempts=dict(attempts),
            started_at=to_datetime(row.created_at),
            services=self.services,
            resume_payload=_loads(row.resume_json),
        )
        event(EventType.NODE_STARTED, {}, started)
        if node is None:
            result = Fail("NODE_NOT_FOUND", f"node {node_id!r} is not in flow {flow.flow_id}@{flow.version}", False)
        elif node.idempotency_key is not None:
            try:
                idem_key = str(node.idempotency_key(ctx))
            except Exception as exc:  # noqa: BLE001 - user code
                result = Fail("IDEMPOTENCY_KEY_ERROR", f"{type(exc).__name__}: {exc}", False)
            else:
                hit = self.storage.idempotent_result(flow.flow_id, node.id, idem_key)
                if hit is not None:
                    cached = True
                    result = Ok(_loads(hit[0]), _loads(hit[1]))
                else:
                    result = yield from _execute(lease, node, ctx)
        else:
            result = yield from _execute(lease, node, ctx)

        now = now_ms()
        new = row.evolve(attempts_json=_dumps(attempts), updated_at=now, wait_reason=None, wait_until=None)
        idem: tuple[Any, ...] | None = None
        output_json = patch_json = None
        if isinstance(result, (Ok, Wait)):
            try:
                wake_at, wait_until = _parse_until(result.until) if isinstance(result, Wait) else (None, None)
            except (TypeError, ValueError, OverflowError) as exc:
                result = Fail("INVALID_RESULT", f"node {node_id} returned an invalid wait: {exc}", False)
        if isinstance(result, (Ok, Wait)):
            try:
                if result.patch is not None and not isinstance(result.patch, dict):
                    raise TypeError(f"patch must be a dict, not {type(result.patch).__name__}")
                output_json = dumps_user(result.output)
                patch_json = None if result.patch is None else dumps_user(result.patch)
            except (TypeError, ValueError, OverflowError, RecursionError) as exc:
                result = Fail("NOT_SERIALIZABLE", f"node {node_id} returned a value that is not JSON: {exc}", False)

        if isinstance(result, (Ok, Wait)):
            state = _loads(row.state_json)
            if result.patch:
                deep_merge(state, _loads(patch_json))
            new.state_json = _dumps(state)
            outputs = _loads(row.outputs_json)
            if isinstance(result, Ok) or result.output is not None:  # a wait may leave no output
                outputs[node_id] = _loads(output_json)
                new.outputs_json = _dumps(outputs)
            new.failures, new.resume_json = 0, None

        if isinstance(result, Ok):
            new.wake_at, new.error_json = None, None
            event(EventType.NODE_FINISHED, {"cached": cached}, now)
            if idem_key is not None and not cached:
                idem = (flow.flow_id, node_id, idem_key, run_id, output_json, patch_json, now)
            try:
                target = _select_edge(flow, node_id, ctx, state, outputs)  # type: ignore[arg-type]
            except _EdgeError as exc:
                error = {"code": exc.code, "message": str(exc), "retryable": False}
                new.status, new.error_json = RunStatus.FAILED, _dumps(error)
                event(EventType.RUN_ABORTED, {"error": error}, now)
            else:
                if target is None:
                    new.status, new.current_node_id = RunStatus.COMPLETED, None
                    event(EventType.RUN_COMPLETED, {}, now)
                else:
                    new.status, new.current_node_id = RunStatus.RUNNING, target
        elif isinstance(result, Wait):
            new.status = RunStatus.WAITING
            new.wait_reason, new.wait_until, new.wake_at = result.reason, wait_until, wake_at
            event(EventType.RUN_WAITING, {"reason": result.reason, "until": wait_until}, now)
        else:
            assert isinstance(result, Fail)
            code = str(result.code or "ERROR")
            retryable = result.retryable if result.retryable is not None else code in RETRYABLE_CODES
            error = {"code": code, "message": str(result.message or ""), "retryable": bool(retryable)}
            new.failures = row.failures + 1
            _apply_failure(new, node, error, event, now, backoff=True)
        new.last_seq = seq
        self._hold_or_release(new, hold)
        return self._commit(new, lease, events, idem)

    # ------------------------------------------------------------------ executors

    def _run_sync(self, gen: Generator[Any, Any, RunRow], run_id: str) -> RunRow:
        """Drive a step generator in this thread."""
        value: Any = None
        try:
            while True:
                done, request = _send(gen, value)
                if done:
                    return self._finished_step(request)
                if isinstance(request, _Sleep):
                    time.sleep(request.seconds)
                    value = None
                else:
                    value = self._execute_sync(request.node, request.ctx)
        except LeaseLost:
            return self._after_lost_lease(run_id)
        finally:
            gen.close()

    async def _run_async(self, gen: Generator[Any, Any, RunRow], run_id: str) -> RunRow:
        """Drive a step generator from an event loop (the HTTP server)."""
        value: Any = None
        loop = asyncio.get_running_loop()
        try:
            while True:
                if self._offload_db:
                    done, request = await loop.run_in_executor(self._db_pool(), _send, gen, value)
                else:
                    done, request = _send(gen, value)
                if done:
                    return self._finished_step(request)
                if isinstance(request, _Sleep):
                    await asyncio.sleep(request.seconds)
                    value = None
                else:
                    value = await self._execute_async(request.node, request.ctx)
        except LeaseLost:
            return self._after_lost_lease(run_id)
        finally:
            gen.close()

    def _finished_step(self, row: RunRow) -> RunRow:
        if row.status == RunStatus.RUNNING and row.lease_owner is None:
            self._notify()  # left runnable: wake the drivers
        return row

    def _after_lost_lease(self, run_id: str) -> RunRow:
        log.warning("run %s: lease lost during a step (cancelled or reclaimed); its result was discarded", run_id)
        current = self.storage.get_run(run_id)
        if current is None:
            raise RunNotFound(f"run {run_id} not found", run_id=run_id)
        return current

    def _execute_sync(self, node: Node, ctx: Context) -> Result:
        timeout = node.timeout_ms / 1000 if node.timeout_ms else None
        try:
            if node.is_async:
                value = self._background_loop_call(node, ctx, timeout)
            elif timeout is not None:
                value = self._call_in_thread(node, ctx, timeout)
            else:
                value = node.handler(ctx)
            if inspect.isawaitable(value):
                value = asyncio.run_coroutine_threadsafe(_awaited(value, timeout), self._background_loop()).result()
            return as_result(value)
        except _NodeTimeout:
            return _timeout_failure(node)
        except Exception as exc:  # noqa: BLE001 - a handler's failure is data
            return failure_from(exc)

    async def _execute_async(self, node: Node, ctx: Context) -> Result:
        timeout = node.timeout_ms / 1000 if node.timeout_ms else None
        try:
            if node.is_async:
                value = await _awaited(node.handler(ctx), timeout)
            else:
                # A sync handler may block; it must not stall the event loop.
                loop = asyncio.get_running_loop()
                value = await _awaited(loop.run_in_executor(self._handler_pool(), node.handler, ctx), timeout)
            if inspect.isawaitable(value):
                value = await _awaited(value, timeout)
            return as_result(value)
        except _NodeTimeout:
            return _timeout_failure(node)
        except Exception as exc:  # noqa: BLE001 - a handler's failure is data
            return failure_from(exc)

    def _call_in_thread(self, node: Node, ctx: Context, timeout: float) -> Any:
        """A sync handler with a timeout: run it in a thread we can walk away from.

        Python cannot kill a thread; on timeout the handler keeps running in the
        background and its result is ignored.
        """
        box: dict[str, Any] = {}
        done = threading.Event()

        def target() -> None:
            try:
                box["value"] = node.handler(ctx)
            except BaseException as exc:  # noqa: BLE001 - re-raised in the caller
                box["error"] = exc
            finally:
                done.set()

        threading.Thread(target=target, name=f"flowrt-node-{node.id}", daemon=True).start()
        if not done.wait(timeout):
            raise _NodeTimeout
        if "error" in box:
            raise box["error"]
        return box["value"]

    def _background_loop(self) -> asyncio.AbstractEventLoop:
        """An event loop in a thread of its own, for async handlers called from sync code."""
        with self._loop_lock:
            if self._loop is None or self._loop.is_closed():
                loop = asyncio.new_event_loop()
                self._loop_thread = threading.Thread(target=loop.run_forever, name="flowrt-async-nodes", daemon=True)
                self._loop_thread.start()
                self._loop = loop
            return self._loop

    def _background_loop_call(self, node: Node, ctx: Context, timeout: float | None) -> Any:
        coro = _awaited(node.handler(ctx), timeout)
        return asyncio.run_coroutine_threadsafe(coro, self._background_loop()).result()

    def _handler_pool(self) -> concurrent.futures.ThreadPoolExecutor:
        if self._handler_threads is None:
            self._handler_threads = concurrent.futures.ThreadPoolExecutor(64, thread_name_prefix="flowrt-handler")
        return self._handler_threads

    def _db_pool(self) -> concurrent.futures.ThreadPoolExecutor:
        if self._db_threads is None:
            self._db_threads = concurrent.futures.ThreadPoolExecutor(self._pool_size, thread_name_prefix="flowrt-db")
        return self._db_threads

    # ------------------------------------------------------------------ leases

    def _ensure_renewer(self) -> None:
        if self._renewer is not None and self._renewer.is_alive():
            return
        with self._held_lock:
            if self._renewer is not None and self._renewer.is_alive():
                return
            self._renewer = threading.Thread(target=self._renew_loop, name="flowrt-lease-renewer", daemon=True)
            self._renewer.start()

    def _renew_loop(self) -> None:
        interval = max(self.lease_ttl_ms / 3000, 0.05)
        while not self._stopping.wait(interval):
            with self._held_lock:
                run_ids = list(self._held)
            if run_ids:
                try:
                    self.storage.renew(self.owner, run_ids, self.lease_ttl_ms)
                except Exception as exc:  # noqa: BLE001 - retried next interval
                    log.warning("lease renewal failed: %s", exc)


# ---------------------------------------------------------------------- helpers


def _execute(lease: _Lease, node: Node, ctx: Context) -> Generator[Any, Any, Result]:
    """Ask the executor to run the handler, marking the lease as mid-execution meanwhile."""
    lease.executing = True
    result: Result = yield _Execute(node, ctx)
    lease.executing = False
    return result


def _send(gen: Generator[Any, Any, RunRow], value: Any) -> tuple[bool, Any]:
    """``gen.send`` as a plain result, so it can cross a thread pool (StopIteration cannot)."""
    try:
        return False, gen.send(value)
    except StopIteration as stop:
        return True, stop.value


async def _awaited(awaitable: Any, timeout: float | None) -> Any:
    """Await with the node's timeout; only *our* deadline becomes a TIMEOUT failure, a
    TimeoutError the handler raises itself stays an ordinary exception."""
    if timeout is None:
        return await awaitable
    deadline = asyncio.timeout(timeout)
    try:
        async with deadline:
            return await awaitable
    except TimeoutError:
        if deadline.expired():
            raise _NodeTimeout from None
        raise


def _timeout_failure(node: Node) -> Fail:
    return Fail("TIMEOUT", f"node {node.id} exceeded its timeout of {node.timeout_ms} ms", True)


def _apply_failure(
    new: RunRow,
    node: Node | None,
    error: dict[str, Any],
    event: Callable[[str, dict[str, Any], int], None],
    now: int,
    *,
    backoff: bool,
) -> None:
    """A failed attempt (``new.failures`` already counts it): retry, parked for the backoff,
    while the error is retryable and attempts remain; otherwise the run fails."""
    max_attempts = node.retry.max_attempts if node is not None else 1
    if error["retryable"] and node is not None and new.failures < max_attempts:
        delay = node.retry.delay_ms(new.failures) if backoff else 0
        new.status = RunStatus.RUNNING
        new.wake_at = now + delay if delay > 0 else None
        event(EventType.NODE_FAILED, {"error": error, "retryInMs": delay}, now)
    else:
        new.status, new.error_json, new.wake_at = RunStatus.FAILED, _dumps(error), None
        event(EventType.NODE_FAILED, {"error": error}, now)
        event(EventType.RUN_ABORTED, {"error": error}, now)


class _EdgeError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def _select_edge(
    flow: Flow, node_id: str, ctx: Context, state: dict[str, Any], outputs: dict[str, Any]
) -> str | None:
    """The single highest-priority edge whose condition holds; None completes the run."""
    best = None
    view: Context | None = None
    for edge in flow.outgoing(node_id):
        if best is not None and edge.priority < best.priority:
            break
        if view is None and edge.when is not None:
            view = ctx._with(state, outputs)
        try:
            matches = edge.when is None or bool(edge.when(view))
        except Exception as exc:  # noqa: BLE001 - user code
            raise _EdgeError(
                "EDGE_CONDITION_ERROR",
                f"condition of edge {edge.source}->{edge.target} raised {type(exc).__name__}: {exc}",
            ) from exc
        if matches:
            if best is not None:
                raise _EdgeError(
                    "AMBIGUOUS_EDGE",
                    f"edges {best.source}->{best.target} and {edge.source}->{edge.target} both match at priority {edge.priority}",
                )
            best = edge
    return None if best is None else best.target


def _parse_until(until: Any) -> tuple[int | None, str | None]:
    """``(wake_at_ms, until_as_text)``: an instant becomes a durable timer; other text is a label."""
    if until is None:
        return None, None
    if isinstance(until, timedelta):
        moment = datetime.now(UTC) + until
    elif isinstance(until, datetime):
        moment = until if until.tzinfo else until.replace(tzinfo=UTC)
    elif isinstance(until, str):
        try:
            moment = datetime.fromisoformat(until.replace("Z", "+00:00"))
        except ValueError:
            return None, until  # e.g. the reference's until: "manual"
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
    else:
        raise TypeError(f"until must be an ISO-8601 string, datetime or timedelta, not {type(until).__name__}")
    ms = int(moment.timestamp() * 1000)
    text = datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return ms, text
