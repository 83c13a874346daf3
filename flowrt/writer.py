"""Group commit: the writes of many steps, of many runs, committed in one transaction.

A durable step costs one transaction, and on a busy server most of a transaction is its
fixed part (BEGIN, COMMIT, the WAL write or round trips) rather than its statements. So
the writes that are ready at the same moment share one transaction, and each caller is
released when the transaction holding its write has committed -- never before: a step
acknowledged to its caller is durable.

There is no timer and no artificial delay. A caller that finds nobody committing commits
its own write at once (a batch of one, as without batching). Callers that arrive while a
transaction is being written queue up, and the next transaction takes all of them:

- threads (drivers, the Python API, Postgres request threads) use :meth:`GroupWriter.write`,
  the classic leader scheme: whoever holds the flush lock writes everything queued;
- an event loop (the HTTP server on SQLite, where commits run on the loop because a thread
  hop costs more than the commit) uses :meth:`GroupWriter.write_async`: the first write of a
  loop iteration schedules one flush, and every request that reaches its commit before that
  flush runs joins it. A request's handler rarely yields to the loop before its commit, so
  the commit itself yields: the requests queued behind it run up to their own commits and
  all of them share one transaction.

A write is a function of a cursor that runs inside the shared transaction and reports
expected outcomes (a lost lease, an earlier try that landed) as its return value, writing
nothing in that case. If a write raises anyway, the transaction is rolled back and each
write of the batch is tried again in a transaction of its own, so one bad write never
takes the others with it. If the database is away, every write of the batch gets the
error, and their callers retry (see :meth:`flowrt.steps.StepCore.commit`).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Iterator

from .errors import StorageUnavailable

if TYPE_CHECKING:
    from .storage import Storage

POSTGRES_FLUSHERS = 8
"""Transactions of batched writes in flight at once on Postgres (one connection each)."""

Apply = Callable[[Any], Any]
"""A write: given a cursor inside the shared transaction, do the statements, return the outcome.
A write that inserts a unique key others may insert too (an idempotency key) names it in its
``lock_key`` attribute: a batch writes those in key order (see :meth:`GroupWriter._flush`).
A write that is one statement (Postgres) carries it in its ``statement`` attribute (see :class:`Write`)."""

Statement = tuple[str, list[Any], Callable[[int], Any]]
"""A write that is a single statement: its SQL, its parameters, and the write's outcome from
the statement's row count. Alone, it is its own transaction (Postgres autocommit: no BEGIN and
COMMIT), and from an event loop it needs no thread (:class:`flowrt.runner.Runner`)."""


class Write:
    """A write for :class:`GroupWriter` (an :data:`Apply`) with what it carries for the writer
    and the step core: its ``lock_key`` and ``statement`` (above), and the ``mark`` its body
    leaves (``Storage.change_mark``), which a parked lease's next step checks instead of
    reading the run. ``body(cursor, write)`` gets this object to set the mark on.

    Why an object and not a function with attributes: a function that set its own ``mark``
    refers to itself through its closure, so each step's write -- with the row, events and
    parameters its closure holds -- was a reference cycle that only the cyclic garbage
    collector frees: ~50 objects a run, and a generation-0 collection every dozen runs.
    The body here is given the object instead, so a write is freed as soon as it is done."""

    __slots__ = ("body", "mark", "lock_key", "statement")

    def __init__(
        self,
        body: Callable[[Any, Write], Any],
        *,
        lock_key: str | None = None,
        statement: Statement | None = None,
    ) -> None:
        self.body = body
        self.mark: Any = None
        self.lock_key = lock_key
        self.statement = statement

    def __call__(self, cursor: Any) -> Any:
        return self.body(cursor, self)


def _lock_order(item: _Pending) -> tuple[int, str]:
    key = getattr(item.apply, "lock_key", None)
    return (0, key) if key is not None else (1, "")


@dataclass(slots=True, eq=False)
class _Pending:
    apply: Apply
    result: Any = None
    error: BaseException | None = None
    done: bool = False
    waiter: asyncio.Future[None] | None = None
    loop: asyncio.AbstractEventLoop | None = None
    on_done: Callable[[Any, BaseException | None], None] | None = None

    def outcome(self) -> Any:
        if self.error is not None:
            raise self.error
        return self.result


class GroupWriter:
    """Commits queued writes together; one per :class:`~flowrt.storage.Storage`."""

    def __init__(self, storage: Storage) -> None:
        self.storage = storage
        self._queue: list[_Pending] = []
        self._queue_lock = threading.Lock()
        # SQLite has one writer: one transaction of batched writes at a time. Postgres takes
        # many at once, each on its own connection: writes batch up only once all are busy.
        self._flush_lock: Any = (
            threading.BoundedSemaphore(POSTGRES_FLUSHERS) if storage.kind == "postgres" else threading.Lock()
        )
        self._scheduled: set[asyncio.AbstractEventLoop] = set()
        self._written = threading.Condition()  # several flushes at once: a waiter's write may be in another
        self.transactions = 0
        """Batches committed (or tried): with ``writes``, what ``flowrt bench`` reports."""
        self.writes = 0

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """No transaction of batched writes starts in the block; writes queue up (for tests:
        what a busy writer looks like, made deterministic)."""
        slots = POSTGRES_FLUSHERS if isinstance(self._flush_lock, threading.BoundedSemaphore) else 1
        for _ in range(slots):
            self._flush_lock.acquire()
        try:
            yield
        finally:
            for _ in range(slots):
                self._flush_lock.release()

    def queued(self) -> int:
        with self._queue_lock:
            return len(self._queue)

    def write(self, apply: Apply) -> Any:
        """Commit ``apply`` (with whatever else is queued) and return its outcome; blocks."""
        item = _Pending(apply)
        with self._queue_lock:
            self._queue.append(item)
        with self._flush_lock:
            if not item.done:  # else an earlier flush took it while this thread waited
                self._flush()
        if not item.done:  # taken by a flush still writing in another thread (Postgres)
            with self._written:
                self._written.wait_for(lambda: item.done)
        return item.outcome()

    def enqueue(self, apply: Apply, on_done: Callable[[Any, BaseException | None], None]) -> None:
        """Queue ``apply`` to ride along with the next transaction, whoever commits it; no wait.

        ``on_done(result, error)`` is called in the committing thread once it is written (a
        driver's claim of its next run travels this way, inside its current run's commit)."""
        with self._queue_lock:
            self._queue.append(_Pending(apply, on_done=on_done))

    async def write_async(self, apply: Apply) -> Any:
        """Commit ``apply`` from an event loop, in the one flush of this loop iteration."""
        loop = asyncio.get_running_loop()
        item = _Pending(apply, waiter=loop.create_future(), loop=loop)
        with self._queue_lock:
            self._queue.append(item)
            schedule = loop not in self._scheduled
            self._scheduled.add(loop)
        if schedule:
            loop.call_soon(self._flush_on_loop, loop)
        assert item.waiter is not None
        # A caller cut off here (shutdown) may still have its write committed by the flush;
        # its step's lease handling copes with either (see Runner.drive_async).
        await item.waiter
        return item.outcome()

    def _flush_on_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        with self._queue_lock:
            self._scheduled.discard(loop)
        with self._flush_lock:
            self._flush(loop)

    # ------------------------------------------------------------------ the flush

    def _flush(self, on_loop: asyncio.AbstractEventLoop | None = None) -> None:
        """Write everything queued in one transaction (the flush lock is held); ``on_loop``:
        the event loop this runs on, if any (its waiters are woken directly)."""
        with self._queue_lock:
            batch, self._queue = self._queue, []
        if not batch:
            return
        if len(batch) > 1 and any(getattr(item.apply, "lock_key", None) is not None for item in batch):
            # Two Postgres transactions inserting the same two keys in opposite orders each wait
            # for the other's row: a deadlock, and one batch's steps fail. Keys in one order
            # everywhere cannot deadlock. (The rest keep their order; it means nothing.)
            batch.sort(key=_lock_order)
        self.transactions += 1
        self.writes += len(batch)
        alone = len(batch) == 1 and getattr(batch[0].apply, "statement", None) is not None
        try:
            with self.storage._write(one_statement=alone) as cursor:  # noqa: SLF001 - storage's one transaction path
                results = [item.apply(cursor) for item in batch]
        except StorageUnavailable as exc:
            for item in batch:
                item.error = exc
        except Exception as exc:
            if len(batch) == 1:
                batch[0].error = exc
            else:
                self._one_by_one(batch)
        except BaseException as exc:
            # Interrupted (Ctrl-C in the flushing thread): rolled back, so nothing of it
            # landed -- unless the interrupt hit COMMIT itself. Its callers try again, and a
            # step that did land is recognised (DuplicateStep). The flusher's own caller
            # gets the interrupt as it propagates from here.
            for item in batch:
                item.error = StorageUnavailable(f"the transaction was interrupted ({type(exc).__name__})")
            self._release(batch, on_loop)
            raise
        else:
            for item, result in zip(batch, results):
                item.result = result
        self._release(batch, on_loop)

    def _one_by_one(self, batch: list[_Pending]) -> None:
        """After a write raised: every write again, each in a transaction of its own."""
        for item in batch:
            self.transactions += 1
            try:
                with self.storage._write() as cursor:  # noqa: SLF001
                    item.result = item.apply(cursor)
            except Exception as exc:  # noqa: BLE001 - the write's own error, for its caller
                item.error = exc

    def _release(self, batch: list[_Pending], on_loop: asyncio.AbstractEventLoop | None) -> None:
        with self._written:
            for item in batch:
                item.done = True
            self._written.notify_all()
        for item in batch:
            if item.on_done is not None:
                item.on_done(item.result, item.error)
                continue
            waiter, loop = item.waiter, item.loop
            if waiter is None or loop is None:
                continue  # a thread: it sees `done` when it gets the flush lock
            if loop is on_loop:  # this flush runs on the waiter's own loop: wake it directly
                _wake(waiter)
            else:  # any other thread (even one that runs some loop): hand it to that loop
                with contextlib.suppress(RuntimeError):  # that loop is closed: nobody waits any more
                    loop.call_soon_threadsafe(_wake, waiter)


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)
