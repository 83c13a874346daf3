"""Postgres from the server's event loop: the hot statements on psycopg async connections.

On Postgres, a query the server sends from a database thread costs the process far more
than the query: the loop and the threads pass the interpreter lock back and forth at every
hand-over. Measured with ``tests/benchmarks/bench_pg_threads.py`` (docs/performance.md):
at 16 queries in flight, 119-166 µs of CPU a query from 16 threads against 29-30 µs on async
connections awaited on the loop. So the statements nearly every request makes -- the read
of a parked run, a claim, a step's or a start's one-statement commit -- go from the loop on
connections of its own (:class:`LoopConnections`), and every rarer call still goes to a
database thread (:mod:`flowrt.runner`).

The SQL is the storage's own (:mod:`flowrt.statements`); only the way it travels differs.
Errors mean what they mean everywhere else (:mod:`flowrt.database`): a connection that fails
is dropped and the failure is :class:`~flowrt.errors.StorageUnavailable`; a unique
violation is the driver's ``IntegrityError``, which the step core reads as a duplicate.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from typing import Any, Sequence

import psycopg

from .database import CHECK_AFTER, UNAVAILABLE, closed_by_server, unavailable
from .errors import StorageUnavailable
from .storage import Storage


STALE_AFTER = 300.0
"""An idle connection older than this (seconds) is closed rather than used, as the threads'
pool does (``stale_timeout``): a firewall or proxy may have dropped it long ago."""


class _Pool:
    """One loop's connections: idle ones kept with their cursor and since when, at most
    ``size`` in all (held or idle)."""

    def __init__(self, size: int) -> None:
        self.slots = asyncio.Semaphore(size)
        self.idle: list[tuple[psycopg.AsyncConnection[Any], psycopg.AsyncCursor[Any], float]] = []


class LoopConnections:
    """Async connections for the event loops that run steps, ``size`` at most per loop
    (the server has one loop; each test's ``asyncio.run`` is another)."""

    def __init__(self, storage: Storage, size: int) -> None:
        self.storage = storage
        self.size = size
        self._pools: dict[asyncio.AbstractEventLoop, _Pool] = {}
        self._lock = threading.Lock()
        self._closed = False

    async def fetch_one(self, sql: str, params: Sequence[Any], *, repeatable: bool) -> tuple[Any, ...] | None:
        """The statement's first row, or None. ``repeatable`` (a read): one that fails on a
        connection kept from before is tried once more on a new one, since after a database
        restart every kept connection is dead. A write that returns rows (a claim) is not
        repeatable: it may have landed before the connection broke."""
        row: tuple[Any, ...] | None = await self._run(sql, params, fetch=True, again=repeatable)
        return row

    async def execute(self, sql: str, params: Sequence[Any]) -> int:
        """Execute a write of one statement (its own transaction); its row count. Never
        repeated here: whether a write whose answer was lost landed is the caller's question."""
        count: int = await self._run(sql, params, fetch=False, again=False)
        return count

    def close(self) -> None:
        """Close the idle connections of every loop; a connection in use is closed when it
        comes back. (Closing the socket is synchronous: no loop needs to run for it.)"""
        with self._lock:
            self._closed = True
            pools, self._pools = list(self._pools.values()), {}
            for pool in pools:
                _drop_idle(pool)

    # ------------------------------------------------------------------ inside

    def _pool(self) -> _Pool:
        loop = asyncio.get_running_loop()
        pool = self._pools.get(loop)
        if pool is None:
            with self._lock:
                for old in [other for other in self._pools if other.is_closed()]:
                    _drop_idle(self._pools.pop(old))
                pool = self._pools.setdefault(loop, _Pool(self.size))
        return pool

    async def _run(self, sql: str, params: Sequence[Any], *, fetch: bool, again: bool) -> Any:
        if self._closed:
            raise StorageUnavailable("the engine is closed")
        pool = self._pool()
        async with pool.slots:
            while True:
                connection, cursor = self._kept(pool)
                kept = connection is not None
                try:
                    if connection is None:
                        connection = await psycopg.AsyncConnection.connect(
                            self.storage.db.database, autocommit=True, **self.storage.db.connect_params
                        )
                        cursor = connection.cursor()
                    assert cursor is not None
                    await cursor.execute(sql, params)
                    result = await cursor.fetchone() if fetch else cursor.rowcount
                except psycopg.IntegrityError:
                    # the statement's own failure (a duplicate key): the connection is fine
                    assert connection is not None and cursor is not None
                    self._keep(pool, connection, cursor)
                    raise
                except BaseException as exc:
                    # Broken, or cut off mid-statement: never used again.
                    if connection is not None:
                        _drop(connection)
                    if not isinstance(exc, UNAVAILABLE):
                        raise
                    # The database went away (or restarted): the kept connections are most
                    # likely dead too, and each would fail once.
                    _drop_idle(pool)
                    if again and kept:
                        again = False
                        continue
                    raise unavailable(self.storage.url, exc) from exc
                self._keep(pool, connection, cursor)
                return result

    def _kept(self, pool: _Pool) -> tuple[Any, Any]:
        """The most recently used idle connection and its cursor (stale ones are closed), or Nones."""
        now = time.monotonic()
        while pool.idle:
            connection, cursor, since = pool.idle.pop()
            idle = now - since
            if idle < CHECK_AFTER or (idle < STALE_AFTER and not closed_by_server(connection)):
                return connection, cursor
            _drop(connection)
            if idle >= STALE_AFTER:  # the rest are older still
                _drop_idle(pool)
        return None, None

    def _keep(self, pool: _Pool, connection: psycopg.AsyncConnection[Any], cursor: psycopg.AsyncCursor[Any]) -> None:
        if self._closed:
            _drop(connection)
        else:
            pool.idle.append((connection, cursor, time.monotonic()))


def _drop_idle(pool: _Pool) -> None:
    for connection, _, _ in pool.idle:
        _drop(connection)
    pool.idle.clear()


def _drop(connection: psycopg.AsyncConnection[Any]) -> None:
    with contextlib.suppress(Exception):
        connection.pgconn.finish()
