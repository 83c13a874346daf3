"""Performing the step core's requests: in the calling thread, or from an event loop.

The step core (:mod:`flowrt.steps`) is written as generators that yield what they need
done outside the database: :class:`~flowrt.steps.Execute` (run a handler),
:class:`~flowrt.steps.Commit` (write a step) and :class:`~flowrt.steps.Sleep`. A
:class:`Runner` drives such a generator to its end, doing each request where it is
cheapest:

- in the calling thread (the Python API, drivers, recovery): handlers are called there,
  commits go to the group writer's leader scheme;
- from an event loop (the HTTP server). On SQLite the generator runs on the loop (a thread
  hop costs more than a short write) and its commits join the loop's group commit; on
  Postgres it runs in a database thread, which also performs its commits, so a step costs
  one hop each way around its handler.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from typing import Any, Generator

from .clock import Clock
from .execution import Executor
from .steps import Commit, Execute, Sleep
from .storage import Storage


class Runner:
    """Drives step generators; one per engine."""

    def __init__(self, storage: Storage, executor: Executor, clock: Clock, *, pool_size: int) -> None:
        self.storage = storage
        self.executor = executor
        self.clock = clock
        self.offload_db = storage.kind == "postgres"
        self._pool_size = pool_size
        self._db_threads: concurrent.futures.ThreadPoolExecutor | None = None

    def close(self) -> None:
        if self._db_threads is not None:
            self._db_threads.shutdown(wait=False, cancel_futures=True)

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
        try:
            while True:
                done, request = _send(gen, value)
                if done:
                    return request
                value = self._perform(request)
        finally:
            gen.close()

    async def drive_async(self, gen: Generator[Any, Any, Any]) -> Any:
        """Perform a generator's requests from an event loop.

        On SQLite the generator runs on the loop (a thread hop costs more than a short
        write) and its commits join the loop's group commit. On Postgres it runs in a
        database thread, which also performs its commits, so a step costs one hop."""
        value: Any = None
        in_thread: concurrent.futures.Future[tuple[bool, Any]] | None = None
        try:
            while True:
                if self.offload_db:
                    in_thread = self.db_pool().submit(self._advance, gen, value)
                    done, request = await asyncio.wrap_future(in_thread)
                    in_thread = None
                else:
                    done, request = _send(gen, value)
                if done:
                    return request
                if isinstance(request, Commit):
                    value = await self._commit_async(request)
                elif isinstance(request, Sleep):
                    await self.clock.asleep(request.seconds)
                    value = None
                else:
                    assert isinstance(request, Execute)
                    value = await self.executor.acall(request.node, request.ctx)
        finally:
            if in_thread is not None and not in_thread.done():
                # Cancelled while the generator runs in a database thread (a request cut off
                # at shutdown): close it there once that call returns, so its lease is handed back.
                in_thread.add_done_callback(lambda _: gen.close())
            else:
                gen.close()

    def _perform(self, request: Any) -> Any:
        """Perform one request of a step generator in this thread."""
        if isinstance(request, Commit):
            return self._commit(request)
        if isinstance(request, Sleep):
            self.clock.sleep(request.seconds)
            return None
        assert isinstance(request, Execute)
        return self.executor.call(request.node, request.ctx)

    def _advance(self, gen: Generator[Any, Any, Any], value: Any) -> tuple[bool, Any]:
        """In a database thread: send, performing commits here, until the generator needs the loop."""
        done, request = _send(gen, value)
        while not done and isinstance(request, Commit):
            done, request = _send(gen, self._commit(request))
        return done, request

    def _commit(self, request: Commit) -> Any:
        """A Commit's outcome: what its write returned, or the exception it failed with."""
        try:
            return self.storage.writer.write(request.apply)
        except Exception as exc:  # noqa: BLE001 - the step core decides what a failure means
            return exc

    async def _commit_async(self, request: Commit) -> Any:
        """Always through the loop's group commit, even when this step seems alone: the
        requests behind it are waiting in the loop's queue, not yet in the engine, and
        reach their commits in time for this one only if this step lets them run (measured:
        1.4-2.2x the requests/s at 16 clients, the same at one)."""
        try:
            return await self.storage.writer.write_async(request.apply)
        except Exception as exc:  # noqa: BLE001 - as in _commit
            return exc


def _send(gen: Generator[Any, Any, Any], value: Any) -> tuple[bool, Any]:
    """``gen.send`` as a plain result, so it can cross a thread pool (StopIteration cannot)."""
    try:
        return False, gen.send(value)
    except StopIteration as stop:
        return True, stop.value
