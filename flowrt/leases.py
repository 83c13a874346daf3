"""The leases this process holds on runs: renewed while held, handed back when done.

A lease is a run's ``lease_owner`` / ``lease_expires_at`` / ``lease_epoch`` columns. Every
step commit is fenced by the epoch, so a holder that lost its lease writes nothing.

While the database is away, renewals and releases fail. That is not a lost worker: the
holder keeps its leases in hand, the renewer keeps trying, and a release that could not
be written is retried until it lands, so the run is not left to expire and be
"recovered" from a process that never stopped.

A lease can also be *parked*: a tick's commit kept it because the run goes on, so the next
tick of the run here, or a driver here, continues with no claim (one write transaction per
step instead of two). To the database a parked lease is held, like a driver's between two
steps: other processes wait for it, and if this process dies the next claimer records the
step it may have been running (``WORKER_LOST``). So a parked lease is kept briefly: after
:attr:`Leases.park_seconds` without a next step it is handed back (many in one
transaction), and at close all of them are.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import contextvars
import logging
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable

from .errors import RunBusy
from .storage import RunRow, Storage

log = logging.getLogger("flowrt.leases")

MAX_LEASE_TTL = 86_400.0
"""The longest lease TTL taken, in seconds (a day): the time a dead process's runs stay locked,
so anything longer is a typo; and an unbounded one (``inf``) has no expiry time to store."""

HandBacks = Callable[[Callable[[], None]], "concurrent.futures.Future[None]"]
"""Given a hand-back's write, submit it to a database thread; its future."""

hand_backs_elsewhere: contextvars.ContextVar[HandBacks | None] = contextvars.ContextVar(
    "flowrt_hand_backs_elsewhere", default=None
)
"""Set by the runner while the step core runs a step on an event loop on Postgres, where the loop
waits for no database call of a thread: how that step's lease hand-backs are written instead.
Unset, a hand-back is written at once."""


@dataclass(slots=True)
class Lease:
    run_id: str
    epoch: int
    held: bool = True
    executing: bool = False
    """A handler of this run is running right now: if the step is abandoned, the lease is
    expired rather than released, so the next claimer records the interrupted attempt."""
    node_id: str | None = None
    executing_since: float = 0.0
    park: bool = False
    """At the end of the hold, still held: park it for this process's next step of the run
    rather than handing it back."""
    stored: tuple[Any, Any] = (None, None)
    """The run's ``(status, wake_at)`` as stored now: a step that keeps both is written in
    place (:meth:`flowrt.storage.Storage.step_write`)."""
    row: RunRow | None = None
    """The run as this lease's last commit stored it (parked with the lease)."""
    mark: Any = None
    """That commit's :meth:`~flowrt.storage.Storage.change_mark`."""


@dataclass(slots=True)
class Parked:
    """A parked lease: its epoch, since when (monotonic), whether this process's drivers may
    take it, and -- when this process stored the run last -- the row it stored and the
    storage's change mark of that commit, so the next step here can start without a read."""

    run_id: str
    epoch: int
    since: float
    offered: bool = False
    row: RunRow | None = None
    mark: Any = None


class Leases:
    """Tracks, renews and hands back this process's leases (one per engine)."""

    def __init__(
        self, storage: Storage, owner: str, ttl_ms: int, on_handed_back: Callable[[], None] | None = None
    ) -> None:
        self.storage = storage
        self.owner = owner
        self.ttl_ms = ttl_ms
        self._held: dict[str, Lease] = {}
        self._lock = threading.Lock()
        self._to_release: dict[str, int] = {}  # run_id -> epoch: releases the database missed
        self.earlier: dict[str, tuple[int, int]] = {}
        """An earlier engine's leases with this explicit owner id, not run out when this one started:
        run_id -> (epoch, expiry); see :meth:`end_earlier_engines_lapsed`."""
        self._to_expire: set[str] = set()
        self._renewer: threading.Thread | None = None
        self._renewer_checked = 0.0
        self._stopping = threading.Event()
        self._failing_since: float | None = None
        self._parked: dict[str, Parked] = {}
        # Leases being handed back right now: parked ones nobody continued, and releases written
        # from a database thread (hand_backs_elsewhere). Still ours in the database.
        self._returning: dict[str, Parked] = {}
        self._returned = threading.Condition(self._lock)
        self.park_seconds = 1.0
        self._on_handed_back = on_handed_back  # parked leases went back: their runs are anyone's now

    # -- holding

    def hold(self, row: RunRow) -> _Hold:
        """Track a claimed lease: renewed while held, handed back if the block ends still holding it.

        A ``with`` block yielding the :class:`Lease` (a small class, not a generator context
        manager: this runs on every step, and ``contextlib``'s layers cost microseconds)."""
        return _Hold(self, row)

    def _took(self, row: RunRow) -> Lease:
        lease = Lease(row.run_id, row.lease_epoch, stored=(row.status, row.wake_at))
        with self._lock:
            self._held[row.run_id] = lease
        self._ensure_renewer()
        return lease

    def _let_go(self, row: RunRow, lease: Lease) -> None:
        with self._lock:
            mine = self._held.get(row.run_id) is lease  # else forgotten: cancelled under us
            if mine:
                del self._held[row.run_id]
            parked = mine and lease.held and lease.park and not lease.executing and not self._stopping.is_set()
            if parked:
                kept = Parked(row.run_id, lease.epoch, time.monotonic(), row=lease.row, mark=lease.mark)
                self._parked[row.run_id] = kept
        if lease.held and not parked:
            self._hand_back(lease)

    # -- parking

    def park_new(
        self, run_id: str, epoch: int, *, for_drivers: bool = False, row: RunRow | None = None, mark: Any = None
    ) -> None:
        """Park a lease this process just took: a run inserted holding it (a start whose first
        step follows here), or a driver's claim ahead (``for_drivers``); ``row`` and ``mark``
        as the write that took it stored the run, if it is known to have landed."""
        with self._lock:
            if not self._stopping.is_set():
                self._parked[run_id] = Parked(run_id, epoch, time.monotonic(), for_drivers, row, mark)
                release = False
            else:
                release = True  # closing: nothing here will step it, and the park is emptied already
        if release:
            elsewhere = hand_backs_elsewhere.get()
            if elsewhere is not None:
                self._hand_back_elsewhere(Lease(run_id, epoch), elsewhere)
            else:
                with contextlib.suppress(Exception):
                    self.storage.release(run_id, epoch)
            return
        self._ensure_renewer()

    def offer_to_drivers(self, run_id: str) -> None:
        """The caller that parked ``run_id`` will not continue it: this process's drivers may."""
        with self._lock:
            found = self._parked.get(run_id)
            if found is not None:
                found.offered = True

    def returning(self, run_id: str) -> bool:
        """Whether this run's lease is being handed back right now (see :meth:`unpark`)."""
        return run_id in self._returning

    def unpark(self, run_id: str) -> Parked | None:
        """This process's parked lease of ``run_id``, now taken out of the park.

        If that lease is being handed back at this moment, wait for the hand-back: then the
        run is free to claim afresh (or, if the write failed, parked here again). Other runs'
        ticks do not wait for it; the step core waits without blocking (``returning``) first,
        so an event loop only ever waits here for the instant between the two."""
        with self._lock:
            while run_id in self._returning:
                self._returned.wait()
            return self._parked.pop(run_id, None)

    def take_parked(self) -> Parked | None:
        """A parked lease offered to the drivers, taken out of the park.

        Leases parked for their caller's next step (a tick, a long-polled start) are not
        offered: a driver taking one would turn that step into RUN_BUSY."""
        with self._lock:
            for run_id, parked in self._parked.items():
                if parked.offered:
                    del self._parked[run_id]
                    return parked
        return None

    def is_parked(self, run_id: str) -> bool:
        return run_id in self._parked

    def parked(self) -> int:
        """Parked leases, counting those being handed back right now (still ours in the database)."""
        with self._lock:
            return len(self._parked) + len(self._returning)

    def _hand_back_idle(self, now: float) -> None:
        """Release the parked leases nobody continued in :attr:`park_seconds`, in one transaction.

        They leave the park for a set of leases being returned while the write runs, outside
        the lock, so a slow database holds up no other run's step (the server's event loop
        takes this lock). A tick of one of them waits for the write (:meth:`unpark`) and then
        claims the run afresh, instead of finding it neither parked nor free (RUN_BUSY)."""
        with self._lock:
            idle = [p for p in self._parked.values() if now - p.since >= self.park_seconds]
            if not idle:
                return
            for parked in idle:
                del self._parked[parked.run_id]
                self._returning[parked.run_id] = parked
        try:
            self.storage.release_many([(p.run_id, p.epoch) for p in idle])
        except BaseException:
            with self._lock:  # the database is away: still ours, parked again, tried again later
                for parked in idle:
                    if parked.run_id in self._returning:  # (at close too: abandon_all releases them)
                        self._parked.setdefault(parked.run_id, parked)
            raise
        finally:
            with self._lock:
                for parked in idle:
                    self._returning.pop(parked.run_id, None)
                self._returned.notify_all()
        if self._on_handed_back is not None:
            self._on_handed_back()

    def _hand_back(self, lease: Lease) -> None:
        elsewhere = hand_backs_elsewhere.get()
        if elsewhere is not None:
            self._hand_back_elsewhere(lease, elsewhere)
        else:
            self._hand_back_now(lease)

    def hand_back_untracked(self, run_id: str, epoch: int) -> None:
        """Hand back a lease this process holds in the database but tracks nowhere (a claim
        whose request was cut off as it landed)."""
        self._hand_back(Lease(run_id, epoch))

    def _hand_back_elsewhere(self, lease: Lease, submit: HandBacks) -> None:
        """Write the hand-back in a database thread (see :data:`hand_backs_elsewhere`). Until
        it lands, a release counts as a lease being handed back, so a step of the run here
        waits for it (:meth:`returning`) instead of finding the run held. (An expiry does not:
        its run was interrupted mid-node, and a tick meanwhile is RUN_BUSY, as it was.)"""
        returning = None if lease.executing else Parked(lease.run_id, lease.epoch, time.monotonic())
        if returning is not None:
            with self._lock:
                self._returning[lease.run_id] = returning

        def hand_back() -> None:
            try:
                self._hand_back_now(lease)
            except BaseException:  # noqa: BLE001 - a thread's future would keep it unseen
                log.exception("run %s: handing its lease back failed", lease.run_id)
            finally:
                if returning is not None:
                    with self._lock:
                        if self._returning.get(lease.run_id) is returning:
                            del self._returning[lease.run_id]
                        self._returned.notify_all()
            if returning is not None and self._on_handed_back is not None:
                self._on_handed_back()

        try:
            future = submit(hand_back)
        except RuntimeError:  # the database threads are shut down (closing): here, then
            hand_back()
            return
        # cancelled, queued, by the database threads' shutdown (closing): here, then
        future.add_done_callback(lambda done: hand_back() if done.cancelled() else None)

    def _hand_back_now(self, lease: Lease) -> None:
        try:
            if lease.executing:
                # Interrupted inside the handler (Ctrl-C, an abandoned step at shutdown): like
                # a crash, the next claimer records the attempt as an interruption.
                self.storage.expire(self.owner, [lease.run_id])
            else:
                self.storage.release(lease.run_id, lease.epoch)
        except Exception as exc:  # noqa: BLE001 - the database is away: try again in the background
            log.warning("run %s: could not hand its lease back (%s); retrying in the background", lease.run_id, exc)
            with self._lock:
                if lease.executing:
                    self._to_expire.add(lease.run_id)
                else:
                    self._to_release[lease.run_id] = lease.epoch
            self._ensure_renewer()

    def forget(self, run_id: str) -> None:
        """The run was cancelled under us: its lease is gone already."""
        with self._lock:
            self._held.pop(run_id, None)
            self._parked.pop(run_id, None)
            if self._returning.pop(run_id, None) is not None:
                self._returned.notify_all()

    def in_flight(self, *, blocking: bool = True) -> list[Lease]:
        """Leases whose handler is running right now (for shutdown messages).

        ``blocking=False`` is for signal handlers, which must never wait on a lock the
        interrupted thread may hold: then the dict is read without it (a snapshot)."""
        if blocking:
            with self._lock:
                return [lease for lease in self._held.values() if lease.executing]
        try:
            return [lease for lease in list(self._held.values()) if lease.executing]
        except RuntimeError:  # changed size meanwhile (another thread): treat as nothing known
            return []

    def count(self) -> int:
        with self._lock:
            return len(self._held)

    def end_earlier_engines_lapsed(self) -> int:
        """The leases an earlier engine with this (explicit) owner id still had when this one
        started (:func:`end_lapsed_leases_of_an_earlier_engine`), ended as each runs out, each at
        its epoch: never a lease of this engine's own. Nothing to do, no query, once all are."""
        now = self.storage.clock.now_ms()
        due = [(run_id, epoch) for run_id, (epoch, expiry) in list(self.earlier.items()) if expiry < now]
        if not due:
            return 0
        ended = self.storage.end_lapsed(self.owner, due)
        for run_id, _ in due:
            self.earlier.pop(run_id, None)
        if ended:
            log.warning("%d run(s) an earlier engine with owner %r held: their leases ran out, recovered now", ended, self.owner)
        return ended

    # -- shutdown

    def abandon_all(self) -> list[str]:
        """Expire every lease still held (steps still running at close): the next claimer,
        here after a restart or in another process, recovers them at once."""
        self._stopping.set()
        with self._lock:
            run_ids = list(self._held)
            self._held.clear()
            run_ids.extend(self._to_expire)
            self._to_expire.clear()
            releases = dict(self._to_release)
            self._to_release.clear()
            # and those a hand-back is writing right now: if that write fails, nothing else would
            releases.update((p.run_id, p.epoch) for p in (*self._parked.values(), *self._returning.values()))
            self._parked.clear()
        if run_ids:
            with contextlib.suppress(Exception):
                self.storage.expire(self.owner, run_ids)
        if releases:
            with contextlib.suppress(Exception):
                self.storage.release_many(list(releases.items()))
        return run_ids

    # -- the renewer

    def _ensure_renewer(self) -> None:
        # Called at every step: Thread.is_alive() is slow enough to show, so it is asked
        # at most once a second (the loop only ends at close, or on a bug).
        now = time.monotonic()
        if self._renewer is not None and now < self._renewer_checked + 1.0:
            return
        self._renewer_checked = now
        if self._renewer is not None and self._renewer.is_alive():
            return
        with self._lock:
            if self._renewer is not None and self._renewer.is_alive():
                return
            self._renewer = threading.Thread(target=self._renew_loop, name="flowrt-lease-renewer", daemon=True)
            self._renewer.start()

    def _renew_loop(self) -> None:
        renew_every = max(self.ttl_ms / 3000, 0.05)
        wake_every = min(renew_every, max(self.park_seconds / 4, 0.05))
        next_renewal = time.monotonic() + renew_every
        while not self._stopping.wait(wake_every):
            now = time.monotonic()
            try:
                if self._parked:
                    self._hand_back_idle(now)
                if now < next_renewal:
                    continue
                next_renewal = now + renew_every
                with self._lock:
                    run_ids = [*self._held, *self._parked]
                    releases = dict(self._to_release)
                    expiries = list(self._to_expire)
                if run_ids:
                    self.storage.renew(self.owner, run_ids, self.ttl_ms)
                tracked = [*run_ids, *releases, *expiries]
                if len(tracked) <= 500:
                    # A lease of ours that ran out although it is tracked nowhere was lost track
                    # of (a park whose check read failed at the wrong moment, a claim ahead whose
                    # answer was lost): nothing here can step it, and this process's claims never
                    # take its own lease, so it is handed back rather than left stuck.
                    self.storage.release_lapsed(self.owner, tracked)
                if expiries:
                    self.storage.expire(self.owner, expiries)
                if releases:
                    self.storage.release_many(list(releases.items()))
            except Exception as exc:  # noqa: BLE001 - retried next interval
                if self._failing_since is None:
                    self._failing_since = time.monotonic()
                    log.warning("lease renewal failed (%s); holding on to %d lease(s) and retrying", exc, self.count())
                next_renewal = now  # try again at the next wake-up
                continue
            with self._lock:
                for run_id in releases:
                    if self._to_release.get(run_id) == releases[run_id]:
                        del self._to_release[run_id]
                self._to_expire.difference_update(expiries)
            if self._failing_since is not None:
                log.warning("lease renewal works again after %.1fs", time.monotonic() - self._failing_since)
                self._failing_since = None


class _Hold:
    """The block of :meth:`Leases.hold`: the lease is tracked on entry, parked or handed back on exit."""

    __slots__ = ("leases", "row", "lease")

    def __init__(self, leases: Leases, row: RunRow) -> None:
        self.leases, self.row = leases, row

    def __enter__(self) -> Lease:
        self.lease = self.leases._took(self.row)
        return self.lease

    def __exit__(self, *exc: object) -> None:
        self.leases._let_go(self.row, self.lease)


def run_busy(row: RunRow, now_ms: int, *, holder_alive: bool = False) -> RunBusy:
    """RUN_BUSY for a run another holder's lease keeps, saying when that lease runs out: after a
    crash, the holder named may be a process that is gone, and then the run waits until then.
    ``holder_alive``: the holder is known to live (SQLite: its liveness lock is held), so there
    is nothing to wait out; should it die, the run is taken over at once."""
    if holder_alive:
        return RunBusy(
            f"run {row.run_id} is being executed by {row.lease_owner}, a live process; retry once its step has "
            "committed (should that process die, the run is taken over at once, its attempt counted as WORKER_LOST)",
            run_id=row.run_id,
        )
    left = ((row.lease_expires_at or 0) - now_ms) / 1000
    when = f"in {left:.0f}s" if left >= 1 else "now"
    return RunBusy(
        f"run {row.run_id} is being executed by {row.lease_owner}; its lease runs out {when} (if that "
        "process is gone, the run is recovered then, its attempt counted as WORKER_LOST)",
        run_id=row.run_id,
    )


def end_lapsed_leases_of_an_earlier_engine(leases: Leases) -> int:
    """At an engine's start with an explicit owner id, which may be an engine's that died
    (Postgres: no liveness proof). A lease of one's own id that merely ran out is never free to
    oneself (a step of this process may be committing), but a starting engine holds none yet:
    every lease of its id is a gone engine's. They are noted (:attr:`Leases.earlier`); those run
    out already are ended now (expiry 0), so they are recovered, WORKER_LOST recorded, instead
    of stuck for good, and the drivers end the rest as each runs out."""
    leases.earlier = {run_id: (epoch, expiry) for run_id, epoch, expiry in leases.storage.leases_of(leases.owner)}
    return leases.end_earlier_engines_lapsed()
