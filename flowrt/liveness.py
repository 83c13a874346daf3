"""Which lease holders of a SQLite file are still alive: each engine holds a lock file while it lives.

Why: after ``kill -9`` and a quick restart, the dead process's leases keep its runs for up to
the lease TTL (30 s by default), and every message meanwhile names a process that no longer
exists as executing them. On SQLite every process of the database is on this machine (one file,
local locks), so the kernel can say whether a holder lives. Each engine takes an exclusive
``flock(2)`` on a file of its own in ``<database>-owners/``, and the kernel drops that lock when
the process ends, however it ends. If a recovery can take a holder's lock, that holder is gone.
Its leases are then ended at once: expired, so the next claim records the interrupted attempt
as ``WORKER_LOST``, as after any crash.

Only a lock that can be *taken* is proof. These holders are taken to be alive, and their
leases run out as before:

- a holder without a file: a flowrt from before this, or a folder this process may not write;
- a holder whose file is locked;
- a holder whose file cannot be read.

Postgres is shared across machines, so there is no such proof there. A forked child inherits
the lock with the file descriptor (the same open file), so a parent that dies while the child
lives stays "alive": that errs on the safe side, too.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import time
from typing import TYPE_CHECKING, Callable

from .errors import InvalidInput

try:
    import fcntl
except ImportError:  # not POSIX: no liveness locks, and leases run out as they always did
    fcntl = None  # type: ignore[assignment]

if TYPE_CHECKING:
    from .storage import Storage

log = logging.getLogger("flowrt.leases")

SUFFIX = ".lock"
HOLD_WAIT = 10.0
"""Seconds :meth:`LivenessLock.hold` waits for its lock while someone else has it."""


def owners_folder(database_path: str) -> str:
    """The folder of lock files beside a SQLite database file."""
    return os.path.abspath(database_path) + "-owners"


class LivenessLock:
    """This engine's lock file: held from :meth:`hold` to :meth:`release`."""

    def __init__(self, folder: str, owner: str) -> None:
        self.folder = folder
        self.owner = owner
        self.path = _path(folder, owner)
        self._fd: int | None = None
        self.inherited = False
        """Whether :meth:`hold` found the file of a gone engine with this same owner id."""

    def hold(self) -> None:
        """Take the lock; without it (a read-only folder, say) the leases simply run out as before.

        A lock held by someone else is waited for, up to :data:`HOLD_WAIT`: a recovery holds a
        gone holder's lock until it has ended that holder's leases, and an engine restarted with
        the same (explicit) owner must not claim a run before that. Still held after the wait,
        it is a live engine's with the same owner id, whose leases could not be told from ours:
        :class:`~flowrt.errors.InvalidInput`."""
        if fcntl is None:
            return
        deadline = time.monotonic() + HOLD_WAIT
        try:
            while True:
                os.makedirs(self.folder, exist_ok=True)
                try:
                    fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
                except FileNotFoundError:
                    if time.monotonic() > deadline:
                        raise
                    continue  # the folder was removed meanwhile, by a holder closing: again
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except OSError as exc:
                    if not isinstance(exc, BlockingIOError):
                        os.close(fd)
                        raise
                    os.close(fd)
                    if time.monotonic() > deadline:
                        raise InvalidInput(
                            f"owner {self.owner!r} is in use by another live engine on this database (its liveness lock "
                            f"in {self.folder} is held): give each engine its own owner, or leave Engine(owner=...) unset"
                        ) from None
                    time.sleep(0.02)
                    continue
                # A sweep may have taken the new, empty file for a gone holder's and removed it
                # between the open and the lock: then the lock is on a file nobody finds. Again.
                if os.fstat(fd).st_ino != _inode(self.path):
                    os.close(fd)
                    continue
                # The file still names this owner: an engine with this (explicit) owner id died
                # here and nobody has swept it yet. Its leases are ours now to end (Engine).
                self.inherited = _read(fd) == self.owner
                try:
                    os.ftruncate(fd, 0)
                    os.write(fd, self.owner.encode())
                except OSError:
                    os.close(fd)
                    raise
                self._fd = fd
                return
        except OSError as exc:
            log.warning("no liveness lock for %s in %s (%s): after a crash its runs wait for their leases", self.owner, self.folder, exc)

    def release(self, keep_file: bool = False) -> None:
        """At close: the file goes (so the folder does not fill up), then the lock, and the
        folder too if it is left empty (a read of the database leaves nothing behind).
        ``keep_file``: an init that failed to end an :attr:`inherited` engine's leases leaves the
        file naming it, so the next start finds that engine gone again."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        if not keep_file:
            with contextlib.suppress(OSError):
                os.unlink(self.path)
        os.close(fd)
        with contextlib.suppress(OSError):  # not empty: another process has the database open
            os.rmdir(self.folder)


def hold_liveness(storage: Storage, owner: str) -> LivenessLock | None:
    """An engine's liveness lock, held: on SQLite, where every holder is on this machine (else None).

    An engine with this same (explicit) owner id that died here, not swept since, left its file
    naming it: its leases are ended now, since they are not this engine's to wait for (and a
    lease of its own that ran out is never free to an engine). If that fails, the file stays, to
    be found again at the next start."""
    if storage.kind != "sqlite":
        return None
    lock = LivenessLock(owners_folder(storage.db.database), owner)
    lock.hold()
    try:
        if lock.inherited:
            end_leases_of(storage, owner)
    except BaseException:
        lock.release(keep_file=True)
        raise
    return lock


def end_leases_of_gone_holders(storage: Storage, lock: LivenessLock | None) -> int:
    """Expire the leases of the holders that are provably gone (SQLite: ``lock`` is this engine's),
    so their runs are recovered now rather than when the leases run out; how many runs."""
    if lock is None or fcntl is None:
        return 0
    ended = 0

    def end(holder: str) -> None:
        nonlocal ended
        ended += end_leases_of(storage, holder)

    sweep(lock.folder, keep=lock.owner, end=end)
    return ended


def end_leases_of(storage: Storage, holder: str) -> int:
    """End a gone holder's leases (expiry 0: the next claim records the lost attempt), and say so."""
    count = storage.expire_holder(holder)
    if count:
        log.warning(
            "%s is gone (no process holds its liveness lock): its %d run(s) are recovered now, "
            "without waiting for their leases to run out", holder, count,
        )  # fmt: skip
    return count


def gone(folder: str, owner: str) -> bool | None:
    """Whether ``owner`` is provably gone: True if its lock file names it and its lock can be
    taken; False if that lock is held (it lives); None if nothing says (no file, or one this
    process may not open). Changes nothing: a lock taken here goes at once (for ``flowrt recover
    --dry-run`` and messages)."""
    if fcntl is None:
        return None
    try:
        fd = os.open(_path(folder, owner), os.O_RDONLY)
    except OSError:
        return None
    try:
        if _read(fd) != owner:
            return None
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False  # held: the holder lives
    except OSError:
        return None
    finally:
        os.close(fd)  # (the lock, if taken, goes with it)
    return True


def sweep(folder: str, keep: str, end: Callable[[str], object]) -> None:
    """For each holder that is gone, ``keep`` (this engine) aside: ``end(holder)``, then remove its
    file. Its lock is held meanwhile, so an engine restarting with the same owner id waits in
    :meth:`LivenessLock.hold` and claims nothing until ``end`` (the expiry of its leases) is done.
    If ``end`` raises, the file stays (found again next time) and the error goes to the caller."""
    try:
        names = [name for name in os.listdir(folder) if name.endswith(SUFFIX)]
    except OSError:
        return
    for name in names:
        _end_if_gone(os.path.join(folder, name), None, keep, end)


def end_leases_if_gone(storage: Storage, lock: LivenessLock | None, holder: str | None) -> bool | None:
    """One holder's :func:`end_leases_of_gone_holders`, for a tick that finds a run held by it:
    True if ``holder`` was gone (its leases now ended, so the tick may claim the run); False if
    it lives (its lock is held); None if nothing says (no lock file: its lease runs out as before)."""
    if lock is None or fcntl is None or holder is None or holder == lock.owner:
        return None
    if _end_if_gone(_path(lock.folder, holder), holder, lock.owner, lambda gone: end_leases_of(storage, gone)):
        return True
    return False if gone(lock.folder, holder) is False else None


def _end_if_gone(path: str, holder: str | None, keep: str, end: Callable[[str], object]) -> bool:
    """If the holder of the lock file at ``path`` (``holder``, when known) is gone: ``end`` it,
    holding its lock, then remove the file. Whether it was gone."""
    fd = _take(path)
    if fd is None:
        return False  # held: alive (or removed meanwhile, by its holder at close or another sweep)
    try:
        owner = _read(fd)
        if owner == keep or (holder is not None and owner != holder):
            return False
        if os.fstat(fd).st_ino != _inode(path):
            return False  # removed or replaced meanwhile, so not the file we locked
        if owner:  # (an empty file: a process killed between creating it and writing its id)
            end(owner)
        with contextlib.suppress(OSError):  # (another user's folder: it stays, and is found again)
            os.unlink(path)
        return True
    finally:
        os.close(fd)


def _path(folder: str, owner: str) -> str:
    """An owner's lock file: named by a hash, since an owner id may hold any character."""
    return os.path.join(folder, hashlib.sha256(owner.encode()).hexdigest()[:24] + SUFFIX)


def _take(path: str) -> int | None:
    """The lock of someone else's file, taken (a descriptor holding it), or None: held, or no file."""
    try:
        fd = os.open(path, os.O_RDONLY)  # (a lock needs no more; another user's file is readable)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    return fd


def _inode(path: str) -> int | None:
    try:
        return os.stat(path).st_ino
    except OSError:
        return None


def _read(fd: int) -> str:
    with contextlib.suppress(OSError, UnicodeDecodeError):
        return os.pread(fd, 4096, 0).decode()
    return ""
