"""Retry and rewind through the engine, on SQLite, memory and Postgres.

HTTP and the CLI are in test_repair_http.py; runs stored before schema 3 in test_migrations.py.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import pytest

from flowrt import (
    FlowNotRegistered,
    InvalidInput,
    RewindUnavailable,
    RunBusy,
    RunNotFound,
    RunNotRepairable,
)
from flowrt.repair import changes_of
from repair_flows import ALL

Make = Callable[..., Any]


@pytest.fixture
def switch(tmp_path: Path) -> Path:
    """While this file exists, the payment service is down."""
    path = tmp_path / "broken"
    path.write_text("down")
    return path


def _events(engine: Any, run_id: str, kind: str | None = None) -> list[Any]:
    return [e for e in engine.timeline(run_id) if kind is None or e.type == kind]


def _failed_at_charge(engine: Any, switch: Path) -> Any:
    run = engine.run_until_blocked(engine.start("shop", input={"n": 1, "brokenFile": str(switch)}).run_id)
    assert run.status == "FAILED" and run.current_node_id == "charge", run
    return run


def test_retry_continues_a_failed_run_where_it_stopped_with_its_state(make_engine: Make, switch: Path) -> None:
    engine = make_engine(*ALL)
    failed = _failed_at_charge(engine, switch)
    assert len(_events(engine, failed.run_id, "NODE_FAILED")) == 2  # max_attempts=2 used up

    # Still broken: the node gets its full budget again (failure count reset), then fails again.
    again = engine.run_until_blocked(engine.retry(failed.run_id, by="kim").run_id)
    assert again.status == "FAILED" and len(_events(engine, failed.run_id, "NODE_FAILED")) == 4

    switch.unlink()  # the service is back
    retried = engine.retry(failed.run_id)
    assert (retried.status, retried.current_node_id, retried.error) == ("RUNNING", "charge", None)
    assert retried.state == failed.state == {"steps": {"prepare": True}, "count": 1}
    assert retried.outputs == failed.outputs == {"prepare": {"prepared": 1}}
    done = engine.run_until_blocked(retried.run_id)
    assert done.status == "WAITING" and done.outputs["charge"] == {"charged": 1}
    marks = [e.payload for e in _events(engine, failed.run_id, "RUN_RETRIED")]
    assert marks == [{"by": "kim", "fromNode": "charge"}, {"by": "api", "fromNode": "charge"}]
    # Every earlier event is kept, in order, with no gap.
    seqs = [e.seq for e in _events(engine, failed.run_id)]
    assert seqs == list(range(1, len(seqs) + 1))


def test_retry_of_a_cancelled_run_continues_at_the_node_it_was_cancelled_at(make_engine: Make) -> None:
    engine = make_engine(*ALL)
    run = engine.run_until_blocked(engine.start("shop", input={"n": 2}).run_id)
    assert run.current_node_id == "approve"
    engine.cancel(run.run_id, "oops", by="kim")
    assert _events(engine, run.run_id, "RUN_CANCELLED")[0].payload == {"reason": "oops", "by": "kim"}
    retried = engine.retry(run.run_id)
    assert (retried.status, retried.current_node_id) == ("RUNNING", "approve")
    assert engine.run_until_blocked(run.run_id).status == "WAITING"
    assert engine.run_until_blocked(engine.resume(run.run_id, {"by": "ann"}).run_id).status == "COMPLETED"


def test_retry_refuses_completed_and_active_runs_and_unknown_ones(make_engine: Make, db_url: str) -> None:
    engine = make_engine(*ALL)
    waiting = engine.run_until_blocked(engine.start("shop", input={"n": 3}).run_id)
    with pytest.raises(RunNotRepairable, match="WAITING: only a FAILED or CANCELLED"):
        engine.retry(waiting.run_id)
    running = engine.start("shop", input={"n": 3})
    with pytest.raises(RunNotRepairable, match="RUNNING, still active"):
        engine.retry(running.run_id)
    done = engine.run_until_blocked(engine.resume(waiting.run_id, {"by": "x"}).run_id)
    assert done.status == "COMPLETED"
    with pytest.raises(RunNotRepairable, match="COMPLETED: only a FAILED or CANCELLED run can be retried") as caught:
        engine.retry(done.run_id)
    assert caught.value.http_status == 409
    with pytest.raises(RunNotFound):
        engine.retry("no-such-run")
    if db_url != "memory://":  # another process without the flow: 422, and nothing is written
        other = make_engine()
        engine.cancel(running.run_id)
        before = other.get(running.run_id)
        with pytest.raises(FlowNotRegistered):
            other.retry(running.run_id)
        assert other.get(running.run_id) == before


def test_rewind_restores_the_state_and_outputs_from_just_before_the_node_last_started(make_engine: Make) -> None:
    engine = make_engine(*ALL)
    run = engine.run_until_blocked(engine.start("shop", input={"n": 4}, initial_state={"seed": 7}).run_id)
    done = engine.run_until_blocked(engine.resume(run.run_id, {"by": "ann"}).run_id)
    assert done.status == "COMPLETED" and set(done.outputs) == {"prepare", "charge", "approve", "ship"}
    before = len(_events(engine, run.run_id))

    rewound = engine.rewind(run.run_id, "charge", by="kim")
    assert (rewound.status, rewound.current_node_id) == ("RUNNING", "charge")
    assert rewound.state == {"seed": 7, "steps": {"prepare": True}, "count": 1}
    assert rewound.outputs == {"prepare": {"prepared": 4}}
    events = _events(engine, run.run_id)
    assert len(events) == before + 1  # every earlier event stays
    mark = events[-1]
    charge_start = max(e.seq for e in events if e.type == "NODE_STARTED" and e.node_id == "charge")
    assert (mark.type, mark.payload) == ("RUN_REWOUND", {"by": "kim", "toNode": "charge", "seq": charge_start})

    # It runs on from there: charge sees the rewound state, approve asks again.
    again = engine.run_until_blocked(run.run_id)
    assert again.status == "WAITING" and again.outputs["charge"] == {"charged": 1}
    assert again.state["count"] == 2 and again.state["asked"] is True

    # Rewinding a waiting run to its entry gives the initial state back.
    first = engine.rewind(run.run_id, "prepare")
    assert (first.state, first.outputs, first.current_node_id) == ({"seed": 7}, {}, "prepare")

    # After a rewind, an earlier branch's point is still reachable: charge last started
    # after the first rewind, so its state comes from that branch's snapshot.
    engine.run_until_blocked(run.run_id)
    again = engine.rewind(run.run_id, "approve")
    assert again.state == {"seed": 7, "steps": {"prepare": True, "charge": True}, "count": 2}
    assert set(again.outputs) == {"prepare", "charge"}


def test_rewind_errors_are_clear_and_change_nothing(make_engine: Make, switch: Path) -> None:
    engine = make_engine(*ALL)
    failed = _failed_at_charge(engine, switch)
    with pytest.raises(RewindUnavailable, match="never started node approve; it can be rewound to a node it started: charge, prepare"):
        engine.rewind(failed.run_id, "approve")
    with pytest.raises(InvalidInput, match="has no node 'nope'; its nodes: prepare, charge, approve, ship"):
        engine.rewind(failed.run_id, "nope")
    with pytest.raises(RunNotFound):
        engine.rewind("no-such-run", "charge")
    assert engine.get(failed.run_id) == failed
    # A rewind to the failed node itself is a retry with the state from before it.
    switch.unlink()
    rewound = engine.rewind(failed.run_id, "charge")
    assert rewound.state == failed.state and engine.run_until_blocked(failed.run_id).status == "WAITING"


def test_repairs_are_fenced_by_the_lease(make_engine: Make) -> None:
    """A run someone is stepping (its lease is held) is RUN_BUSY, and nothing is written."""
    engine = make_engine(*ALL)
    run = engine.start("shop", input={"n": 5})
    held = engine.storage.claim(run.run_id, "someone-else", 60_000)
    assert held is not None
    with pytest.raises(RunBusy):
        engine.rewind(run.run_id, "prepare")
    assert engine.storage.get_run(run.run_id).lease_owner == "someone-else"  # type: ignore[union-attr]
    assert len(_events(engine, run.run_id)) == 1


def test_a_step_still_commits_in_one_transaction(make_engine: Make, db_url: str) -> None:
    """What rewind needs rides on the step's own events: a tick is a claim and one commit."""
    engine = make_engine(*ALL)
    run = engine.start("shop", input={"n": 6})
    storage = engine.storage
    before = storage.write_transactions
    engine.tick(run.run_id)
    assert storage.write_transactions - before == 2
    changes = changes_of(storage, run.run_id)
    assert [(seq, kind) for seq, kind, _, change in changes if change] == [(1, "RUN_STARTED"), (3, "NODE_FINISHED")]
