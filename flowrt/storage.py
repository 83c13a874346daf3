"""Durable storage: every read and write flowrt makes, one implementation for SQLite, memory and Postgres.

Cold paths (listing) use plain SQL or Peewee's model API. The hot path (claim a run,
commit a step, append events) uses SQL rendered once per backend (:class:`_Statements`)
and executed on the Peewee connection: building queries through the model API costs more
per step than the commit itself (see shared/spec/PERFORMANCE.md).

The tables and migrations are in :mod:`flowrt.schema`; opening a URL and the meaning of
driver errors in :mod:`flowrt.database`. Backends differ only there and in a few
``self.kind`` checks: one in-process writer and background WAL checkpoints for SQLite,
``FOR UPDATE SKIP LOCKED`` for Postgres.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import threading
import time
from typing import Any, Iterator, Sequence

import peewee as pw
import psycopg

from .clock import SYSTEM_CLOCK, Clock
from .database import (
    CHECK_AFTER, DEFAULT_URL, DUPLICATE, UNAVAILABLE,
    describe_url, drop_if_closed_by_server, open_database, translated, unavailable,
)  # fmt: skip
from .errors import StorageUnavailable
from .lease_bookkeeping import LeaseBookkeeping
from .listings import Listings
from .statements import Statements
from .writer import GroupWriter, Statement, Write
from .schema import (
    MIGRATIONS,
    RUN_COLUMNS,
    SCHEMA_VERSION,
    EventRow,
    RunRow,
    build_models,
    run_values,
    step_values,
    step_values_in_place,
)

__all__ = [
    "DEFAULT_URL",
    "SCHEMA_VERSION",
    "DuplicateStep",
    "EventRow",
    "LeaseLost",
    "RunRow",
    "Storage",
    "describe_url",
    "open_database",
]

log = logging.getLogger("flowrt.storage")
_monotonic = time.monotonic
_NOTHING = contextlib.nullcontext()


def _inserted(rowcount: int) -> None:
    """A new run's statement has no outcome: it is written, or it raises."""


class Storage(Listings, LeaseBookkeeping):
    """All of flowrt's reads and writes. One instance per engine."""

    def __init__(self, url: str = DEFAULT_URL, *, pool_size: int = 16, clock: Clock = SYSTEM_CLOCK) -> None:
        self.url = url
        self.clock = clock
        # The last write that failed (message, monotonic time), cleared by the next that
        # works: a full disk leaves reads (and a ping) working while every write fails.
        self.write_error: tuple[str, float] | None = None
        self.last_write_failure: float | None = None  # monotonic; never cleared
        self._truncate_wal = False  # after failed writes, give the WAL's disk space back
        self.kind, self.db = open_database(url, pool_size=pool_size)
        self.models = build_models(self.db)
        self._local = threading.local()
        self.edits = 0
        """Writes this process made that can change a run without holding its lease (cancel, the
        claim of a repair, deleting runs), counted inside their transaction: part of a change
        mark, which SQLite's data_version cannot give for this process's own connection."""
        self._mark_of_transaction: tuple[int, Any] = (-1, None)  # (write_transactions, its mark)
        # SQLite takes one writer at a time; queueing writers on a Python lock is far
        # cheaper than SQLite's busy-wait. Memory shares one connection, so it guards
        # every statement.
        if self.kind == "memory":
            self._write_lock: Any = threading.RLock()
            self._read_lock: Any = self._write_lock
        elif self.kind == "sqlite":
            self._write_lock = threading.Lock()
            self._read_lock = contextlib.nullcontext()
        else:
            self._write_lock = contextlib.nullcontext()
            self._read_lock = contextlib.nullcontext()
        self._begin = "BEGIN IMMEDIATE" if self.kind != "postgres" else "BEGIN"
        self._closing = threading.Event()
        self._checkpointer: threading.Thread | None = None
        self.checkpoint_interval = 1.0  # seconds; measured best of 0.25, 0.5, 1 (docs/performance.md)
        # Counted for `flowrt bench`; exact under SQLite's writer lock, near enough on Postgres.
        self.write_transactions = 0
        self._sql = Statements(self.db.param, self.kind)
        self.writer = GroupWriter(self)
        try:
            with translated(url), self.session():
                self.ensure_schema()
        except (pw.ProgrammingError, psycopg.ProgrammingError) as exc:
            raise StorageUnavailable(
                f"cannot create flowrt's tables in {describe_url(url)}: {exc} "
                "(does the schema named in search_path exist, and may this user create tables in it?)"
            ) from exc

    @property
    def durable(self) -> bool:
        return self.kind != "memory"

    def _start_checkpointer(self) -> None:
        if self.kind != "sqlite" or self._checkpointer is not None:
            return
        self._checkpointer = threading.Thread(target=self._checkpoint_loop, name="flowrt-wal-checkpoint", daemon=True)
        self._checkpointer.start()

    def _checkpoint_loop(self) -> None:
        """WAL checkpoints off the request path.

        A PASSIVE checkpoint copies the bulk of the WAL back while writers go on. Under
        steady writes it never catches up with the newest frames, and SQLite only rewinds
        a WAL that is fully copied, so the file would grow without end. A RESTART then
        copies the small remainder and rewinds it; it runs holding this process's writer
        lock, so local writers wait on the lock (briefly) instead of in SQLite's busy loop.
        """
        conn = sqlite3.connect(self.db.database, timeout=0.2, isolation_level=None, check_same_thread=False)
        try:
            while not self._closing.wait(self.checkpoint_interval):
                try:
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                    # After writes failed (a full disk), TRUNCATE gives the WAL's space back;
                    # otherwise RESTART rewinds it and keeps the file for reuse.
                    mode = "TRUNCATE" if self._truncate_wal else "RESTART"
                    with self._write_lock:
                        busy = conn.execute(f"PRAGMA wal_checkpoint({mode})").fetchone()[0]
                    if mode == "TRUNCATE" and not busy:
                        self._truncate_wal = False
                except sqlite3.Error as exc:  # busy or gone; the next round tries again
                    log.debug("WAL checkpoint skipped: %s", exc)
        finally:
            conn.close()

    def close(self) -> None:
        self._closing.set()
        if self._checkpointer is not None:
            self._checkpointer.join(5)
        if self.kind == "postgres":
            self.db.close_all()  # type: ignore[attr-defined]
        elif not self.db.is_closed():
            self.db.close()

    # -- connections and transactions

    @contextlib.contextmanager
    def session(self) -> Iterator[None]:
        """Hold one pooled connection for the block (re-entrant; a no-op for SQLite)."""
        if self.kind != "postgres":
            yield
            return
        local = self._local
        depth = getattr(local, "depth", 0)
        if not depth and getattr(local, "keep", False) and _monotonic() - getattr(local, "used", 0.0) > CHECK_AFTER:
            drop_if_closed_by_server(self.db)  # a database thread's kept connection, idle a while
        if self.db.is_closed():  # also inside an outer session whose connection failed
            with translated(self.url):
                self.db.connect(reuse_if_open=True)
        local.depth = depth + 1
        broken = False
        try:
            yield
        except (StorageUnavailable, *UNAVAILABLE):
            broken = True
            raise
        finally:
            local.depth -= 1
            local.used = _monotonic()
            if broken:
                # Never hand a connection that failed back to the pool, nor try it again: after
                # a database restart every pooled connection is dead, and would fail once each.
                with contextlib.suppress(Exception):
                    self.db.manual_close()  # type: ignore[attr-defined]
            elif self._local.depth == 0 and not getattr(self._local, "keep", False):
                self.db.close()

    def keep_connection(self) -> None:
        """This thread keeps its pooled connection between sessions (a database thread of the
        server's): taking it from the pool and handing it back each time goes through one
        lock shared by every thread, and showed as a third of the time under load."""
        self._local.keep = True

    @contextlib.contextmanager
    def _write(self, *, one_statement: bool = False) -> Iterator[Any]:
        """One write transaction; yields a cursor. Never held across user code.

        ``one_statement``: the block executes a single statement, which Postgres runs as a
        transaction of its own (autocommit), so BEGIN and COMMIT, two round trips, are left out.
        One context manager, not a stack of them: this runs once per committed batch of
        steps, and each layer of ``contextlib`` costs microseconds on the hot path."""
        if self._checkpointer is None:
            self._start_checkpointer()
        bracket = not (one_statement and self.kind == "postgres")
        try:
            with self._connection(), self._write_lock:
                self.write_transactions += 1
                cursor = self.db.cursor()
                if bracket:
                    cursor.execute(self._begin)
                try:
                    yield cursor
                    if bracket:
                        cursor.execute("COMMIT")
                except BaseException:
                    if bracket:
                        self._rollback(cursor)
                    raise
        except UNAVAILABLE as exc:
            raise self._write_failed(unavailable(self.url, exc)) from exc
        except StorageUnavailable as exc:
            self._write_failed(exc)
            raise
        if self.write_error is not None:
            self._write_worked()

    def _write_worked(self) -> None:
        """A write worked after one failed: the trouble is over (for /health and the log)."""
        if self.write_error is not None:
            log.warning("database writes work again after %.1fs", _monotonic() - self.write_error[1])
            self.write_error = None

    def _connection(self) -> Any:
        """A pooled connection held for the block on Postgres; SQLite's are per thread, at hand."""
        return self.session() if self.kind == "postgres" else _NOTHING

    def _write_failed(self, exc: StorageUnavailable) -> StorageUnavailable:
        self.last_write_failure = _monotonic()
        self._truncate_wal = True
        if self.write_error is None:
            self.write_error = (exc.message, self.last_write_failure)
        return exc

    def _rollback(self, cursor: Any) -> None:
        """Roll back; a connection that cannot (its transaction still open) is dropped, or
        every later BEGIN on it would fail and the WAL could never be checkpointed."""
        with contextlib.suppress(Exception):
            cursor.execute("ROLLBACK")
        if self.kind == "postgres":
            return
        connection = self.db.connection()
        if getattr(connection, "in_transaction", False):
            log.warning("dropping a SQLite connection whose transaction could not be rolled back")
            with contextlib.suppress(Exception):
                self.db.close()

    def _read(self, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        """A read; on Postgres, one whose connection the server closed (a restart: every kept
        connection is dead, even one used a moment ago) is tried once more on a new one, as on
        the loop's connections. A read is safe to repeat; a statement timeout is not repeated."""
        for again in (False, True):
            try:
                with self._connection(), self._read_lock:
                    cursor = self.db.cursor()
                    cursor.execute(sql, params)
                    rows: list[tuple[Any, ...]] = cursor.fetchall()
                    return rows
            except UNAVAILABLE as exc:
                lost = isinstance(exc, (psycopg.OperationalError, psycopg.InterfaceError))  # the connection, not the pool
                if again or not lost or isinstance(exc, psycopg.errors.QueryCanceled):
                    raise unavailable(self.url, exc) from exc
        raise AssertionError("unreachable")

    # -- schema

    def ensure_schema(self) -> None:
        """Create or upgrade the tables; the applied version is recorded in ``flowrt_schema``."""
        SchemaVersion = self.models["SchemaVersion"]
        with self._write_lock:
            with self.db.atomic():
                if self.kind == "postgres":
                    # Many processes may start at once on an empty schema; one creates and
                    # migrates, the others wait here. The lock comes first: two concurrent
                    # CREATE TABLE IF NOT EXISTS would collide in Postgres's catalog.
                    self.db.execute_sql("SELECT pg_advisory_xact_lock(7423001)")
                self.db.create_tables([SchemaVersion], safe=True)
                current = self.db.execute_sql("SELECT MAX(version) FROM flowrt_schema").fetchone()[0] or 0
                if current > SCHEMA_VERSION:
                    raise StorageUnavailable(
                        f"database schema version {current} is newer than this flowrt ({SCHEMA_VERSION}); upgrade flowrt"
                    )
                for version in range(current + 1, SCHEMA_VERSION + 1):
                    MIGRATIONS[version](self.models)
                    SchemaVersion.create(version=version, applied_at=self.clock.now_ms())
                    log.info("applied flowrt schema version %d", version)

    def schema_version(self) -> int:
        return int(self._read("SELECT MAX(version) FROM flowrt_schema", ())[0][0] or 0)

    def ping(self) -> bool:
        try:
            self._read("SELECT 1", ())
            return True
        except Exception:  # noqa: BLE001 - health checks report, never raise
            return False

    LOW_DISK_BYTES = 1 << 20
    """Below this much free space on a SQLite database's disk, writes are about to fail."""

    def write_trouble(self, recent: float = 5.0) -> str | None:
        """Why writes cannot be trusted right now, or None: a write failed in the last
        ``recent`` seconds (on a full disk some writes still fit in the WAL, so one that
        works says little), or a SQLite file's disk is (nearly) full. Names no path."""
        if self.last_write_failure is not None and _monotonic() - self.last_write_failure < recent:
            return "database writes are failing"
        if self.kind == "sqlite":
            try:
                stat = os.statvfs(os.path.dirname(os.path.abspath(self.db.database)))
            except OSError:
                return None
            free = stat.f_bavail * stat.f_frsize
            if free < self.LOW_DISK_BYTES:
                return f"the database's disk is full ({free // 1024} KiB free)"
        return None

    def probe_write(self) -> bool:
        """After a failed write, whether writes work again (a one-row write that changes nothing).

        A ping reads; a full disk lets reads through while every write fails."""
        if self.write_error is None:
            return True
        try:
            with self._write() as cur:
                cur.execute(
                    "UPDATE flowrt_schema SET applied_at = applied_at WHERE version = (SELECT MAX(version) FROM flowrt_schema)"
                )
            return True
        except Exception:  # noqa: BLE001 - health checks report, never raise
            return False

    # -- runs: hot path

    def run_insert(self, row: RunRow, events: list[EventRow], start_key: tuple[str, str] | None = None) -> Write:
        """The write that inserts a run with its first events, for :attr:`writer`.

        With ``start_key`` (key, fingerprint), the key is stored in the same transaction; if
        the key is taken, nothing is inserted and the write's outcome is the
        ``(run_id, fingerprint)`` it was stored with (else None)."""
        values = run_values(row)
        sql = self._sql
        statement: Statement | None = None
        if sql.one_statement and events:
            statement = (sql.run_with_events(len(events)), [*values, *(v for e in events for v in e)], _inserted)

        def apply(cur: Any, write: Write) -> tuple[str, str] | None:
            if start_key is not None:
                cur.execute(sql.insert_start_key, (start_key[0], row.run_id, start_key[1], row.created_at))
                if cur.rowcount != 1:
                    cur.execute(sql.get_start_key, (start_key[0],))
                    found = cur.fetchone()
                    return (found[0], found[1])
            if statement is not None:
                cur.execute(statement[0], statement[1])
                return None
            cur.execute(sql.insert_run, values)
            self._insert_events(cur, events)
            if row.lease_owner is not None:
                write.mark = self.change_mark(cur)
            return None

        return Write(
            apply,
            lock_key=None if start_key is None else "start:" + start_key[0],
            # Alone in its transaction, a write of one statement needs no BEGIN/COMMIT (see writer).
            statement=statement if start_key is None else None,
        )

    def get_run(self, run_id: str) -> RunRow | None:
        rows = self._read(self._sql.get_run, (run_id,))
        return RunRow(*rows[0]) if rows else None

    def change_mark(self, cur: Any) -> Any:
        """Inside a write transaction: a mark for :meth:`unchanged_since`, or None where there is none.

        SQLite counts the commits of *other* connections (``PRAGMA data_version``); read here,
        with this transaction holding the write lock, nothing can have slipped in between."""
        if self.kind == "postgres":
            return None
        # One per transaction: a batch of many steps shares it (transactions take turns here).
        number, mark = self._mark_of_transaction
        if number != self.write_transactions:
            cur.execute("PRAGMA data_version")
            mark = (self.db.connection(), cur.fetchone()[0], self.edits)
            self._mark_of_transaction = (self.write_transactions, mark)
        return mark

    def unchanged_since(self, mark: Any) -> bool:
        """Whether nothing that could move a leased run has been written since ``mark``: no
        commit by another connection (other processes, other threads' connections), and none
        of this process's :attr:`edits`. Then a row this process stored with the mark is
        still the run as stored, save for its lease's expiry (a parked run's next step starts
        from it, no read). False on Postgres (no such count), on a thread whose connection is
        not the one the mark was taken on, or if the check fails."""
        if mark is None:
            return False
        connection, version, edits = mark
        try:
            with self._read_lock:
                return (
                    edits == self.edits
                    and self.db.connection() is connection
                    and connection.execute("PRAGMA data_version").fetchone()[0] == version
                )
        except Exception:  # noqa: BLE001 - the read that follows will say what is wrong
            return False

    def claim(self, run_id: str, owner: str, ttl_ms: int) -> RunRow | None:
        """Take the lease of an active run that nobody holds (or whose holder's lease expired)."""
        now = self.clock.now_ms()
        with self._write() as cur:
            cur.execute(self._sql.claim_by_id, (owner, now + ttl_ms, run_id, now, owner))
            row = cur.fetchone()
        return RunRow(*row) if row else None

    def claim_next(self, owner: str, ttl_ms: int, flows: Sequence[str], *, timers: bool) -> RunRow | None:
        """Claim the oldest runnable RUNNING run, or (``timers``) the oldest due WAITING timer,
        among the flows this process has (``"flow_id@version"`` keys).

        A read probes first, so an idle driver takes no write lock.
        """
        if not flows:
            return None
        now = self.clock.now_ms()
        probe, claim = self._sql.claim_next(timers, len(flows))
        if not self._read(probe, (now, now, owner, *flows)):
            return None
        with self._write() as cur:
            cur.execute(claim, (owner, now + ttl_ms, now, now, owner, *flows, now, owner))
            row = cur.fetchone()
        return RunRow(*row) if row else None

    def claim_next_write(self, owner: str, ttl_ms: int, flows: Sequence[str]) -> Write:
        """:meth:`claim_next` (RUNNING runs) as a write for :attr:`writer`: its outcome is the
        claimed row or None. No probe first: it rides in a transaction being written anyway."""
        _, claim = self._sql.claim_next(False, len(flows))

        def apply(cur: Any, write: Write) -> RunRow | None:
            now = self.clock.now_ms()  # when it lands, which may be a handler's time after it was queued
            cur.execute(claim, (owner, now + ttl_ms, now, now, owner, *flows, now, owner))
            row = cur.fetchone()
            if not row:
                return None
            write.mark = self.change_mark(cur)
            return RunRow(*row)

        return Write(apply)

    def step_write(
        self,
        row: RunRow,
        epoch: int,
        events: list[EventRow],
        idempotency: tuple[Any, ...] | None = None,
        *,
        again: bool = False,
        in_place: bool = False,
    ) -> Write:
        """The write of one step, for :attr:`writer`: the run row, events and idempotency record.

        ``in_place``: the step left the run's status and timer as stored, so they are not
        written (no index entry is rewritten).

        Its outcome is None when written; :class:`LeaseLost` (nothing written) when the lease
        moved on meanwhile: the run was cancelled, or reclaimed after our lease expired; and,
        when trying ``again`` after a failed try, :class:`DuplicateStep` (nothing written)
        when that try landed after all: its first event is stored.
        """
        sql = self._sql
        params = (*(step_values_in_place if in_place else step_values)(row), row.run_id, epoch)
        update = sql.commit_step_in_place if in_place else sql.commit_step
        statement: Statement | None = None
        if sql.one_statement and events:
            count = len(events)

            def moved(rowcount: int) -> LeaseLost | None:
                # the events are written only if the update was: none means it matched no row
                return None if rowcount == count else LeaseLost()

            statement = (sql.step_with_events(count, in_place), [*params, *(v for e in events for v in e)], moved)

        def apply(cur: Any, write: Write) -> LeaseLost | DuplicateStep | None:
            if again and events:
                cur.execute(sql.event_exists, (events[0][0], events[0][1]))
                if cur.fetchone() is not None:
                    return DuplicateStep(f"run {row.run_id}: event {events[0][1]} is stored already")
            if statement is not None:
                cur.execute(statement[0], statement[1])
                lost: LeaseLost | None = statement[2](cur.rowcount)
                if lost is not None:
                    return lost
            else:
                cur.execute(update, params)
                if cur.rowcount != 1:
                    return LeaseLost()
                self._insert_events(cur, events)
            if idempotency is not None:
                cur.execute(sql.insert_idempotency, idempotency)
            if row.lease_owner is not None:
                write.mark = self.change_mark(cur)
            return None

        return Write(
            apply,
            # (flow, node, key): the record's primary key, as _lock_order compares them
            lock_key=None if idempotency is None else "node:" + "\x00".join(idempotency[:3]),
            # Alone in its transaction, a write of one statement needs no BEGIN/COMMIT (see writer).
            statement=statement if not again and idempotency is None else None,
        )

    def release(self, run_id: str, epoch: int) -> None:
        with self._write() as cur:
            cur.execute(self._sql.release, (run_id, epoch))

    def extend(self, run_id: str, owner: str, epoch: int, expires: int) -> bool:
        """Extend ``owner``'s lease of epoch ``epoch``, unless another process took it (its
        expiry passed and a claim bumped the epoch); True when extended."""
        p = self.db.param
        with self._write() as cur:
            cur.execute(
                f"UPDATE flowrt_runs SET lease_expires_at = {p} WHERE run_id = {p} AND lease_owner = {p} "
                f"AND lease_epoch = {p}",
                (expires, run_id, owner, epoch),
            )
            return bool(cur.rowcount == 1)

    def cancel(self, run_id: str, reason: str | None, event: tuple[Any, ...]) -> RunRow | None:
        """End an active run as CANCELLED, fencing off any step still in flight."""
        now = self.clock.now_ms()
        with self._write() as cur:
            self.edits += 1
            cur.execute(self._sql.cancel, (now, run_id))
            row = cur.fetchone()
            if row is None:
                return None
            run = RunRow(*row)
            self._insert_events(cur, [(run_id, run.last_seq, now, *event, None)])
        return run

    def idempotent_result(self, flow_id: str, node_id: str, key: str) -> tuple[str, str | None] | None:
        rows = self._read(self._sql.get_idempotency, (flow_id, node_id, key))
        return (rows[0][0], rows[0][1]) if rows else None

    def _insert_events(self, cur: Any, events: list[EventRow]) -> None:
        if not events:
            return
        cur.execute(self._sql.insert_events(len(events)), [v for e in events for v in e])


class LeaseLost(Exception):
    """The run's lease moved on while we were executing: our result must not be written."""


class DuplicateStep(Exception):
    """The step's events are stored already: an earlier try of this commit landed."""
