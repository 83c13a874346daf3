"""Performing the step core's requests: in the calling thread, or from an event loop.

The step core (:mod:`flowrt.steps`) is written as generators that yield what they need
done: :class:`~flowrt.steps.Execute` (run a handler), :class:`~flowrt.steps.Commit` (write
a step), :class:`~flowrt.steps.Query` (another database call) and
:class:`~flowrt.steps.Sleep`. A :class:`Runner` drives such a generator to its end, doing
each request where it is cheapest:

- in the calling thread (the Python API, drivers, recovery): handlers are called there,
  queries made there, commits go to the group writer's leader scheme;
- from an event loop (the HTTP server), the generator runs on the loop. On SQLite its
  queries are made there too (a thread hop costs more than a short read or write) and its
  commits join the loop's group commit. On Postgres the hot statements -- the read of a
  parked run, a claim by id, a commit of one statement -- are awaited on the loop's own
  async connections (:mod:`flowrt.loop_connections`: a query from a thread costs the process
  four times the CPU), and every other query or commit goes to a database thread.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
from typing import Any, Callable, Generator

from .clock import Clock
from .errors import StorageUnavailable
from .execution import Executor
from .leases import HandBacks, Leases, hand_backs_elsewhere
from .loop_connections import LoopConnections
from .steps import Commit, Execute, Query, Sleep
from .storage import RunRow, Storage

log = logging.getLogger("flowrt.runner")

HAND_BACK_WAIT = 5.0
"""Longest a request on Postgres waits for its step's lease hand-back before answering (seconds)."""


class Runner:
    """Drives step generators; one per engine."""

    def __init__(self, storage: Storage, leases: Leases, executor: Executor, clock: Clock, *, pool_size: int) -> None:
        self.storage = storage
        self.leases = leases
        self.executor = executor
        self.clock = clock
        self.offload_db = storage.kind == "postgres"
        self._pool_size = pool_size
        self._db_threads: concurrent.futures.ThreadPoolExecutor | None = None
        self.loop_connections = LoopConnections(storage, pool_size) if self.offload_db else None
        self._read_run = storage.get_run
        # The calls with a twin on the loop's connections; any other goes to a database thread.
        self._on_loop: dict[Callable[..., Any], Callable[..., Any]] = (
            {storage.get_run: self._get_run_on_loop, storage.claim: self._claim_on_loop} if self.offload_db else {}
        )

    def close(self) -> None:
        if self._db_threads is not None:
            self._db_threads.shutdown(wait=False, cancel_futures=True)
        if self.loop_connections is not None:
            self.loop_connections.close()

    def db_pool(self) -> concurrent.futures.ThreadPoolExecutor:
        """The server's database threads (Postgres), each keeping its pooled connection."""
        if self._db_threads is None:
            self._db_threads = concurrent.futures.ThreadPoolExecutor(
                self._pool_size, thread_name_prefix="flowrt-db", initializer=self.storage.keep_connection
            )
        return self._db_threads

    def drive_sync(self, gen: Generator[Any, Any, Any]) -> Any:
        """Perform a generator's requests in this thread; its return value."""
        value: Any = None
        error: BaseException | None = None
        try:
            while True:
                done, request = _send(gen, value, error)
                if done:
                    return request
                if isinstance(request, Query):
                    try:
                        value, error = request.call(*request.args), None
                    except BaseException as exc:  # noqa: BLE001 - raised in the generator, where it asked
                        value, error = None, exc
                else:
                    value = self._perform(request)
        finally:
            gen.close()

    async def drive_async(self, gen: Generator[Any, Any, Any]) -> Any:
        """Perform a generator's requests from an event loop; the generator runs on the loop.

        On Postgres, a hand-back of the step's lease is written from a database thread
        (:data:`flowrt.leases.hand_backs_elsewhere`), and awaited before this returns -- the
        answer goes out once the run is free for any process to take -- for at most
        :data:`HAND_BACK_WAIT` (one held up by a row lock lands later, tracked meanwhile)."""
        if not self.offload_db:
            return await self._drive_on_loop(gen, None)
        pending: list[concurrent.futures.Future[None]] = []

        def elsewhere(hand_back: Callable[[], None]) -> concurrent.futures.Future[None]:
            future = self.db_pool().submit(hand_back)
            pending.append(future)
            return future

        try:
            return await self._drive_on_loop(gen, elsewhere)
        finally:
            if pending:
                await asyncio.wait([asyncio.wrap_future(future) for future in pending], timeout=HAND_BACK_WAIT)

    async def _drive_on_loop(self, gen: Generator[Any, Any, Any], elsewhere: HandBacks | None) -> Any:
        value: Any = None
        error: BaseException | None = None
        in_flight: asyncio.Future[tuple[Any, Exception | None]] | None = None
        try:
            while True:
                done, request = _send(gen, value, error) if elsewhere is None else _send_with(elsewhere, gen, value, error)
                if done:
                    return request
                error = None
                if not self.offload_db and isinstance(request, Commit):
                    value = await self._commit_async(request)
                elif not self.offload_db and isinstance(request, Query):
                    try:  # SQLite: here, on the loop (cheaper than a thread hop)
                        value = request.call(*request.args)
                    except Exception as exc:  # noqa: BLE001 - raised in the generator, where it asked
                        error = exc
                elif isinstance(request, Query) and request.call == self._read_run:
                    # Postgres, a read: cut off, it leaves nothing to finish (a parked lease it
                    # was checking goes back to the park), so it needs no shield and no task.
                    value, error = await self._on_postgres(request)
                elif isinstance(request, (Query, Commit)):
                    # Postgres. Shielded: a request cut off while Postgres works (shutdown) lets
                    # that work finish, and the step is closed -- its lease handed back -- only
                    # then, when whatever it wrote (a claim, a commit) has landed or not.
                    in_flight = asyncio.ensure_future(self._on_postgres(request))
                    value, error = await asyncio.shield(in_flight)
                    in_flight = None
                elif isinstance(request, Sleep):
                    await self.clock.asleep(request.seconds)
                    value = None
                else:
                    assert isinstance(request, Execute)
                    value = await self.executor.acall(request.node, request.ctx)
        finally:
            if in_flight is not None and not in_flight.done():
                assert elsewhere is not None  # (Postgres)
                cut_off, hand_backs = in_flight, elsewhere
                cut_off.add_done_callback(lambda _: self._close_after(gen, cut_off, hand_backs))
            elif elsewhere is not None:
                _close_with(elsewhere, gen)
            else:
                gen.close()

    def _close_after(
        self, gen: Generator[Any, Any, Any], finished: asyncio.Future[tuple[Any, Exception | None]], elsewhere: HandBacks
    ) -> None:
        """Close a step whose request was cut off once its database work finished. A claim
        that landed meanwhile is one the step never saw: its lease is handed back too."""
        token = hand_backs_elsewhere.set(elsewhere)
        try:
            gen.close()
            value = None if finished.cancelled() or finished.exception() else finished.result()[0]
            if isinstance(value, RunRow) and value.lease_owner == self.leases.owner and not self.leases.is_parked(value.run_id):
                self.leases.hand_back_untracked(value.run_id, value.lease_epoch)
        except Exception:  # noqa: BLE001 - a callback: nobody else would see it
            log.exception("closing a step whose request was cut off failed")
        finally:
            hand_backs_elsewhere.reset(token)

    async def query_async(self, call: Callable[..., Any], *args: Any) -> Any:
        """One storage call from an event loop, made where a step's would be: here on SQLite,
        on the loop's own connections or else in a database thread on Postgres."""
        if not self.offload_db:
            return call(*args)
        value, error = await self._on_postgres(Query(call, args))
        if error is not None:
            raise error
        return value

    async def _on_postgres(self, request: Query | Commit) -> tuple[Any, Exception | None]:
        """``(value, error)`` of a query or commit: on the loop's connections if it has a
        twin there, else in a database thread."""
        if isinstance(request, Commit):
            return await self._commit_async(request), None
        try:
            on_loop = self._on_loop.get(request.call)
            if on_loop is not None:
                return await on_loop(*request.args), None
            return await asyncio.get_running_loop().run_in_executor(self.db_pool(), request.call, *request.args), None
        except Exception as exc:  # noqa: BLE001 - raised in the generator, where it asked
            return None, exc

    async def _get_run_on_loop(self, run_id: str) -> RunRow | None:
        assert self.loop_connections is not None
        row = await self.loop_connections.fetch_one(self.storage._sql.get_run, (run_id,), repeatable=True)  # noqa: SLF001 - its SQL
        return RunRow(*row) if row else None

    async def _claim_on_loop(self, run_id: str, owner: str, ttl_ms: int) -> RunRow | None:
        """:meth:`Storage.claim`: one statement, so its own transaction."""
        assert self.loop_connections is not None
        now = self.clock.now_ms()
        row = await self._written(self.storage._sql.claim_by_id, (owner, now + ttl_ms, run_id, now, owner), fetch=True)  # noqa: SLF001
        return RunRow(*row) if row else None

    async def _written(self, sql: str, params: Any, *, fetch: bool) -> Any:
        """A write of one statement on the loop's connections (a transaction of its own), with
        the storage's bookkeeping: transactions counted, write trouble for /health."""
        assert self.loop_connections is not None
        storage = self.storage
        storage.write_transactions += 1
        result: Any
        try:
            if fetch:
                result = await self.loop_connections.fetch_one(sql, params, repeatable=False)
            else:
                result = await self.loop_connections.execute(sql, params)
        except StorageUnavailable as exc:
            storage._write_failed(exc)  # noqa: SLF001 - the storage's own bookkeeping
            raise
        if storage.write_error is not None:
            storage._write_worked()  # noqa: SLF001
        return result

    def _perform(self, request: Any) -> Any:
        """Perform one request of a step generator in this thread."""
        if isinstance(request, Commit):
            return self._commit(request)
        if isinstance(request, Sleep):
            self.clock.sleep(request.seconds)
            return None
        assert isinstance(request, Execute)
        return self.executor.call(request.node, request.ctx)

    def _commit(self, request: Commit) -> Any:
        """A Commit's outcome: what its write returned, or the exception it failed with."""
        try:
            return self.storage.writer.write(request.apply)
        except Exception as exc:  # noqa: BLE001 - the step core decides what a failure means
            return exc

    async def _commit_async(self, request: Commit) -> Any:
        """On SQLite always through the loop's group commit, even when this step seems alone:
        the requests behind it are waiting in the loop's queue, not yet in the engine, and
        reach their commits in time for this one only if this step lets them run (measured:
        1.4-2.2x the requests/s at 16 clients, the same at one).

        On Postgres a write of one statement is its own transaction on one of the loop's
        connections: Postgres commits many at once, so it is never held for a batch. Any
        other write (a retry, an idempotency record) goes to a database thread."""
        try:
            if not self.offload_db:
                return await self.storage.writer.write_async(request.apply)
            statement = getattr(request.apply, "statement", None)
            if statement is None:
                return await asyncio.get_running_loop().run_in_executor(self.db_pool(), self._commit, request)
            sql, params, outcome = statement
            writer = self.storage.writer
            writer.transactions += 1
            writer.writes += 1
            return outcome(await self._written(sql, params, fetch=False))
        except Exception as exc:  # noqa: BLE001 - as in _commit
            return exc


def _send_with(
    elsewhere: HandBacks, gen: Generator[Any, Any, Any], value: Any, error: BaseException | None
) -> tuple[bool, Any]:
    """:func:`_send` with the step's hand-backs going ``elsewhere`` -- only while the step core
    itself runs, never in what a handler awaits or starts (the context would travel with it)."""
    token = hand_backs_elsewhere.set(elsewhere)
    try:
        return _send(gen, value, error)
    finally:
        hand_backs_elsewhere.reset(token)


def _close_with(elsewhere: HandBacks, gen: Generator[Any, Any, Any]) -> None:
    token = hand_backs_elsewhere.set(elsewhere)
    try:
        gen.close()
    finally:
        hand_backs_elsewhere.reset(token)


def _send(gen: Generator[Any, Any, Any], value: Any, error: BaseException | None = None) -> tuple[bool, Any]:
    """``gen.send`` (or ``gen.throw`` of a query's error) as a plain result."""
    try:
        return False, gen.send(value) if error is None else gen.throw(error)
    except StopIteration as stop:
        return True, stop.value
