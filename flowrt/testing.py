"""Helpers for testing your own flows: drive one to its end in memory, scripting the resumes.

    from flowrt.testing import run_flow

    def test_rejected_orders_are_not_shipped():
        run = run_flow(orders, {"orderId": "A1", "qty": 2}, resumes=[{"approved": False}])
        assert run.status == "COMPLETED" and run.attempts["validate"] == 1
        assert "ship" not in run.outputs
        assert run.events_of("NODE_FAILED") == []

``run_flow`` returns a :class:`FlowRun`: the engine's :class:`~flowrt.Run` (every field,
``isinstance(run, Run)``) with the run's whole timeline at hand as ``run.timeline``.

Each call uses a fresh in-memory engine, so tests never share state. The real engine
runs the flow: retries, timeouts, idempotency keys, edges and the timeline behave
exactly as in production (retry backoffs are really slept through; keep them short).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Iterable

from .engine import Engine
from .runs import Event, Run, RunStatus


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
    services: dict[str, Any] | None = None,
    tenant_id: str | None = None,
    initial_state: dict[str, Any] | None = None,
    version: str | None = None,
) -> FlowRun:
    """Start ``flow`` (a Flow or ``@flow`` class) and drive it as far as it goes.

    Each time the run waits, the next payload of ``resumes`` resumes it. A wait whose
    timer (``wait(until=...)``) is set fires at once when ``fire_timers`` is true and no
    payload is left, as drivers would once it is due (a node that then sets the same
    timer again is left waiting). The run returned is WAITING if the payloads ran out; a
    payload left over when the run ended is an error in the test.
    """
    payloads = list(resumes)
    with Engine("memory://", flows=[flow], services=services) as engine:
        flow_id = engine.flows[0].flow_id
        run = engine.start(flow_id, version, input, tenant_id=tenant_id, initial_state=initial_state)
        run = engine.run_until_blocked(run.run_id)
        fired = None
        while run.status == RunStatus.WAITING:
            if payloads:
                run = engine.resume(run.run_id, payloads.pop(0))
            elif fire_timers and run.wake_at is not None and run.wake_at != fired:
                # Fired early; a node that checks the clock and sets the same timer again
                # stops the loop (fired == wake_at) instead of spinning.
                fired = run.wake_at
                run = engine.resume(run.run_id, None, by="timer")
            else:
                break
            run = engine.run_until_blocked(run.run_id)
        if payloads:
            raise AssertionError(
                f"run ended {run.status} with {len(payloads)} resume payload(s) unused: {payloads!r}"
            )
        fields = {f.name: getattr(run, f.name) for f in dataclasses.fields(Run)}
        return FlowRun(**fields, timeline=engine.timeline(run.run_id))
