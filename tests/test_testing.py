"""flowrt.testing: users' flows driven to their end in memory."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from examples.approval import approval
from examples.demo import DemoSupport
from flowrt import Flow, ok, wait
from flowrt.testing import run_flow


def test_scripted_resumes_drive_a_flow_to_its_end() -> None:
    support = DemoSupport  # a @flow class works as well as a Flow
    result = run_flow(support, resumes=[{"ticketId": "T-9"}])
    assert result.status == "COMPLETED"
    assert [e.type for e in result.events_of("RUN_RESUMED")] == ["RUN_RESUMED"]
    unfinished = run_flow(support)
    assert unfinished.status == "WAITING" and unfinished.run.wait_reason == "awaiting_ticket_creation"
    with pytest.raises(AssertionError, match="unused"):
        run_flow(support, resumes=[{"ticketId": "T-1"}, {"ticketId": "T-2"}])


def test_the_approval_example_approves_and_stays_waiting_for_a_clock_checking_timer() -> None:
    approved = run_flow(approval, {"requestId": "R1", "amount": 250, "requester": "ana"}, resumes=[{"approved": True}])
    assert approved.status == "COMPLETED" and approved.state["approved"] is True
    # decide() checks the clock; fired early, its timer is set again and the run keeps waiting
    pending = run_flow(approval, {"requestId": "R2", "amount": 250, "requester": "ana"})
    assert pending.status == "WAITING" and pending.state["escalated"] is False


def test_timers_fire_at_once() -> None:
    f = Flow("nap")

    @f.node(entry=True)
    def nap(ctx: Any) -> Any:
        return ok("woke") if ctx.resume_payload is None and ctx.attempt > 1 else wait("nap", until=timedelta(hours=1))

    result = run_flow(f)
    assert result.status == "COMPLETED" and result.outputs == {"nap": "woke"}
    assert result.events_of("RUN_RESUMED")[0].payload == {"by": "timer", "payload": None}
    assert run_flow(f, fire_timers=False).status == "WAITING"


def test_run_flow_returns_the_run_with_its_timeline() -> None:
    from flowrt import Run
    from flowrt.testing import FlowResult, FlowRun

    run = run_flow(DemoSupport, {"customer": "ana"}, resumes=[{"ticketId": "T-3"}])
    assert isinstance(run, Run) and isinstance(run, FlowRun)
    # Every field of a Run, which the old wrapper lacked.
    assert run.attempts == {"create": 2, "notify": 1} and run.current_node_id is None
    assert run.finished and run.flow_id == "demo-support" and run.to_json()["status"] == "COMPLETED"
    assert [e.seq for e in run.timeline] == list(range(1, len(run.timeline) + 1))
    assert run.timeline[0].type == "RUN_STARTED" and run.timeline[-1].type == "RUN_COMPLETED"
    assert all(e.run_id == run.run_id for e in run.timeline)
    # The old spellings still work.
    assert run.run is run and FlowResult is FlowRun
    assert run.events_of("RUN_RESUMED")[0].payload == {"by": "api", "payload": {"ticketId": "T-3"}}
    waiting = run_flow(DemoSupport)
    assert waiting.status == "WAITING" and waiting.wait_reason == "awaiting_ticket_creation"
    assert waiting.timeline[-1].type == "RUN_WAITING"
