"""The step core: the one place a handler's result becomes a run's state.

A step is: claim the run's lease (one short write), run the node's handler with no
transaction open, then commit state, outputs, attempts, status, events and the
idempotency record in one transaction fenced by the lease epoch, so a step whose lease
moved on (cancelled, or reclaimed after a crash) writes nothing.

The logic is written once, as generators that *yield* the work they need done: :class:`Execute`
(run a handler), :class:`Commit` (write a step: the engine hands it to the group writer,
:mod:`flowrt.writer`, which commits the steps of many runs in one transaction),
:class:`Query` (any other database call: a claim, a read) and :class:`Sleep` (a short
backoff, or a pause before committing again while the database is away). The engine
performs those requests in the calling thread or on an event loop (:mod:`flowrt.runner`);
nothing else differs between the two.

A tick keeps the run's lease at its commit when the run goes on (RUNNING), and parks it in
this process (:mod:`flowrt.leases`): the next tick or driver here continues from it with no
claim of its own, so a step costs one write transaction. A parked lease nobody continues is
handed back within a second.

Two kinds of trouble are not the node's failure and never consume ``max_attempts``:

- an *interruption*: the holder of the lease stopped mid-node (killed, shut down past its
  grace, Ctrl-C). The next claimer records ``NODE_FAILED {code: WORKER_LOST}`` and runs the
  node again, within the node's separate recovery budget (``Retry.max_recoveries``);
- the database going away at commit time: the step keeps its result and commits it when
  the database is back (see :meth:`StepCore.commit`).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Generator

from .clock import Clock
from .context import Context
from .definitions import Fail, Flow, Node, Ok, Result, Wait
from .database import DUPLICATE
from .errors import InvalidInput, PayloadTooLarge, RunNotFound, RunNotWaiting, StorageUnavailable
from .execution import is_interrupt
from .leases import Lease, Leases, Parked, run_busy
from .routing import EdgeError, parse_until, select_edge
from .runs import ACTIVE, FINISHED, EventType, RunStatus, to_datetime
from .schema import event_fields
from .storage import DuplicateStep, EventRow, LeaseLost, RunRow, Storage
from .values import deep_merge, dumps, dumps_user, loads, too_large
from .writer import Apply

log = logging.getLogger("flowrt.engine")

RETRYABLE_CODES = frozenset({"TIMEOUT", "NETWORK_ERROR", "RATE_LIMIT"})
COMMIT_RETRY_MAX_DELAY = 1.0
"""Longest pause between two tries of a commit while the database is away (seconds)."""

Step = Generator[Any, Any, RunRow]


@dataclass(slots=True)
class Execute:
    """A request from the step core: run this node's handler and send back its Result."""

    node: Node
    ctx: Context


@dataclass(slots=True)
class Commit:
    """A request from the step core: commit this write and send back its outcome (the
    write's return value, or the exception it failed with)."""

    apply: Apply


@dataclass(slots=True)
class Query:
    """A request from the step core: make this storage call (``call(*args)``) and send back
    its value, or raise its error at the ``yield``. Where the call runs is the runner's
    choice: in the calling thread, on the event loop, or in a database thread."""

    call: Callable[..., Any]
    args: tuple[Any, ...]


@dataclass(slots=True)
class Sleep:
    seconds: float


class StepCore:
    """Claims, steps and commits runs; one per engine."""

    def __init__(
        self,
        storage: Storage,
        leases: Leases,
        *,
        flow_of: Callable[[RunRow], Flow],
        services: dict[str, Any],
        clock: Clock,
        inline_backoff: float,
        max_value_bytes: int,
        stopping: threading.Event,
        end_if_gone: Callable[[str], bool | None] | None = None,
    ) -> None:
        self.storage = storage
        self.end_if_gone = end_if_gone
        """SQLite: ends the leases of a holder provably gone (:mod:`flowrt.liveness`); True if it was,
        False if it provably lives, None if nothing says (no lock file)."""
        self.leases = leases
        self.owner = leases.owner
        self.flow_of = flow_of
        self.services = services
        self.clock = clock
        self.inline_backoff = inline_backoff
        self.max_value_bytes = max_value_bytes
        self.stopping = stopping

    # ------------------------------------------------------------------ entry points

    def tick(self, run_id: str) -> Step:
        yield from self.wait_for_hand_back(run_id)
        row, claimed = yield from self._claim(run_id)
        if not claimed:
            return row
        with self.leases.hold(row) as lease:
            flow, row = yield from self._take_over(row, lease)
            if row.status == RunStatus.RUNNING and row.wake_at is not None:
                delay = (row.wake_at - self.clock.now_ms()) / 1000
                if delay > self.inline_backoff:
                    return row  # parked for a long backoff; the lease is released on exit
                if delay > 0:
                    yield Sleep(delay)
            if row.status in ACTIVE:
                row = yield from self._step(row, flow, lease, hold=True)
                lease.park = row.wake_at is None  # going on now: kept for the next tick here
        return row

    def resume(self, run_id: str, payload: Any, by: str) -> Step:
        try:
            payload_json = dumps_user(payload)
        except (TypeError, ValueError) as exc:
            raise InvalidInput(f"resume payload must be a JSON value: {exc}") from exc
        if too_large(payload_json, self.max_value_bytes):
            raise PayloadTooLarge(
                f"resume payload is {len(payload_json.encode())} bytes, over the limit of {self.max_value_bytes} "
                "(Engine(max_value_bytes=...), flowrt serve --max-value-bytes)"
            )
        yield from self.wait_for_hand_back(run_id)
        row = yield Query(self.storage.claim, (run_id, self.owner, self.leases.ttl_ms))
        if row is None:
            current = yield Query(self.storage.get_run, (run_id,))
            if current is None:
                raise RunNotFound(f"run {run_id} not found", run_id=run_id)
            if current.status != RunStatus.WAITING:
                raise RunNotWaiting(f"run {run_id} is {current.status}, not WAITING", run_id=run_id)
            raise run_busy(current, self.clock.now_ms())
        with self.leases.hold(row) as lease:
            if row.status != RunStatus.WAITING:
                raise RunNotWaiting(f"run {run_id} is {row.status}, not WAITING", run_id=run_id)
            flow = self.flow_of(row)
            row = yield from self._mark_resumed(row, lease, payload_json, by)
            row = yield from self._step(row, flow, lease, hold=True)
            lease.park = row.wake_at is None
        return row

    def until_blocked(
        self, run_id: str, should_stop: Callable[[], bool] | None = None, max_sleep: float | None = None
    ) -> Step:
        yield from self.wait_for_hand_back(run_id)
        row, claimed = yield from self._claim(run_id)
        if not claimed:
            return row
        return (yield from self.drive(row, max_sleep, should_stop))

    def drive(self, row: RunRow, max_sleep: float | None, should_stop: Callable[[], bool] | None = None) -> Step:
        """Step a claimed run until it waits, ends, or parks for longer than ``max_sleep``."""
        with self.leases.hold(row) as lease:
            flow, row = yield from self._take_over(row, lease)
            while row.status == RunStatus.RUNNING:
                if should_stop is not None and should_stop():
                    break  # the lease is released on exit; any process may continue the run
                if row.wake_at is not None:
                    delay = (row.wake_at - self.clock.now_ms()) / 1000
                    if max_sleep is not None and delay > max_sleep:
                        break
                    if delay > 0:
                        yield Sleep(delay)
                        if should_stop is not None and should_stop():
                            break  # asked to stop while it slept: do not start the node now
                row = yield from self._step(row, flow, lease, hold=True)
        return row

    # ------------------------------------------------------------------ claims and commits

    def wait_for_hand_back(self, run_id: str) -> Generator[Any, Any, None]:
        """Wait, as a step waits (``Sleep``: an event loop goes on serving), while this run's
        lease is being handed back (a parked one nobody continued, or a release written from a
        database thread); then it is claimed afresh."""
        while self.leases.returning(run_id):
            yield Sleep(0.005)

    def _claim(self, run_id: str, retried: bool = False) -> Generator[Query, Any, tuple[RunRow, bool]]:
        """``(row, claimed)``; an ended run comes back unclaimed, a held one raises RunBusy.

        A lease parked here by the run's previous step needs no claim (see :meth:`_still_parked`)."""
        parked = self.leases.unpark(run_id)
        if parked is not None:
            row = yield from self._still_parked(parked, for_drivers=False)
            if row is not None:
                return row, True
        row = yield Query(self.storage.claim, (run_id, self.owner, self.leases.ttl_ms))
        if row is not None:
            return row, True
        row = yield Query(self.storage.get_run, (run_id,))
        if row is None:
            raise RunNotFound(f"run {run_id} not found", run_id=run_id)
        if row.status in FINISHED:
            return row, False
        end_if_gone = self.end_if_gone if not retried and row.lease_owner not in (None, self.owner) else None
        gone = None if end_if_gone is None else (yield Query(end_if_gone, (row.lease_owner,)))
        if gone:
            return (yield from self._claim(run_id, retried=True))  # its holder was gone (SQLite): lease ended
        raise run_busy(row, self.clock.now_ms(), holder_alive=gone is False)

    def claim_parked(self) -> Generator[Query, Any, RunRow | None]:
        """A run whose lease is parked here, taken for a driver of this process (no claim)."""
        while True:
            parked = self.leases.take_parked()
            if parked is None:
                return None
            row = yield from self._still_parked(parked, for_drivers=True)
            if row is not None:
                return row

    def _still_parked(self, parked: Parked, *, for_drivers: bool) -> Generator[Query, Any, RunRow | None]:
        """The run if the lease taken out of the park is still ours as parked, else None.

        The row this process stored with the lease is the run as it is, with no read, when
        nothing else has written to the database since (``Storage.unchanged_since``: SQLite
        counts other connections' commits) and the lease has time left. Anything that could
        have moved the run meanwhile -- a cancel from another process, say -- is a commit of
        another connection, and then one read confirms the lease. (A cancel in this process
        drops the park itself: ``Leases.forget``.)

        If the read fails (the database away) the lease goes back to the park: it is ours
        in the database, and only the park hands it back. A lease that ran out meanwhile
        (a commit retried through a long outage) is extended first, fenced by its epoch:
        another process may take an expired lease, and two executors must never run."""
        run_id, epoch, now = parked.run_id, parked.epoch, self.clock.now_ms()
        kept = parked.row
        if (
            kept is not None
            and kept.lease_epoch == epoch
            and (kept.lease_expires_at or 0) >= now + self.leases.ttl_ms // 2
            and self.storage.unchanged_since(parked.mark)
        ):
            return kept
        try:
            row: RunRow | None = yield Query(self.storage.get_run, (run_id,))
            if row is None or row.lease_owner != self.owner or row.lease_epoch != epoch or row.status not in ACTIVE:
                return None
            now = self.clock.now_ms()  # after the read: a slow one must not extend the lease into the past
            if (row.lease_expires_at or 0) < now + self.leases.ttl_ms // 2:
                if not (yield Query(self.storage.extend, (run_id, self.owner, epoch, now + self.leases.ttl_ms))):
                    return None  # taken by another process as it ran out: theirs now
                row.lease_expires_at = now + self.leases.ttl_ms
        except BaseException:  # (a step closed at either query, too: the park hands the lease back)
            self.leases.park_new(run_id, epoch, for_drivers=for_drivers)
            raise
        return row

    def _take_over(self, row: RunRow, lease: Lease) -> Generator[Any, Any, tuple[Flow, RunRow]]:
        """What every claim of a run to step starts with: its flow (or FlowNotRegistered),
        the record of a dead previous holder, and a due timer fired (even without drivers)."""
        flow = self.flow_of(row)
        row = yield from self._record_interruption(row, flow, lease)
        if row.status == RunStatus.WAITING and row.wake_at is not None and row.wake_at <= self.clock.now_ms():
            row = yield from self._mark_resumed(row, lease, "null", "timer")
        return flow, row

    def commit(self, new: RunRow, lease: Lease, events: list[EventRow], idem: tuple[Any, ...] | None = None) -> Step:
        """Commit a step; while the database is away, keep the result and try again.

        Each try is fenced by the lease epoch, so trying again is safe: if the lease moved
        on meanwhile (cancelled, or reclaimed by a process that saw it expire), the commit
        raises LeaseLost and writes nothing. A try whose answer was lost may have landed:
        the next one then finds its events (DuplicateStep) and the step is known to be
        committed once.
        """
        delay, failing_since = 0.05, 0.0
        while True:
            if new.lease_owner is not None:  # a kept lease runs from this try, not from the first
                new.lease_expires_at = self.clock.now_ms() + self.leases.ttl_ms
            write = self.storage.step_write(
                new, lease.epoch, events, idem, again=bool(failing_since), in_place=lease.stored == (new.status, new.wake_at)
            )
            outcome = yield Commit(write)
            if outcome is None:
                break
            if isinstance(outcome, LeaseLost):
                lease.held = False
                raise outcome
            if isinstance(outcome, (DuplicateStep, *DUPLICATE)):
                if not failing_since or not (yield from self._landed(new, lease)):
                    if isinstance(outcome, DuplicateStep):
                        raise outcome
                    raise DuplicateStep(str(outcome)) from outcome
                break
            if not isinstance(outcome, StorageUnavailable):
                raise outcome
            if self.stopping.is_set():
                raise outcome  # shutting down: the run is recovered from its lease
            if not failing_since:
                failing_since = time.monotonic()
                log.warning(
                    "run %s: committing a step of node %s failed (%s); keeping the result and trying again "
                    "until the database is back",
                    new.run_id, events[0][4] if events else None, outcome.message,
                )  # fmt: skip
            yield Sleep(delay)
            delay = min(delay * 2, COMMIT_RETRY_MAX_DELAY)
        if failing_since:
            log.warning(
                "run %s: committed after %.1fs of database trouble", new.run_id, time.monotonic() - failing_since
            )
        lease.held = new.lease_owner is not None
        lease.stored = (new.status, new.wake_at)
        new.stale_owner = None  # as the commit wrote it: the row is now the run as stored
        # (a write wrapped by a test's storage has no mark: the next step here reads first)
        lease.row, lease.mark = new, None if failing_since else getattr(write, "mark", None)
        return new

    def _landed(self, new: RunRow, lease: Lease) -> Generator[Query, Any, bool]:
        current = yield Query(self.storage.get_run, (new.run_id,))
        return current is not None and current.lease_epoch == lease.epoch and current.last_seq >= new.last_seq

    def _hold_or_release(self, new: RunRow, hold: bool) -> None:
        if hold and new.status == RunStatus.RUNNING:
            new.lease_owner = self.owner
            new.lease_expires_at = self.clock.now_ms() + self.leases.ttl_ms
        else:
            new.lease_owner = None
            new.lease_expires_at = None

    def _mark_resumed(self, row: RunRow, lease: Lease, payload_json: str, by: str) -> Step:
        """Durably record the resume before running the node: an approval is never lost."""
        now = self.clock.now_ms()
        new = row.evolve(
            status=RunStatus.RUNNING,
            resume_json=payload_json,
            wait_reason=None,
            wait_until=None,
            wake_at=None,
            last_seq=row.last_seq + 1,
            updated_at=now,
            lease_owner=self.owner,
            lease_expires_at=now + self.leases.ttl_ms,
        )
        payload = '{"by":' + dumps(by) + ',"payload":' + payload_json + "}"
        event = (row.run_id, new.last_seq, now, EventType.RUN_RESUMED, row.current_node_id, None, payload, None)
        return (yield from self.commit(new, lease, [event]))

    def _record_interruption(self, row: RunRow, flow: Flow, lease: Lease) -> Step:
        """A claim that found an expired lease: its holder stopped mid-node. Record the
        attempt (``WORKER_LOST``) and run the node again, within its recovery budget."""
        if row.stale_owner is None or row.status != RunStatus.RUNNING or row.current_node_id is None:
            return row
        node = flow.nodes.get(row.current_node_id)
        node_id = row.current_node_id
        attempts = loads(row.attempts_json)
        attempts[node_id] = attempts.get(node_id, 0) + 1
        now = self.clock.now_ms()
        recoveries = row.recoveries + 1
        budget = node.retry.max_recoveries if node is not None else 0
        new = row.evolve(attempts_json=dumps(attempts), recoveries=recoveries, updated_at=now)
        events: list[EventRow] = []

        def event(kind: str, payload: dict[str, Any]) -> None:
            seq = row.last_seq + len(events) + 1
            events.append((row.run_id, seq, now, kind, *event_fields(kind, node_id, attempts[node_id], payload), None))

        stopped = f"worker {row.stale_owner} stopped while executing node {node_id} (its lease ended before the step committed)"
        if recoveries <= budget:
            error = {"code": "WORKER_LOST", "message": f"{stopped}; recovering it ({recoveries} of {budget})", "retryable": True}
            # Run again at once: the lease expiry already made it wait.
            new.status, new.wake_at = RunStatus.RUNNING, None
            event(EventType.NODE_FAILED, {"error": error, "retryInMs": 0, "recovery": recoveries})
            log.warning("run %s: %s", row.run_id, error["message"])
        else:
            error = {
                "code": "WORKER_LOST",
                "message": f"{stopped}; node {node_id} was interrupted {recoveries} times in a row, past its "
                f"recovery budget of {budget} (Retry(max_recoveries=...)), so the run fails",
                "retryable": False,
            }
            new.status, new.error_json, new.wake_at = RunStatus.FAILED, dumps(error), None
            event(EventType.NODE_FAILED, {"error": error, "recovery": recoveries})
            event(EventType.RUN_ABORTED, {"error": error})
            log.error("run %s: %s", row.run_id, error["message"])
        new.last_seq = row.last_seq + len(events)
        self._hold_or_release(new, hold=True)
        return (yield from self.commit(new, lease, events))

    # ------------------------------------------------------------------ one step

    def _step(self, row: RunRow, flow: Flow, lease: Lease, *, hold: bool) -> Step:
        """Execute the current node once and commit the outcome. The one place results become state."""
        run_id, node_id = row.run_id, row.current_node_id
        started = self.clock.now_ms()
        attempts = loads(row.attempts_json)
        attempt = attempts.get(node_id, 0) + 1
        attempts[node_id] = attempt
        events: list[EventRow] = []
        seq = row.last_seq

        def event(kind: str, payload: dict[str, Any], at: int, change: str | None = None) -> None:
            nonlocal seq
            seq += 1
            events.append((run_id, seq, at, kind, *event_fields(kind, node_id, attempt, payload), change))

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
            input=loads(row.input_json),
            state=loads(row.state_json),
            outputs=loads(row.outputs_json),
            attempt=attempt,
            attempts=dict(attempts),
            started_at=to_datetime(row.created_at),
            services=self.services,
            resume_payload=loads(row.resume_json),
            clock=self.clock,
        )
        event(EventType.NODE_STARTED, {}, started)
        if node is None:
            result = Fail("NODE_NOT_FOUND", f"node {node_id!r} is not in flow {flow.flow_id}@{flow.version}", False)
        elif node.idempotency_key is not None:
            try:
                idem_key = str(node.idempotency_key(ctx))
            except BaseException as exc:  # noqa: BLE001 - user code
                if is_interrupt(exc):
                    raise
                result = Fail("IDEMPOTENCY_KEY_ERROR", f"{type(exc).__name__}: {exc}", False)
            else:
                hit = yield Query(self.storage.idempotent_result, (flow.flow_id, node.id, idem_key))
                if hit is not None:
                    cached = True
                    result = Ok(loads(hit[0]), loads(hit[1]))
                else:
                    result = yield from _execute(lease, node, ctx)
        else:
            result = yield from _execute(lease, node, ctx)

        now = self.clock.now_ms()
        new = row.evolve(attempts_json=dumps(attempts), recoveries=0, updated_at=now, wait_reason=None, wait_until=None)
        idem: tuple[Any, ...] | None = None
        output_json = patch_json = None
        if isinstance(result, (Ok, Wait)):
            try:
                wake_at, wait_until = parse_until(result.until, now) if isinstance(result, Wait) else (None, None)
            except (TypeError, ValueError, OverflowError) as exc:
                result = Fail("INVALID_RESULT", f"node {node_id} returned an invalid wait: {exc}", False)
        if isinstance(result, (Ok, Wait)):
            try:
                if result.patch is not None and not isinstance(result.patch, dict):
                    raise TypeError(f"patch must be a dict, not {type(result.patch).__name__}")
                output_json = dumps_user(result.output)
                patch_json = None if result.patch is None else dumps_user(result.patch)
            except (TypeError, ValueError, OverflowError) as exc:
                result = Fail("NOT_SERIALIZABLE", f"node {node_id} returned a value that is not JSON: {exc}", False)
            else:
                for what, text in (("output", output_json), ("patch", patch_json)):
                    if too_large(text, self.max_value_bytes):
                        assert text is not None
                        result = Fail(
                            "VALUE_TOO_LARGE",
                            f"node {node_id} returned a {what} of {len(text.encode())} bytes, over the limit of "
                            f"{self.max_value_bytes} (Engine(max_value_bytes=...), flowrt serve --max-value-bytes); "
                            "nothing was stored",
                            False,
                        )
                        break

        change: str | None = None  # what this step did to state and outputs, kept for rewind
        if isinstance(result, (Ok, Wait)):
            assert output_json is not None
            patch = "null" if patch_json is None else patch_json
            if isinstance(result, Ok) or result.output is not None:
                change = '{"output":' + output_json + ',"patch":' + patch + "}"
            elif patch_json is not None:
                change = '{"patch":' + patch + "}"
            state = loads(row.state_json)
            if result.patch:
                deep_merge(state, loads(patch_json))
            new.state_json = dumps(state)
            outputs = loads(row.outputs_json)
            if isinstance(result, Ok) or result.output is not None:  # a wait may leave no output
                outputs[node_id] = loads(output_json)
                new.outputs_json = dumps(outputs)
            new.failures, new.resume_json = 0, None

        if isinstance(result, Ok):
            new.wake_at, new.error_json = None, None
            event(EventType.NODE_FINISHED, {"cached": cached}, now, change)
            if idem_key is not None and not cached:
                idem = (flow.flow_id, node_id, idem_key, run_id, output_json, patch_json, now)
            try:
                target = select_edge(flow, node_id, ctx, state, outputs)  # type: ignore[arg-type]
            except EdgeError as exc:
                error: dict[str, Any] = {"code": exc.code, "message": str(exc), "retryable": False}
                new.status, new.error_json = RunStatus.FAILED, dumps(error)
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
            event(EventType.NODE_FINISHED, {"cached": cached}, now, change)  # the node ran; the run waits
            event(EventType.RUN_WAITING, {"reason": result.reason, "until": wait_until}, now)
        else:
            assert isinstance(result, Fail)
            code = str(result.code or "ERROR")
            retryable = result.retryable if result.retryable is not None else code in RETRYABLE_CODES
            error = {"code": code, "message": str(result.message or ""), "retryable": bool(retryable)}
            if result.traceback:
                error["traceback"] = result.traceback
                log.warning(
                    "run %s: node %s raised %s: %s\n%s", run_id, node_id, code, error["message"], result.traceback,
                    extra={"handler_traceback": result.traceback},  # the local CLI shows it in the run instead
                )  # fmt: skip
            new.failures = row.failures + 1
            _apply_failure(new, node, error, event, now)
        new.last_seq = seq
        self._hold_or_release(new, hold)
        return (yield from self.commit(new, lease, events, idem))


# ---------------------------------------------------------------------- helpers


def _execute(lease: Lease, node: Node, ctx: Context) -> Generator[Any, Any, Result]:
    """Ask the executor to run the handler, marking the lease as mid-execution meanwhile."""
    lease.executing, lease.node_id, lease.executing_since = True, node.id, time.monotonic()
    result: Result = yield Execute(node, ctx)
    lease.executing = False
    return result


def _apply_failure(
    new: RunRow,
    node: Node | None,
    error: dict[str, Any],
    event: Callable[[str, dict[str, Any], int], None],
    now: int,
) -> None:
    """A failed attempt (``new.failures`` already counts it): retry, parked for the backoff,
    while the error is retryable and attempts remain; otherwise the run fails."""
    max_attempts = node.retry.max_attempts if node is not None else 1
    if error["retryable"] and node is not None and new.failures < max_attempts:
        delay = node.retry.delay_ms(new.failures)
        new.status = RunStatus.RUNNING
        new.wake_at = now + delay if delay > 0 else None
        event(EventType.NODE_FAILED, {"error": error, "retryInMs": delay}, now)
    else:
        payload: dict[str, Any] = {"error": error}
        run_error = error
        if max_attempts > 1:  # a retry policy that did not retry: say why, or it looks ignored
            code = error["code"]
            payload["notRetried"] = (
                f"all {max_attempts} attempts were used"
                if error["retryable"]
                else f"{code} was marked not retryable (retryable=False)"
                if code in RETRYABLE_CODES
                else f"{code} is not retryable (by default only {', '.join(sorted(RETRYABLE_CODES))} are; "
                "fail(..., retryable=True) retries any code)"
            )
            run_error = {**error, "notRetried": payload["notRetried"]}  # the run says it too
        new.status, new.error_json, new.wake_at = RunStatus.FAILED, dumps(run_error), None
        event(EventType.NODE_FAILED, payload, now)
        event(EventType.RUN_ABORTED, {"error": error}, now)
