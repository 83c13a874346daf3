"""Opening a database by URL, and what its drivers' errors mean.

Backends differ here only: WAL pragmas for a SQLite file, one shared connection for
``memory://``, a connection pool for Postgres. Driver errors that mean "the database is not
there right now" become :class:`~flowrt.errors.StorageUnavailable` (HTTP 503, CLI exit 5),
never a raw driver error. Importing it registers sqlite3 adapters (see
:func:`_register_sqlite_adapters`).
"""

from __future__ import annotations

import contextlib
import os
import select
import sqlite3
import urllib.parse
from typing import Any, Iterator

import peewee as pw
import psycopg
from playhouse.pool import MaxConnectionsExceeded, PooledPostgresqlDatabase

from .errors import InvalidInput, StorageUnavailable
from .runs import EventType, RunStatus

DEFAULT_URL = "sqlite:///flowrt.db"


def _register_sqlite_adapters() -> None:
    """Adapters for the parameters a step binds that are not exact str, int or float.

    The sqlite3 module binds exact str, int, float and bytearray parameters directly. Anything
    else -- None (every NULL column), and a run's status or an event's type (StrEnum members)
    -- goes through its adapter registry, then ``PrepareProtocol.__adapt__``: a class attribute
    that does not exist, so Python formats an AttributeError message only to throw it away.
    That was some 11 parameters a request on the server and ~3% of its instructions
    (docs/performance.md, "NULLs and statuses"). Registered, each is one dict lookup and a
    call: None stays None (bound as NULL), a StrEnum's ``str()`` is its value, what is stored.

    The registry is the sqlite3 module's, for the whole process: a user's own sqlite3 use binds
    these the same way as without it (an adapter of theirs for NoneType would be replaced).
    """
    sqlite3.register_adapter(type(None), _null)
    for enum in (EventType, RunStatus):
        sqlite3.register_adapter(enum, str)


def _null(value: None) -> None:
    return None


_register_sqlite_adapters()


def describe_url(url: str) -> str:
    """The URL without its password, for logs and /health."""
    parts = urllib.parse.urlsplit(url)
    if not parts.password:
        return url  # unchanged: urlunsplit would turn sqlite:///x.db into sqlite:/x.db
    netloc = parts.netloc.replace(":" + parts.password + "@", ":***@")
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


def open_database(url: str, *, pool_size: int = 16) -> tuple[str, pw.Database]:
    """``(kind, database)`` for a URL: kind is ``sqlite``, ``memory`` or ``postgres``."""
    if url in ("memory://", "memory:", ":memory:", "sqlite://:memory:", "sqlite:///:memory:"):
        # One connection shared by all threads (guarded by Storage's lock): a
        # :memory: database exists per connection.
        db = pw.SqliteDatabase(":memory:", thread_safe=False, check_same_thread=False)
        return "memory", db
    parts = urllib.parse.urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme == "sqlite":
        path = url[len("sqlite:///") :] if url.startswith("sqlite:///") else parts.path
        if not path:
            raise InvalidInput(f"bad SQLite URL {url!r}: expected sqlite:///path/to/file.db")
        folder = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(folder):
            raise StorageUnavailable(f"cannot open {url}: folder {folder} does not exist")
        db = pw.SqliteDatabase(
            path,
            timeout=30,
            check_same_thread=False,
            pragmas={
                # New files give pruned runs' space back in small steps (flowrt.retention);
                # on an existing file this takes effect only after one full VACUUM.
                "auto_vacuum": "incremental",
                "journal_mode": "wal",
                "synchronous": "normal",
                "busy_timeout": 30000,
                "foreign_keys": 0,
                # Storage checkpoints in a thread of its own (see _checkpoint_loop), so no
                # commit pays for copying the WAL back into the database.
                "wal_autocheckpoint": 0,
                # After a checkpoint rewinds the WAL, give back disk beyond 64 MiB.
                "journal_size_limit": 64 * 1024 * 1024,
            },
        )
        return "sqlite", db
    if scheme in ("postgres", "postgresql", "postgresql+psycopg", "postgres+psycopg"):
        conninfo = urllib.parse.urlunsplit(parts._replace(scheme="postgresql"))
        db = CheckedPool(
            conninfo,
            # the server's database threads keep one each; drivers and others share the rest
            max_connections=2 * pool_size + 4,
            stale_timeout=300,
            timeout=30,
            connect_timeout=5,
        )
        return "postgres", db
    raise InvalidInput(
        f"unsupported database URL {describe_url(url)!r}: use sqlite:///file.db, memory:// or postgresql://..."
    )


CHECK_AFTER = 1.0
"""A Postgres connection unused for longer than this (seconds) is checked before use: if its
socket has something to read while no statement is in flight, the server has closed it (a
restart, an administrator's pg_terminate_backend) and it is replaced rather than failing the
statement it would carry. Connections in steady use are not checked (that would cost a system
call a statement). The loop's connections (:mod:`flowrt.loop_connections`) and the connection a
database thread keeps (:meth:`flowrt.storage.Storage.session`) are checked so; the threads' pool
checks every connection it hands out (:class:`CheckedPool`)."""


class CheckedPool(PooledPostgresqlDatabase):  # type: ignore[misc]
    """peewee's Postgres pool, with the check of a connection taken out of it made by its socket.

    peewee checks each connection it hands out with a round trip (``SELECT 1``): a step taken
    from a thread -- a read and a commit, each on a connection taken from the pool -- paid two
    round trips more than its own two (measured: every tick of ``flowrt bench --mode tick``).
    :func:`closed_by_server` tells a connection the server closed (a restart, a terminated
    backend) without one; a connection left inside a transaction is rolled back first, as
    peewee does."""

    def _is_closed(self, conn: Any) -> bool:
        status = conn.info.transaction_status
        if status == psycopg.pq.TransactionStatus.UNKNOWN:
            return True
        if status != psycopg.pq.TransactionStatus.IDLE:
            try:
                conn.rollback()
            except Exception:  # noqa: BLE001 - not usable: the pool discards it
                return True
        return closed_by_server(conn)


def closed_by_server(connection: Any) -> bool:
    """Whether an idle psycopg connection (sync or async) is closed, or its socket readable or
    hung up while no statement is in flight: the server's goodbye, or its end. One ``poll``
    (not ``select``: a busy server's descriptors go past select's 1024), no round trip."""
    if connection.closed or connection.broken:
        return True
    try:
        poller = select.poll()
        poller.register(connection.pgconn.socket, select.POLLIN)
        return bool(poller.poll(0))
    except (OSError, ValueError, psycopg.Error):
        return True


def drop_if_closed_by_server(db: pw.Database) -> None:
    """Give up this thread's open connection if the server has closed it (after a restart of
    Postgres), so the statement it would carry gets a new one instead of failing with a 503."""
    if not db.is_closed() and closed_by_server(db.connection()):
        with contextlib.suppress(Exception):
            db.manual_close()  # type: ignore[attr-defined]


UNAVAILABLE = (
    MaxConnectionsExceeded,  # every pooled connection in use for `timeout` seconds: wait and try again
    pw.OperationalError,
    pw.InterfaceError,
    sqlite3.OperationalError,
    sqlite3.InterfaceError,
    psycopg.OperationalError,
    psycopg.InterfaceError,
)


DUPLICATE = (pw.IntegrityError, sqlite3.IntegrityError, psycopg.IntegrityError)


def unavailable(url: str, exc: BaseException) -> StorageUnavailable:
    """What a driver's connection error means to flowrt: the database is away."""
    return StorageUnavailable(f"database {describe_url(url)} unavailable: {exc}".strip())


@contextlib.contextmanager
def translated(url: str) -> Iterator[None]:
    try:
        yield
    except UNAVAILABLE as exc:
        raise unavailable(url, exc) from exc
