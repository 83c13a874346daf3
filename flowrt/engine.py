"""The engine: start, step, resume and cancel runs, durably, one transaction per step.

This module is the public face; the work is done by parts with one job each:

- :mod:`flowrt.starts`: what a start writes, its arguments checked;
- :mod:`flowrt.steps`: the step core, the one place results become state (claims,
  commits, retries, interruptions), written once as generators;
- :mod:`flowrt.execution`: calling handlers and containing whatever they do;
- :mod:`flowrt.leases`: the leases this process holds, renewed, parked and handed back;
- :mod:`flowrt.runner`: performing the step core's requests;
- :mod:`flowrt.writer`: group commit, the steps of many runs in one transaction;
- :mod:`flowrt.storage`: the database.

The engine hands the step core's generators to its :class:`~flowrt.runner.Runner`, which
performs their requests (run a handler, commit, sleep) in the calling thread for the Python
API and the drivers, or from an event loop for the HTTP server. Nothing else differs
between the two.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import socket
import threading
import time
from datetime import datetime, timedelta
from typing import Any, Callable, Generator, Iterable, Literal

from .clock import SYSTEM_CLOCK, Clock
from .context import Context
from .definitions import Flow, as_flow, version_key
from .errors import (
    DefinitionError,
    FlowNotFound,
    FlowNotRegistered,
    IdempotencyConflict,
    InvalidInput,
    RunFinished,
    RunNotFound,
)
from .execution import Executor
from .leases import MAX_LEASE_TTL, Leases, end_lapsed_leases_of_an_earlier_engine
from .liveness import LivenessLock, end_leases_if_gone, hold_liveness
from .runs import Event, EventType, Run, RunStatus, to_datetime
from .repair import Repairs
from .retention import Pruner, PruneReport, parse_age
from .runner import Runner
from .starts import new_run
from .steps import Commit, Query, Step, StepCore
from .storage import DEFAULT_URL, LeaseLost, RunRow, Storage
from .values import DEFAULT_MAX_VALUE_BYTES, dumps, loads

__all__ = ["Context", "Engine"]

log = logging.getLogger("flowrt.engine")

_CURSOR = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")  # a run id


class Engine:
    """Runs flows durably on one database. Thread-safe; one per process is typical.

    ``max_value_bytes`` bounds each stored value (a run's input, a step's output or patch,
    a resume payload); ``max_abandoned_threads`` bounds the threads of timed-out sync
    handlers that are still running (see :mod:`flowrt.execution`); ``clock`` is for tests.
    """

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
        max_value_bytes: int = DEFAULT_MAX_VALUE_BYTES,
        max_abandoned_threads: int = 64,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        if not 0 < lease_ttl <= MAX_LEASE_TTL:  # (NaN too); checked before a database is opened
            raise InvalidInput(f"lease_ttl must be above 0 and at most {MAX_LEASE_TTL:g} seconds, not {lease_ttl!r}")
        self.database_url = database_url or os.environ.get("DATABASE_URL") or DEFAULT_URL
        self.clock = clock
        self.storage = storage or Storage(self.database_url, pool_size=pool_size, clock=clock)
        self.services: dict[str, Any] = dict(services or {})
        self.lease_ttl_ms = int(lease_ttl * 1000)
        self.inline_backoff = inline_backoff
        self.max_value_bytes = max_value_bytes
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}:{os.urandom(3).hex()}"
        self.owner_given = owner is not None  # then an earlier engine may have had this id
        self.liveness: LivenessLock | None = None
        """SQLite: this engine's liveness lock, which tells other processes whether it lives."""
        self._flows: dict[tuple[str, str], Flow] = {}
        self._flow_keys: list[str] = []  # "flow_id@version": what this process's drivers may claim
        self._latest: dict[str, Flow] = {}
        self._stopping = threading.Event()
        self.leases = Leases(self.storage, self.owner, self.lease_ttl_ms, on_handed_back=self._notify)
        self.executor = Executor(max_abandoned=max_abandoned_threads)
        self._steps = StepCore(
            self.storage,
            self.leases,
            flow_of=self._flow_of,
            services=self.services,
            clock=clock,
            inline_backoff=inline_backoff,
            max_value_bytes=max_value_bytes,
            stopping=self._stopping,
            end_if_gone=(lambda holder: end_leases_if_gone(self.storage, self.liveness, holder))
            if self.storage.kind == "sqlite"
            else None,
        )
        self._repairs = Repairs(self._steps)
        self.pruner = Pruner(self.storage)
        self.runner = Runner(self.storage, self.leases, self.executor, clock, pool_size=pool_size)
        self._backlog = False  # the last claim ahead found a run: drivers go on claiming ahead
        self._listeners: list[Callable[[], None]] = []
        self.register(*flows)
        try:
            self.liveness = hold_liveness(self.storage, self.owner)  # an init that fails leaves no lock behind
            if owner is not None:  # (after the lock: on SQLite no other live engine has this id)
                end_lapsed_leases_of_an_earlier_engine(self.leases)
        except BaseException:
            if self.liveness is not None:
                self.liveness.release()
            if storage is None:  # (an owner id in use: the storage opened above is closed again)
                self.storage.close()
            raise

    # ------------------------------------------------------------------ lifecycle

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop background threads; the database stays as it is.

        A lease still held here belongs to a step whose handler is still running (a
        finished step has released its lease). Its lease is expired rather than
        released: the next claimer, here after a restart or in another process, then
        recovers the interrupted attempt at once (``WORKER_LOST``, within the node's
        recovery budget) instead of silently running it again.
        """
        self._stopping.set()
        abandoned = self.leases.abandon_all()
        if abandoned:
            log.warning(
                "closing with %d step(s) still running (%s); they will be recovered at the next start",
                len(abandoned), ", ".join(abandoned[:5]) + (" ..." if len(abandoned) > 5 else ""),
            )  # fmt: skip
        try:
            self.executor.close()
            self.runner.close()
            self.storage.close()
        finally:
            if self.liveness is not None:
                self.liveness.release()

    def steps_in_flight(self) -> list[tuple[str, str | None, float]]:
        """``(run_id, node_id, seconds running)`` of every handler running right now."""
        now = time.monotonic()
        return [(lease.run_id, lease.node_id, now - lease.executing_since) for lease in self.leases.in_flight()]

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
            if latest is None or version_key(flow.version) > version_key(latest.version):
                self._latest[flow.flow_id] = flow
        return self

    @property
    def flows(self) -> list[Flow]:
        return sorted(self._flows.values(), key=lambda f: (f.flow_id, version_key(f.version)))

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

    async def get_async(self, run_id: str) -> Run | None:
        """:meth:`get` from an event loop (on Postgres through the loop's own connections)."""
        row = await self.get_stored_async(run_id)
        return None if row is None else self._to_run(row)

    async def get_stored_async(self, run_id: str) -> RunRow | None:
        """:meth:`get_async`'s run as stored, its JSON undecoded: what the HTTP server answers
        a GET with (:meth:`Run.stored_to_json`)."""
        row: RunRow | None = await self.runner.query_async(self.storage.get_run, run_id)
        return row

    def timeline(self, run_id: str, after: int = 0, limit: int | None = None) -> list[Event]:
        rows = self.storage.events(run_id, after, limit)
        if not rows and self.storage.get_run(run_id) is None:
            raise RunNotFound(f"run {run_id} not found", run_id=run_id)
        return [
            Event(r[0], r[1], to_datetime(r[2]), r[3], r[4], r[5], loads(r[6]))  # type: ignore[arg-type]
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

    def _to_run(self, row: RunRow, replayed: bool = False) -> Run:
        return Run(
            run_id=row.run_id,
            flow_id=row.flow_id,
            flow_version=row.flow_version,
            tenant_id=row.tenant_id,
            status=RunStatus(row.status),
            current_node_id=row.current_node_id,
            input=loads(row.input_json),
            state=loads(row.state_json),
            outputs=loads(row.outputs_json),
            attempts=loads(row.attempts_json),
            error=loads(row.error_json),
            wait_reason=row.wait_reason,
            wait_until=row.wait_until,
            wake_at=to_datetime(row.wake_at),
            created_at=to_datetime(row.created_at),  # type: ignore[arg-type]
            updated_at=to_datetime(row.updated_at),  # type: ignore[arg-type]
            replayed=replayed,
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
        idempotency_key: str | None = None,
        keep_lease: bool | Literal["drivers"] = False,
    ) -> Run:
        """Create a run at the flow's entry node, RUNNING. Nothing executes yet.

        With ``idempotency_key``, starting again with the same key returns the run the
        first start made (whatever it has done since; its ``replayed`` is True) instead of a
        second one; the same key with a different flow, version, input, tenant or initial
        state raises :class:`IdempotencyConflict`. The key is stored in the run's own
        transaction.

        ``keep_lease``: the run is created holding this process's lease, parked, so the
        :meth:`tick` or :meth:`run_until_blocked` of this caller that follows needs no claim;
        ``"drivers"``: parked for this process's drivers, which are woken (what the HTTP
        server does with a start its drivers will move). Other processes wait for it until
        it is handed back, within a second if nothing here continues the run.
        """
        started: tuple[RunRow, bool] = self.runner.drive_sync(
            self._start(flow_id, version, input, tenant_id, initial_state, idempotency_key, keep_lease)
        )
        return self._to_run(*started)

    async def start_async(
        self,
        flow_id: str,
        version: str | None = None,
        input: Any = None,  # noqa: A002
        *,
        tenant_id: str | None = None,
        initial_state: dict[str, Any] | None = None,
        idempotency_key: str | None = None,
        keep_lease: bool | Literal["drivers"] = False,
    ) -> tuple[Run, bool]:
        """:meth:`start` from an event loop; ``(run, replayed)``, replayed when an
        idempotency key found an earlier start."""
        row, replayed = await self.start_stored_async(
            flow_id, version, input, tenant_id=tenant_id, initial_state=initial_state,
            idempotency_key=idempotency_key, keep_lease=keep_lease,
        )  # fmt: skip
        return self._to_run(row, replayed), replayed

    async def start_stored_async(
        self,
        flow_id: str,
        version: str | None = None,
        input: Any = None,  # noqa: A002
        *,
        tenant_id: str | None = None,
        initial_state: dict[str, Any] | None = None,
        idempotency_key: str | None = None,
        keep_lease: bool | Literal["drivers"] = False,
    ) -> tuple[RunRow, bool]:
        """:meth:`start_async`'s run as stored, its JSON undecoded: what the HTTP server
        needs to answer a start with ``{runId, status}`` (decoding the rest cost ~3% of its
        CPU a start). Read it, do not change it: with ``keep_lease`` it is the row the next
        step here starts from."""
        gen = self._start(flow_id, version, input, tenant_id, initial_state, idempotency_key, keep_lease)
        result: tuple[RunRow, bool] = await self.runner.drive_async(gen)
        return result

    def _start(
        self,
        flow_id: str,
        version: str | None,
        input: Any,  # noqa: A002
        tenant_id: str | None,
        initial_state: dict[str, Any] | None,
        idempotency_key: str | None,
        keep_lease: bool | Literal["drivers"],
    ) -> Generator[Any, Any, tuple[RunRow, bool]]:
        """``(run as stored, replayed)``: replayed is True when an idempotency key found an earlier start."""
        flow = self.flow(flow_id, version)
        lease_owner = self.owner if keep_lease else None
        row, events, start_key = new_run(
            flow, input, tenant_id, initial_state, idempotency_key,
            clock=self.clock, lease_owner=lease_owner, lease_ttl_ms=self.lease_ttl_ms,
            max_value_bytes=self.max_value_bytes,
        )  # fmt: skip
        write = self.storage.run_insert(row, events, start_key)
        try:
            existing = yield Commit(write)
        except GeneratorExit:
            if keep_lease:  # cut off once its commit was done, landed or not: the park hands it back
                self.leases.park_new(row.run_id, row.lease_epoch)
            raise
        failed = isinstance(existing, BaseException)
        if keep_lease and (existing is None or failed):
            # Inserted holding our lease -- or perhaps, if the commit failed: the park hands it back.
            landed = existing is None
            self.leases.park_new(
                row.run_id, row.lease_epoch, for_drivers=keep_lease == "drivers",
                row=row if landed else None, mark=getattr(write, "mark", None) if landed else None,
            )  # fmt: skip
        if failed:
            raise existing
        if existing is not None:
            assert start_key is not None
            earlier = yield Query(self.storage.get_run, (existing[0],))
            if existing[1] != start_key[1] or earlier is None:
                what = f"run {existing[0]}" + (f" of flow {earlier.flow_id}@{earlier.flow_version}" if earlier else "")
                raise IdempotencyConflict(
                    f"idempotency key {idempotency_key!r} was already used to start {what} with a different "
                    "flow, version, input, tenant or initial state; use a new key for a new run",
                    run_id=existing[0],
                )
            return earlier, True
        if keep_lease != True:  # noqa: E712 - False, or "drivers": wake them (a caller's own lease: don't)
            self._notify()
        return row, False

    def tick(self, run_id: str) -> Run:
        """One step: execute the current node once (a WAITING run's node is polled)."""
        return self._to_run(self._run_sync(self._steps.tick(run_id), run_id))

    def resume(self, run_id: str, payload: Any = None, *, by: str = "api") -> Run:
        """Wake a WAITING run: record the payload durably, then execute the waiting node."""
        return self._to_run(self._run_sync(self._steps.resume(run_id, payload, by), run_id))

    def run_until_blocked(self, run_id: str, *, should_stop: Callable[[], bool] | None = None) -> Run:
        """Step a run until it waits or ends, sleeping through retry backoffs.

        ``should_stop`` is asked between steps (the CLI's first Ctrl-C): the step in hand
        commits, the run is handed back RUNNING, and anyone may continue it.
        """
        return self._to_run(self._run_sync(self._steps.until_blocked(run_id, should_stop), run_id))

    def cancel(self, run_id: str, reason: str | None = None, *, by: str = "api") -> Run:
        """End a RUNNING or WAITING run as CANCELLED; a step in flight is discarded."""
        if reason is not None and not isinstance(reason, str):
            raise InvalidInput("reason must be a string")
        row = self.storage.cancel(
            run_id, reason, (EventType.RUN_CANCELLED, None, None, dumps({"reason": reason, "by": by}))
        )
        if row is None:
            if self.storage.get_run(run_id) is None:
                raise RunNotFound(f"run {run_id} not found", run_id=run_id)
            raise RunFinished(f"run {run_id} has already ended", run_id=run_id)
        self.leases.forget(run_id)
        return self._to_run(row)

    def retry(self, run_id: str, *, by: str = "api") -> Run:
        """A FAILED or CANCELLED run becomes RUNNING again at the node where it stopped, its
        state and outputs as they were and that node's failure count reset (``RUN_RETRIED``).
        Nothing executes yet: drivers, ``tick`` or ``run_until_blocked`` continue it."""
        return self._to_run(self._run_sync(self._repairs.retry(run_id, by), run_id))

    def rewind(self, run_id: str, to_node: str, *, by: str = "api") -> Run:
        """Continue a WAITING or ended run from ``to_node``, with the state and outputs it had
        just before that node last started; outputs of later nodes are removed, every
        event stays (``RUN_REWOUND``). Nothing executes yet, as with :meth:`retry`."""
        return self._to_run(self._run_sync(self._repairs.rewind(run_id, to_node, by), run_id))

    def prune(
        self,
        older_than: timedelta | float | str,
        statuses: list[str] | None = None,
        *,
        dry_run: bool = False,
        vacuum: bool = False,
        progress: Callable[[int, int], None] | None = None,
        max_seconds: float | None = None,
    ) -> PruneReport:
        """Delete finished runs that ended more than ``older_than`` ago (a timedelta, seconds,
        or ``"30d"``), with their events, idempotency records and start keys; RUNNING and
        WAITING runs are never touched. ``max_seconds``: see :meth:`flowrt.retention.Pruner.prune`."""
        if isinstance(older_than, timedelta):
            seconds = older_than.total_seconds()
        elif isinstance(older_than, (int, float)) and not isinstance(older_than, bool):
            seconds = float(older_than)
        else:
            seconds = parse_age(str(older_than), "older_than")
        if not seconds > 0:
            raise InvalidInput("older_than must be longer than zero")
        return self.pruner.prune(seconds, statuses, dry_run=dry_run, vacuum=vacuum, progress=progress, max_seconds=max_seconds)

    def drive_next(
        self, *, max_sleep: float | None = None, should_stop: Callable[[], bool] | None = None
    ) -> bool:
        """Claim the oldest runnable run (or due timer) and drive it; False when there is none.

        ``should_stop`` is asked between steps: a shutting-down driver hands the run back
        after the step in hand commits, instead of finishing the whole run.
        """
        return self.drive_next_run(max_sleep=max_sleep, should_stop=should_stop) is not None

    def drive_next_run(
        self, *, max_sleep: float | None = None, should_stop: Callable[[], bool] | None = None
    ) -> str | None:
        """:meth:`drive_next`, answering which run it drove (None: there was none), so a
        recovery counts runs, not drives: a run handed back in a backoff is driven again."""
        sleep_limit = self.inline_backoff if max_sleep is None else max_sleep
        row: RunRow | None = self.runner.drive_sync(self._steps.claim_parked())  # a lease parked here: no claim
        backlog = self._backlog
        for timers in (False, True):
            if row is None:
                row = self.storage.claim_next(self.owner, self.lease_ttl_ms, self._flow_keys, timers=timers)
                backlog = row is not None
            if row is not None:
                if not timers and backlog:  # runs were waiting in the database: likely more
                    self._claim_ahead()
                self._run_sync(self._steps.drive(row, sleep_limit, should_stop), row.run_id)
                return row.run_id
        return None

    def _claim_ahead(self) -> None:
        """Claim the next runnable run inside this run's first commit, and park it for the
        next driver here: in steady state a driver's claims cost no transaction of their own."""
        write = self.storage.claim_next_write(self.owner, self.lease_ttl_ms, self._flow_keys)

        def park(row: RunRow | None, error: BaseException | None) -> None:
            self._backlog = row is not None
            if row is not None and error is None:  # released if closing
                mark = getattr(write, "mark", None)
                self.leases.park_new(row.run_id, row.lease_epoch, for_drivers=True, row=row, mark=mark)
                self._notify()  # an idle driver takes it now, not after this run (a long step, say)

        self.storage.writer.enqueue(write, park)

    # the server's entry points: the same generators, another executor

    async def tick_async(self, run_id: str) -> Run:
        return self._to_run(await self.tick_stored_async(run_id))

    async def tick_stored_async(self, run_id: str) -> RunRow:
        """:meth:`tick_async`'s run as stored, its JSON undecoded: what the HTTP server
        answers a tick with (:meth:`Run.stored_to_json`). Read it, do not change it: a
        parked run's next step here starts from it."""
        return await self._run_async(self._steps.tick(run_id), run_id)

    async def resume_async(self, run_id: str, payload: Any = None, *, by: str = "api") -> Run:
        return self._to_run(await self._run_async(self._steps.resume(run_id, payload, by), run_id))

    async def retry_async(self, run_id: str, *, by: str = "api") -> Run:
        return self._to_run(await self._run_async(self._repairs.retry(run_id, by), run_id))

    async def rewind_async(self, run_id: str, to_node: str, *, by: str = "api") -> Run:
        return self._to_run(await self._run_async(self._repairs.rewind(run_id, to_node, by), run_id))

    async def run_until_blocked_async(
        self, run_id: str, *, should_stop: Callable[[], bool] | None = None, max_sleep: float | None = None
    ) -> Run:
        """:meth:`run_until_blocked` from an event loop; ``max_sleep``: hand the run back
        (RUNNING) rather than sleep through a backoff longer than this (seconds)."""
        gen = self._steps.until_blocked(run_id, should_stop, max_sleep)
        return self._to_run(await self._run_async(gen, run_id))

    async def offload(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run a storage-bound call from async code: inline for SQLite (cheaper than a thread hop), in a thread for Postgres."""
        if not self.runner.offload_db:
            return fn(*args, **kwargs)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.runner.db_pool(), lambda: fn(*args, **kwargs))

    def add_listener(self, callback: Callable[[], None]) -> None:
        """Called (from any thread) when a run may have become runnable; drivers use it to wake."""
        self._listeners.append(callback)

    def remove_listener(self, callback: Callable[[], None]) -> None:
        with contextlib.suppress(ValueError):
            self._listeners.remove(callback)

    def wake_drivers(self) -> None:
        """Tell this process's drivers a run may be theirs to continue (one parked here, say)."""
        self._notify()

    def _notify(self) -> None:
        for callback in tuple(self._listeners):  # a recovery may remove its own meanwhile
            callback()

    # ------------------------------------------------------------------ performing the step core's requests

    def _run_sync(self, gen: Step, run_id: str) -> RunRow:
        """Drive a step generator in this thread."""
        try:
            return self._finished_step(self.runner.drive_sync(gen))
        except LeaseLost:
            return self._after_lost_lease(run_id)

    async def _run_async(self, gen: Step, run_id: str) -> RunRow:
        """Drive a step generator from an event loop (the HTTP server)."""
        try:
            return self._finished_step(await self.runner.drive_async(gen))
        except LeaseLost:
            lost: RunRow = await self.offload(self._after_lost_lease, run_id)
            return lost

    def _finished_step(self, row: RunRow) -> RunRow:
        if row.status == RunStatus.RUNNING and not self.leases.is_parked(row.run_id):
            self._notify()  # left runnable: wake the drivers (a parked lease is its caller's next step)
        return row

    def _after_lost_lease(self, run_id: str) -> RunRow:
        log.warning("run %s: lease lost during a step (cancelled or reclaimed); its result was discarded", run_id)
        current = self.storage.get_run(run_id)
        if current is None:
            raise RunNotFound(f"run {run_id} not found", run_id=run_id)
        return current
