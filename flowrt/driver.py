"""Drivers: background workers that move runs without anyone calling tick.

Each worker claims the oldest runnable run (a RUNNING run that is not parked in a
backoff, a WAITING run whose timer is due, or any of those whose lease expired
because its holder died) and steps it until it waits or ends. Claims go through
the same leases as API ticks, so a driver and a client never execute one run at once.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Callable

from .engine import Engine
from .errors import FlowrtError, StorageUnavailable
from .liveness import end_leases_of_gone_holders, gone

log = logging.getLogger("flowrt.driver")

SWEEP_INTERVAL = 2.0
"""Seconds between two looks by a process's drivers for lease holders that are gone (SQLite:
:mod:`flowrt.liveness`), so a process that survives a crash beside it takes over at once."""

RECOVERY_POLL = 0.25
"""Seconds a recovery worker with nothing to claim waits before looking again while other
workers still drive (it is woken at once when one of them parks a run for this process)."""


class Drivers:
    """A pool of driver threads over one engine."""

    def __init__(self, engine: Engine, workers: int = 2, poll_interval: float = 0.25) -> None:
        self.engine = engine
        self.workers = max(1, workers)
        self.poll_interval = poll_interval
        self._stop = threading.Event()
        # One notification wakes one idle driver: waking them all would send every
        # driver to claim the same new run.
        self._wakeup = threading.Condition()
        self._pending = 0
        self._threads: list[threading.Thread] = []
        self._threads_lock = threading.Lock()
        self.replaced = 0
        """Drivers that died of something nothing else caught, and were replaced."""
        # SQLite: holders that are gone (liveness locks). And with an explicit owner id: the leases
        # an earlier engine with that id held, as they run out (Leases.end_earlier_engines_lapsed).
        self._sweeps = engine.liveness is not None or engine.owner_given
        self._next_sweep = 0.0
        self._sweep_lock = threading.Lock()
        engine.add_listener(self.wake)

    def start(self) -> Drivers:
        for i in range(self.workers):
            self._spawn(i)
        log.info("started %d driver(s)", self.workers)
        return self

    def alive(self) -> int:
        with self._threads_lock:
            return sum(1 for thread in self._threads if thread.is_alive())

    def _spawn(self, index: int) -> None:
        thread = threading.Thread(target=self._supervised, args=(index,), name=f"flowrt-driver-{index}", daemon=True)
        with self._threads_lock:
            if index < len(self._threads):
                self._threads[index] = thread
            else:
                self._threads.append(thread)
        thread.start()

    def _supervised(self, index: int) -> None:
        """A driver that dies anyway (a bug, or a BaseException from somewhere) is replaced."""
        try:
            self._loop()
        except BaseException:  # noqa: BLE001 - the replacement below is the handling
            if self._stop.is_set():
                return
            self.replaced += 1
            log.exception("driver %d died; replacing it (%d replaced so far)", index, self.replaced)
            self._stop.wait(0.5)  # a fault that repeats at once must not spin
            if not self._stop.is_set():
                self._spawn(index)

    def wake(self) -> None:
        with self._wakeup:
            # At most one pending wake a driver: each claim ahead wakes, and wakes piled up
            # under load would send the drivers on as many empty claims once it is over.
            self._pending = min(self._pending + 1, self.workers)
            self._wakeup.notify()

    def stop(self, timeout: float = 30.0) -> None:
        """Stop claiming; runs already claimed finish their current step first."""
        self._stop.set()
        with self._wakeup:
            self._wakeup.notify_all()
        deadline = time.monotonic() + timeout
        with self._threads_lock:
            threads = list(self._threads)
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))

    def _sweep_if_due(self) -> None:
        """Every :data:`SWEEP_INTERVAL`, one driver ends the leases of holders that are gone."""
        now = time.monotonic()
        with self._sweep_lock:
            if now < self._next_sweep:
                return
            self._next_sweep = now + SWEEP_INTERVAL
        if self.engine.liveness is not None:
            end_leases_of_gone_holders(self.engine.storage, self.engine.liveness)
        if self.engine.owner_given:
            self.engine.leases.end_earlier_engines_lapsed()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                if self._sweeps:
                    self._sweep_if_due()
                with self.engine.storage.session():  # one pooled connection for the whole run
                    worked = self.engine.drive_next(should_stop=self._stop.is_set)
            except StorageUnavailable as exc:
                # The database is away: back off instead of spinning on failed claims.
                log.warning("driver: %s; retrying in 1 s", exc)
                self._stop.wait(1.0)
                continue
            except FlowrtError as exc:  # e.g. a run cancelled under us: the next claim goes on
                log.debug("driver: %s", exc)
                continue
            except Exception:  # noqa: BLE001 - a driver must survive anything a handler or driver throws
                log.exception("driver error; retrying in 1 s")
                self._stop.wait(1.0)
                continue
            if worked:
                continue
            with self._wakeup:
                if self._pending == 0 and not self._stop.is_set():
                    self._wakeup.wait(self.poll_interval)
                self._pending = max(0, self._pending - 1)


@dataclass
class RecoveryReport:
    found: int
    driven: int
    seconds: float


def recover(
    engine: Engine,
    *,
    concurrency: int = 4,
    progress: Callable[[int, int], None] | None = None,
    stop: threading.Event | None = None,
    max_sleep: float = 0.0,
) -> RecoveryReport:
    """Drive every runnable run (RUNNING, due timers, expired leases) to its next wait or end.

    ``stop``: when set (a server shutting down), workers commit the step in hand, hand
    the run back and quit.

    ``max_sleep``: the longest retry backoff a worker waits out in a run it drives; a longer
    one leaves the run RUNNING, due later. A server's startup recovery waits out none: its
    drivers continue such a run when it is due. ``flowrt recover``, where nothing else may
    be running, waits as long as a ``tick`` does (``Engine(inline_backoff=...)``).
    """
    started = time.monotonic()
    try:
        end_leases_of_gone_holders(engine.storage, engine.liveness)  # a process killed before this one started
    except StorageUnavailable as exc:
        log.warning("recovery: could not end the leases of processes that are gone: %s", exc)
    now = engine.clock.now_ms()
    active = engine.storage.runnable_ids()
    found = sum(1 for _, _, _, wake_at in active if wake_at is None or wake_at <= now)
    later = len(active) - found  # a timer or a retry backoff not over yet: the drivers' work, later
    driven: set[str] = set()
    busy = 0  # workers inside a drive now: each may yet hand the others a run
    wakes = 0  # runs this process may have been handed (a claim ahead parked), counted
    changed = threading.Condition()

    def wake() -> None:
        nonlocal wakes
        with changed:
            wakes += 1
            changed.notify_all()

    def work() -> None:
        nonlocal busy
        while stop is None or not stop.is_set():
            with changed:
                busy += 1
                seen = wakes
            run_id: str | None = None
            try:
                with engine.storage.session():
                    run_id = engine.drive_next_run(max_sleep=max_sleep, should_stop=None if stop is None else stop.is_set)
            except StorageUnavailable as exc:
                log.error("recovery stopped: %s", exc)  # drivers or a later recover continue
                return
            except FlowrtError as exc:
                log.warning("recovery: %s", exc)
                continue
            finally:
                with changed:
                    busy -= 1
                    if run_id is not None:
                        driven.add(run_id)
                    count = len(driven)
                    if busy == 0:
                        changed.notify_all()  # the workers waiting on it may be done
            if run_id is not None:
                if progress is not None:
                    progress(count, max(found, count))  # (runs that fell due meanwhile are driven too)
                continue
            with changed:
                if busy == 0:
                    return  # nothing left, and no worker that could still claim the next one ahead
                # A busy worker's claim ahead parks the next run for this process (and wakes
                # us); a worker that quit here instead would leave it to wait for that drive.
                if wakes == seen:
                    changed.wait(RECOVERY_POLL)

    engine.add_listener(wake)
    threads = [threading.Thread(target=work, name=f"flowrt-recover-{i}", daemon=True) for i in range(max(1, concurrency))]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            while thread.is_alive():
                thread.join(0.1)  # in slices: a Ctrl-C in the calling thread is seen at once
    except BaseException:
        if stop is not None:
            stop.set()  # the workers commit the step in hand and stop
        raise
    finally:
        engine.remove_listener(wake)
    report = RecoveryReport(found, len(driven), time.monotonic() - started)
    log.info(
        "recovery: %d runnable run(s) found, %d driven in %.2fs%s", found, report.driven, report.seconds,
        f" ({later} more due later: timers or retry backoffs)" if later else "",
    )  # fmt: skip
    _say_what_is_held_elsewhere(engine)
    return report


def _say_what_is_held_elsewhere(engine: Engine) -> None:
    """After a crash and a quick restart, the runs the dead process held stay leased to it until
    their leases run out: say so, or a recovery that drove none of them looks like a fault."""
    now = engine.clock.now_ms()
    try:
        holders = engine.storage.held_elsewhere(engine.owner, now)
    except StorageUnavailable:
        return
    folder = engine.liveness.folder if engine.liveness is not None else None
    alive = [h for h in holders if folder is not None and gone(folder, h[0]) is False]  # SQLite: their locks are held
    if alive:
        log.info(
            "recovery: %d run(s) held by other live processes (%s) are left to them; should one die, a process "
            "with drivers on this file takes its runs over at once", sum(n for _, n, _ in alive),
            ", ".join(h for h, _, _ in alive[:3]) + (", ..." if len(alive) > 3 else ""),
        )  # fmt: skip
    unknown = [h for h in holders if h not in alive]
    if unknown:
        count, owner, first = sum(n for _, n, _ in unknown), unknown[0][0], min(f for _, _, f in unknown)
        left = max(0.0, (first - now) / 1000)
        log.warning(
            "recovery: %d run(s) held by other processes' leases (%s%s) are left to them; if those processes are gone, "
            "the runs are recovered as their leases run out, the first in %.0fs (--lease-ttl)",
            count, "e.g. " if count > 1 else "", owner, left,
        )  # fmt: skip
