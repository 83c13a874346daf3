"""flowrt.testing: users' flows driven to their end on a virtual clock, and the pytest plugin."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from examples.approval import approval
from examples.demo import DemoSupport
from flowrt import Engine, Flow, ok, wait
from flowrt.testing import VirtualClock, drive, next_due, run_flow
from testing_flows import HOUR_MS, backoff, naps, reminder

REPO = Path(__file__).resolve().parent.parent
START = datetime(2030, 1, 1, tzinfo=UTC)


@pytest.fixture(params=["memory", "sqlite"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return "memory://" if request.param == "memory" else f"sqlite:///{tmp_path / 'run.db'}"


def test_scripted_resumes_drive_a_flow_to_its_end() -> None:
    support = DemoSupport  # a @flow class works as well as a Flow
    result = run_flow(support, resumes=[{"ticketId": "T-9"}])
    assert result.status == "COMPLETED"
    assert [e.type for e in result.events_of("RUN_RESUMED")] == ["RUN_RESUMED"]
    unfinished = run_flow(support)
    assert unfinished.status == "WAITING" and unfinished.run.wait_reason == "awaiting_ticket_creation"
    with pytest.raises(AssertionError, match="unused"):
        run_flow(support, resumes=[{"ticketId": "T-1"}, {"ticketId": "T-2"}])


def test_run_flow_returns_the_run_with_its_timeline() -> None:
    from flowrt import Run
    from flowrt.testing import FlowResult, FlowRun

    run = run_flow(DemoSupport, {"customer": "ana"}, resumes=[{"ticketId": "T-3"}])
    assert isinstance(run, Run) and isinstance(run, FlowRun)
    assert run.attempts == {"create": 2, "notify": 1} and run.current_node_id is None
    assert run.finished and run.flow_id == "demo-support" and run.to_json()["status"] == "COMPLETED"
    assert [e.seq for e in run.timeline] == list(range(1, len(run.timeline) + 1))
    assert run.timeline[0].type == "RUN_STARTED" and run.timeline[-1].type == "RUN_COMPLETED"
    assert run.run is run and FlowResult is FlowRun  # the old spellings still work
    assert run.events_of("RUN_RESUMED")[0].payload == {"by": "api", "payload": {"ticketId": "T-3"}}


# --------------------------------------------------------------------------- virtual time in run_flow


def test_backoffs_pass_at_once_and_are_recorded_as_the_runtime_records_them(database: str) -> None:
    clock = VirtualClock(START)
    began = time.monotonic()
    run = run_flow(backoff, database=database, clock=clock)
    assert time.monotonic() - began < 10  # three hours of backoff, no real waiting
    assert run.status == "COMPLETED" and run.attempts == {"charge": 3}
    failed = run.events_of("NODE_FAILED")
    assert [e.payload["retryInMs"] for e in failed] == [HOUR_MS, 2 * HOUR_MS]
    assert clock.slept == [3600.0, 7200.0] and clock.now() >= START + timedelta(hours=3)
    # Each attempt starts once its backoff is over, on the virtual clock.
    starts = [e.at for e in run.events_of("NODE_STARTED")]
    assert starts[1] - failed[0].at == timedelta(hours=1) and starts[2] - failed[1].at == timedelta(hours=2)
    types = [e.type for e in run.timeline]
    assert types == ["RUN_STARTED", "NODE_STARTED", "NODE_FAILED", "NODE_STARTED", "NODE_FAILED",
                     "NODE_STARTED", "NODE_FINISHED", "RUN_COMPLETED"]
    assert datetime.fromisoformat(run.outputs["charge"]["at"]) == starts[2]  # ctx.now() is the clock


def test_timers_fire_in_order_each_at_its_due_time(database: str) -> None:
    run = run_flow(naps, database=database, clock=VirtualClock(START))
    assert run.status == "COMPLETED"
    resumed = run.events_of("RUN_RESUMED")
    assert [e.payload for e in resumed] == [{"by": "timer", "payload": None}] * 2
    assert [e.at for e in resumed] == [START + timedelta(hours=1), START + timedelta(hours=3)]
    assert run.outputs["second"]["woke"] == (START + timedelta(hours=3)).isoformat()
    assert run_flow(naps, fire_timers=False).status == "WAITING"


def test_a_timer_set_again_for_a_fired_moment_is_left_waiting() -> None:
    f = Flow("same-deadline")

    @f.node(entry=True)
    def stubborn(ctx: Any) -> Any:
        return wait("until the deadline", until="2030-01-01T05:00:00.000Z")  # ignores that it fired

    run = run_flow(f, clock=VirtualClock(START))
    assert run.status == "WAITING" and len(run.events_of("RUN_RESUMED")) == 1


def test_a_flow_that_never_stops_setting_timers_is_an_error() -> None:
    with pytest.raises(AssertionError, match="set 5 timers in a row"):
        run_flow(reminder, max_timers=5)
    assert run_flow(reminder, resumes=[{"answer": 42}]).outputs == {"ask": {"answer": 42}}


def test_the_approval_example_escalates_when_its_deadline_passes() -> None:
    request = {"requestId": "R1", "amount": 250, "requester": "ana"}
    approved = run_flow(approval, request, resumes=[{"approved": True}])
    assert approved.status == "COMPLETED" and approved.state["approved"] is True
    # Nobody decides: the timer fires an hour later (virtually) and decide() escalates.
    pending = run_flow(approval, request, clock=VirtualClock(START))
    assert pending.status == "WAITING" and pending.state["escalated"] is True
    assert pending.wait_reason == "escalated: awaiting a manager's decision" and pending.wake_at is None
    assert pending.events_of("RUN_RESUMED")[0].at == START + timedelta(hours=1)
    assert run_flow(approval, request, fire_timers=False).state["escalated"] is False


# --------------------------------------------------------------------------- the clock itself


def test_the_virtual_clock_moves_only_forward_and_when_told() -> None:
    clock = VirtualClock(START)
    assert clock.now() == START and clock.now_ms() == int(START.timestamp() * 1000)
    assert clock.advance(timedelta(minutes=5)) == START + timedelta(minutes=5)
    assert clock.advance(1.5) == START + timedelta(minutes=5, seconds=1.5)
    assert clock.advance_to(START) == START + timedelta(minutes=5, seconds=1.5)  # never back
    with pytest.raises(ValueError, match="does not go back"):
        clock.advance(-1)
    asyncio.run(clock.asleep(60))
    assert clock.now() == START + timedelta(minutes=6, seconds=1.5) and clock.slept == [60]
    assert abs(VirtualClock().now_ms() - time.time() * 1000) < 60_000  # starts at the real time


# --------------------------------------------------------------------------- the fixtures and drive()


def test_the_fixture_engine_fires_a_timer_once_the_clock_passes_it(flowrt_engine: Engine, flowrt_clock: VirtualClock) -> None:
    assert flowrt_engine.clock is flowrt_clock and flowrt_engine.storage.kind == "sqlite"
    flowrt_engine.register(approval)
    run = flowrt_engine.start("approval", input={"requestId": "R9", "amount": 5, "requester": "bo"})
    assert drive(flowrt_engine) == 1
    assert flowrt_engine.get(run.run_id).wait_reason == "awaiting a decision from the team-lead"  # type: ignore[union-attr]
    flowrt_clock.advance(timedelta(minutes=59))
    assert drive(flowrt_engine) == 0  # not due yet
    flowrt_clock.advance(timedelta(minutes=1))
    assert drive(flowrt_engine) == 1
    escalated = flowrt_engine.get(run.run_id)
    assert escalated is not None and escalated.state["escalated"] is True
    by = [e.payload["by"] for e in flowrt_engine.timeline(run.run_id) if e.type == "RUN_RESUMED"]
    assert by == ["timer"]


def test_drive_within_fires_every_due_moment_in_order(flowrt_engine: Engine, flowrt_clock: VirtualClock) -> None:
    start = flowrt_clock.now()
    flowrt_engine.register(reminder, backoff)
    slow = flowrt_engine.start("t-reminder", input={"remindAfterHours": 2}).run_id
    fast = flowrt_engine.start("t-reminder", input={"remindAfterHours": 1}).run_id
    charged = flowrt_engine.start("t-backoff").run_id
    assert drive(flowrt_engine) == 3  # each waits, or parks in its first backoff
    parked = flowrt_engine.get(charged)
    assert parked is not None and parked.status == "RUNNING" and parked.wake_at == start + timedelta(hours=1)
    assert next_due(flowrt_engine) == start + timedelta(hours=1)
    drive(flowrt_engine, within=timedelta(hours=4))
    assert flowrt_clock.now() == start + timedelta(hours=4)
    fired = sorted((e.at, run_id) for run_id in (slow, fast)
                   for e in flowrt_engine.timeline(run_id) if e.type == "RUN_RESUMED")
    hours = [(round((at - start).total_seconds() / 3600, 3), run_id) for at, run_id in fired]
    assert hours == sorted([(1, fast), (2, fast), (2, slow), (3, fast), (4, fast), (4, slow)])
    done = flowrt_engine.get(charged)
    assert done is not None and done.status == "COMPLETED"  # backoffs of 1 h and 2 h, within the span
    attempts = [e.at for e in flowrt_engine.timeline(charged) if e.type == "NODE_STARTED"]
    assert attempts == [start, start + timedelta(hours=1), start + timedelta(hours=3)]
    states = {r: flowrt_engine.get(r).state["reminders"] for r in (slow, fast)}  # type: ignore[union-attr]
    assert states == {slow: 2, fast: 4}


def test_drive_within_needs_a_virtual_clock() -> None:
    with Engine("memory://") as engine, pytest.raises(TypeError, match="VirtualClock"):
        drive(engine, within=1)


def test_the_plugin_is_registered_and_light(tmp_path: Path) -> None:
    code = "import sys, flowrt.pytest_plugin\nassert not [m for m in ('flowrt.engine', 'peewee', 'flowrt.testing') if m in sys.modules]"
    light = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert light.returncode == 0, light.stderr
    (tmp_path / "test_user.py").write_text(
        "from datetime import timedelta\n"
        "from flowrt import Flow, ok, wait\n"
        "from flowrt.testing import drive\n"
        "f = Flow('user-nap')\n"
        "@f.node(entry=True)\n"
        "def nap(ctx):\n"
        "    return ok('up') if ctx.resume_payload is None and ctx.attempt > 1 else wait('nap', until=timedelta(days=1))\n"
        "def test_nap(flowrt_engine, flowrt_clock):\n"
        "    flowrt_engine.register(f)\n"
        "    run = flowrt_engine.start('user-nap')\n"
        "    drive(flowrt_engine)\n"
        "    flowrt_clock.advance(timedelta(days=1))\n"
        "    drive(flowrt_engine)\n"
        "    assert flowrt_engine.get(run.run_id).status == 'COMPLETED'\n"
    )
    # A project without any conftest: the fixtures come from the installed entry point.
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    off = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:flowrt", "-p", "no:cacheprovider", str(tmp_path)],
                         capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert off.returncode != 0 and "fixture 'flowrt_engine' not found" in off.stdout


def test_the_documented_examples_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import re

    section = (REPO / "docs" / "concepts.md").read_text().split("## Testing your flows")[1].split("\n## ")[0]
    blocks = re.findall(r"```python\n(.*?)```", section, re.S)
    assert len(blocks) == 3
    for code in blocks[:2]:
        exec(compile(code, "concepts.md", "exec"), {"__name__": "doc"})  # noqa: S102 - our own docs
        printed = capsys.readouterr().out.splitlines()
        # Every `print(...)  # expected` line prints what its comment says.
        expected = [line.split("# ", 1)[1] if "print(" in line else line[2:]
                    for line in code.splitlines() if re.match(r"(print\(.*#|# )", line)]
        assert printed == expected
    (tmp_path / "test_doc_fixture.py").write_text(blocks[2])
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert done.returncode == 0 and "1 passed" in done.stdout, done.stdout + done.stderr
