"""Helpers for testing your own flows: a virtual clock, and flows driven to their end without waiting.

    from datetime import timedelta
    from flowrt.testing import run_flow

    def test_rejected_orders_are_not_shipped():
        run = run_flow(orders, {"orderId": "A1", "qty": 2}, resumes=[{"approved": False}])
        assert run.status == "COMPLETED" and run.attempts["validate"] == 1
        assert "ship" not in run.outputs

``run_flow`` returns a :class:`FlowRun`: the engine's :class:`~flowrt.Run` (every field,
``isinstance(run, Run)``) with the run's whole timeline at hand as ``run.timeline``.

Time is virtual (:class:`VirtualClock`): a retry backoff or a timer (``wait(until=...)``)
does not make the test wait. The engine sleeps through a backoff by moving the clock on
at once, and a due timer fires as a server's drivers fire it (``RUN_RESUMED {by:
"timer"}``), each at its own due time, in order. Nodes that compare the time with a
deadline should read it from ``ctx.now()``, which is that clock.

For tests that drive runs step by step, the pytest plugin (:mod:`flowrt.pytest_plugin`,
installed with flowrt) gives ``flowrt_engine`` (an engine on a temporary SQLite file with a
virtual clock) and ``flowrt_clock``; :func:`drive` then runs what is due::

    def test_escalates_after_an_hour(flowrt_engine, flowrt_clock):
        flowrt_engine.register(approval)
        run = flowrt_engine.start("approval", input={...})
        drive(flowrt_engine)                          # WAITING for a decision
        flowrt_clock.advance(timedelta(hours=1))
        drive(flowrt_engine)                          # the timer fired: escalated
"""

from __future__ import annotations

import asyncio
import dataclasses
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Iterable

from .engine import Engine
from .runs import ACTIVE, Event, Run, RunStatus

#: How many steps :func:`drive` takes at one moment before it calls the flow a loop.
MAX_DRIVES = 10_000


class VirtualClock:
    """A :class:`flowrt.clock.Clock` whose time moves only when told to.

    ``sleep`` and ``asleep`` return at once, having moved the time on by as much (so the
    engine's retry backoffs take no real time); :meth:`advance` and :meth:`advance_to`
    move it on for a test. It never goes back. It starts at ``start`` (a datetime, or
    epoch milliseconds), by default the real time when it was made, so run ids (time
    ordered, from the real clock) and run times agree roughly. Thread-safe.
    """

    def __init__(self, start: datetime | int | None = None) -> None:
        if start is None:
            ms = int(time.time() * 1000)
        elif isinstance(start, datetime):
            ms = _ms(start)
        else:
            ms = int(start)
        self._ms = ms
        self._lock = threading.Lock()
        self.slept: list[float] = []
        """Every sleep the engine asked for, in seconds, in order (a run's backoffs show here)."""

    def __repr__(self) -> str:
        return f"VirtualClock({self.now().isoformat(timespec='milliseconds')})"

    def now_ms(self) -> int:
        with self._lock:
            return self._ms

    def now(self) -> datetime:
        """The virtual time, as an aware UTC datetime."""
        return datetime.fromtimestamp(self.now_ms() / 1000, UTC)

    def advance(self, by: timedelta | float) -> datetime:
        """Move the time on by ``by`` (a timedelta, or seconds); the new time."""
        seconds = by.total_seconds() if isinstance(by, timedelta) else float(by)
        if seconds < 0:
            raise ValueError(f"a virtual clock does not go back (advance by {seconds} s)")
        with self._lock:
            self._ms += round(seconds * 1000)
        return self.now()

    def advance_to(self, moment: datetime | int) -> datetime:
        """Move the time on to ``moment`` (a datetime, or epoch ms); a moment already past changes nothing."""
        target = _ms(moment) if isinstance(moment, datetime) else int(moment)
        with self._lock:
            self._ms = max(self._ms, target)
        return self.now()

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        if seconds > 0:
            self.advance(seconds)

    async def asleep(self, seconds: float) -> None:
        self.sleep(seconds)
        await asyncio.sleep(0)  # still a suspension point, as a real sleep is


def _ms(moment: datetime) -> int:
    aware = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    return int(aware.timestamp() * 1000)


# --------------------------------------------------------------------------- driving an engine


def drive(engine: Engine, *, within: timedelta | float | None = None) -> int:
    """Run what is due on ``engine`` now, as its drivers would; the number of runs driven.

    Due timers fire (``RUN_RESUMED {by: "timer"}``) and runnable runs step until they wait,
    end, or park in a retry backoff that is not due yet. No time passes.

    With ``within`` (a timedelta, or seconds) the engine's :class:`VirtualClock` moves on
    through that span one due moment at a time — each timer and backoff at its own time, in
    order, driving at each — and ends at its end: what an hour with running drivers does.
    """
    driven = _drive_due(engine)
    if within is None:
        return driven
    clock = engine.clock
    if not isinstance(clock, VirtualClock):
        raise TypeError("drive(within=...) needs an engine on a VirtualClock (Engine(clock=VirtualClock()))")
    span = within.total_seconds() if isinstance(within, timedelta) else float(within)
    end = clock.now_ms() + round(span * 1000)
    while True:
        due = next_due(engine)
        if due is None or _ms(due) > end:
            break
        clock.advance_to(due)
        moved = _drive_due(engine)
        driven += moved
        if not moved:
            break  # due, but not this engine's to run (its flow version is not registered)
    clock.advance_to(end)
    return driven + _drive_due(engine)


def _drive_due(engine: Engine) -> int:
    driven = 0
    while engine.drive_next(max_sleep=0):
        driven += 1
        if driven >= MAX_DRIVES:
            raise AssertionError(
                f"still runnable after {MAX_DRIVES} drives at one moment: does a flow set a timer that is "
                "already due, again and again?"
            )
    return driven


def next_due(engine: Engine) -> datetime | None:
    """The earliest pending timer or retry backoff among the engine's active runs, or None."""
    earliest: datetime | None = None
    for status in ACTIVE:
        cursor: str | None = None
        while True:
            runs, cursor = engine.list_runs(status=str(status), limit=1000, cursor=cursor)
            for run in runs:
                if run.wake_at is not None and (earliest is None or run.wake_at < earliest):
                    earliest = run.wake_at
            if cursor is None:
                break
    return earliest


# --------------------------------------------------------------------------- run_flow


@dataclass(frozen=True, slots=True)
class FlowRun(Run):
    """The run as it ended (or last waited), plus its whole timeline, oldest event first."""

    timeline: list[Event] = field(default_factory=list)

    def events_of(self, event_type: str) -> list[Event]:
        """The timeline's events of one type (``"RUN_RESUMED"``, ``"NODE_FAILED"``, ...)."""
        return [e for e in self.timeline if e.type == event_type]

    @property
    def run(self) -> Run:
        """The run itself; kept for tests written when ``run_flow`` returned a wrapper."""
        return self


FlowResult = FlowRun
"""The former name of :class:`FlowRun` (it was a wrapper with ``.run``; now it is the run)."""


def run_flow(
    flow: Any,
    input: Any = None,  # noqa: A002 - the engine's name
    *,
    resumes: Iterable[Any] = (),
    fire_timers: bool = True,
    max_timers: int = 1000,
    services: dict[str, Any] | None = None,
    tenant_id: str | None = None,
    initial_state: dict[str, Any] | None = None,
    version: str | None = None,
    database: str = "memory://",
    clock: VirtualClock | None = None,
) -> FlowRun:
    """Start ``flow`` (a Flow or ``@flow`` class) on a fresh engine and drive it as far as it goes.

    Retry backoffs pass at once on the virtual ``clock`` (a new one by default; pass your
    own to choose the start time or read ``clock.slept``). Each time the run waits, the
    next payload of ``resumes`` resumes it. When none is left and the wait has a timer
    (``wait(until=...)``), the clock moves on to the timer's due time and it fires, as
    drivers fire it, when ``fire_timers`` is true; a node that sets an already-fired timer
    again is left waiting, and more than ``max_timers`` timers is an error (a flow that
    never stops waiting). The run returned is WAITING if the payloads ran out; a payload
    left over when the run ended is an error in the test. ``database`` is the engine's
    (``memory://``, or a ``sqlite:///`` file to look at afterwards).
    """
    payloads = list(resumes)
    clock = clock or VirtualClock()
    with Engine(database, flows=[flow], services=services, clock=clock) as engine:
        flow_id = engine.flows[0].flow_id
        run = engine.start(flow_id, version, input, tenant_id=tenant_id, initial_state=initial_state)
        run = engine.run_until_blocked(run.run_id)
        fired: list[datetime] = []
        while run.status == RunStatus.WAITING:
            if payloads:
                run = engine.resume(run.run_id, payloads.pop(0))
            elif fire_timers and run.wake_at is not None and (not fired or run.wake_at != fired[-1]):
                if len(fired) >= max_timers:
                    raise AssertionError(
                        f"the run set {len(fired)} timers in a row (virtual time is now {clock.now().isoformat()}); "
                        "pass max_timers=, or fire_timers=False to look at it waiting"
                    )
                fired.append(run.wake_at)
                clock.advance_to(run.wake_at)
                # Claimed with its timer due, the run is resumed by "timer", as drivers do.
            else:
                break
            run = engine.run_until_blocked(run.run_id)
        if payloads:
            raise AssertionError(
                f"run ended {run.status} with {len(payloads)} resume payload(s) unused: {payloads!r}"
            )
        fields = {f.name: getattr(run, f.name) for f in dataclasses.fields(Run)}
        return FlowRun(**fields, timeline=engine.timeline(run.run_id))
