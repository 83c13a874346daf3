"""Engine behaviour, parity with the reference, on every backend (SQLite file, memory, Postgres)."""

from __future__ import annotations

import asyncio
from pathlib import Path
import threading
import time
from datetime import timedelta
from typing import Any

import pytest

from flowrt import (
    DefinitionError,
    Engine,
    Flow,
    FlowNotFound,
    InvalidInput,
    Retry,
    RunFinished,
    RunNotFound,
    RunNotWaiting,
    RunStatus,
    edge,
    entry,
    fail,
    flow,
    node,
    ok,
    wait,
)


def types(engine: Engine, run_id: str) -> list[str]:
    return [e.type for e in engine.timeline(run_id)]


# ---------------------------------------------------------------------------- flows


def linear_flow(n: int = 3) -> Flow:
    f = Flow("linear", "1.0.0")
    for i in range(n):
        f.add_node(f"n{i}", lambda ctx, i=i: ok({"i": i}, patch={f"n{i}": True}), entry=(i == 0))
        if i:
            f.edge(f"n{i - 1}", f"n{i}")
    return f


@flow("demo-fraud", "1.0.0")
class FraudFlow:
    @entry
    @node("score")
    @edge("approve", when=lambda ctx: ctx.state["riskScore"] < 30, priority=1)
    @edge("review", when=lambda ctx: 30 <= ctx.state["riskScore"] < 70, priority=1)
    @edge("reject", when=lambda ctx: ctx.state["riskScore"] >= 70, priority=1)
    def score(self, ctx: Any) -> Any:
        risk = 80 if ctx.input["amount"] > 1000 else 20
        return ok(output={"riskScore": risk}, patch={"riskScore": risk})

    @node
    async def approve(self, ctx: Any) -> Any:
        return ok({"decision": "approved"})

    @node
    def review(self, ctx: Any) -> Any:
        return ok({"decision": "manual_review"})

    @node
    def reject(self, ctx: Any) -> Any:
        return {"decision": "rejected"}  # a bare value means ok(output=value)


# ---------------------------------------------------------------------------- parity


def test_linear_flow_completes_with_outputs_state_and_timeline(make_engine: Any) -> None:
    engine = make_engine(linear_flow(3))
    run = engine.start("linear", "1.0.0", input={"q": 1})
    assert run.status == "RUNNING" and run.current_node_id == "n0"
    run = engine.tick(run.run_id)
    assert run.status == RunStatus.RUNNING and run.current_node_id == "n1"
    run = engine.run_until_blocked(run.run_id)
    assert run.status == "COMPLETED"
    assert run.current_node_id is None
    assert run.outputs == {"n0": {"i": 0}, "n1": {"i": 1}, "n2": {"i": 2}}
    assert run.state == {"n0": True, "n1": True, "n2": True}
    assert run.attempts == {"n0": 1, "n1": 1, "n2": 1}
    assert run.input == {"q": 1}
    events = engine.timeline(run.run_id)
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    assert [e.type for e in events] == ["RUN_STARTED"] + ["NODE_STARTED", "NODE_FINISHED"] * 3 + ["RUN_COMPLETED"]
    assert events[1].payload == {"nodeId": "n0", "attempt": 1}
    assert events[2].payload == {"nodeId": "n0", "attempt": 1, "cached": False}
    assert events[2].node_id == "n0" and events[2].attempt == 1
    # run-level events carry no node, as on the reference
    assert (events[-1].node_id, events[-1].attempt, events[-1].payload) == (None, None, {})
    # a finished run is returned unchanged by tick
    again = engine.tick(run.run_id)
    assert again.status == "COMPLETED" and again.updated_at == run.updated_at
    assert engine.get(run.run_id) == again
    assert engine.get("no-such-run") is None


@pytest.mark.parametrize(("amount", "decision"), [(50, "approved"), (5000, "rejected")])
def test_branching_by_priority_class_style(make_engine: Any, amount: int, decision: str) -> None:
    engine = make_engine(FraudFlow)
    run = engine.start("demo-fraud", input={"amount": amount, "userId": "u1"})
    run = engine.run_until_blocked(run.run_id)
    assert run.status == "COMPLETED"
    last = [k for k in run.outputs if k != "score"]
    assert len(last) == 1 and run.outputs[last[0]] == {"decision": decision}


def test_higher_priority_edge_wins_and_unconditional_edges_match() -> None:
    f = Flow("prio")
    f.add_node("a", lambda ctx: ok(), entry=True)
    f.add_node("low", lambda ctx: ok("low"))
    f.add_node("high", lambda ctx: ok("high"))
    f.edge("a", "low", priority=1).edge("a", "high", when=lambda ctx: True, priority=5)
    with Engine("memory://", flows=[f]) as engine:
        run = engine.run_until_blocked(engine.start("prio").run_id)
        assert run.outputs.get("high") == "high" and "low" not in run.outputs


def test_ambiguous_edge_fails_the_run(make_engine: Any) -> None:
    f = Flow("amb")
    f.add_node("a", lambda ctx: ok(), entry=True)
    f.add_node("b", lambda ctx: ok())
    f.add_node("c", lambda ctx: ok())
    f.edge("a", "b", priority=2).edge("a", "c", priority=2)
    engine = make_engine(f)
    run = engine.run_until_blocked(engine.start("amb").run_id)
    assert run.status == "FAILED"
    assert run.error["code"] == "AMBIGUOUS_EDGE"
    assert types(engine, run.run_id)[-1] == "RUN_ABORTED"


def test_edge_condition_that_raises_fails_the_run(make_engine: Any) -> None:
    f = Flow("bad-edge")
    f.add_node("a", lambda ctx: ok(), entry=True)
    f.add_node("b", lambda ctx: ok())
    f.edge("a", "b", when=lambda ctx: ctx.state["missing"] > 1)
    engine = make_engine(f)
    run = engine.run_until_blocked(engine.start("bad-edge").run_id)
    assert run.status == "FAILED" and run.error["code"] == "EDGE_CONDITION_ERROR"
    assert "KeyError" in run.error["message"]


def support_flow() -> Flow:
    f = Flow("demo-support", "1.0.0")

    @f.node(entry=True)
    def create(ctx: Any) -> Any:
        if ctx.resume_payload:
            return ok({"ticketId": ctx.resume_payload["ticketId"]}, patch={"ticketId": ctx.resume_payload["ticketId"]})
        return wait("awaiting_ticket_creation", until="manual")

    @f.node
    def notify(ctx: Any) -> Any:
        return ok({"notified": True, "ticketId": ctx.state["ticketId"]})

    f.edge("create", "notify")
    return f


def test_wait_then_resume_with_payload(make_engine: Any) -> None:
    engine = make_engine(support_flow())
    run = engine.run_until_blocked(engine.start("demo-support").run_id)
    assert run.status == "WAITING" and run.current_node_id == "create"
    assert run.wait_reason == "awaiting_ticket_creation" and run.wait_until == "manual" and run.wake_at is None
    # a tick on a waiting run polls the node: still waiting
    run = engine.tick(run.run_id)
    assert run.status == "WAITING"
    run = engine.resume(run.run_id, {"ticketId": "T-1"})
    assert run.status == "RUNNING" and run.current_node_id == "notify"
    run = engine.run_until_blocked(run.run_id)
    assert run.status == "COMPLETED"
    assert run.outputs["notify"] == {"notified": True, "ticketId": "T-1"}
    events = engine.timeline(run.run_id)
    resumed = [e for e in events if e.type == "RUN_RESUMED"]
    assert resumed[0].payload == {"by": "api", "payload": {"ticketId": "T-1"}}
    waiting = [e for e in events if e.type == "RUN_WAITING"]
    assert waiting[0].payload == {"nodeId": "create", "reason": "awaiting_ticket_creation", "until": "manual"}
    assert (waiting[0].node_id, waiting[0].attempt) == ("create", None)
    # the node ran before the run waits: NODE_FINISHED, then RUN_WAITING (the reference's order)
    assert [e.type for e in events[:5]] == ["RUN_STARTED", "NODE_STARTED", "NODE_FINISHED", "RUN_WAITING", "NODE_STARTED"]
    with pytest.raises(RunNotWaiting) as err:
        engine.resume(run.run_id, {"ticketId": "again"})
    assert err.value.code == "RUN_NOT_WAITING"


def test_resume_of_running_run_is_an_error_not_a_no_op(make_engine: Any) -> None:
    engine = make_engine(linear_flow(2))
    run = engine.start("linear")
    with pytest.raises(RunNotWaiting):
        engine.resume(run.run_id, {"x": 1})
    assert engine.get(run.run_id).status == "RUNNING"
    assert "RUN_RESUMED" not in types(engine, run.run_id)
    with pytest.raises(RunNotFound):
        engine.resume("nope", None)


def flaky_flow(fail_times: int, retry: Retry, code: str = "NETWORK_ERROR", retryable: bool | None = None) -> Flow:
    f = Flow("flaky")

    @f.node(entry=True, retry=retry)
    def call(ctx: Any) -> Any:
        if ctx.attempt <= fail_times:
            return fail(code, f"attempt {ctx.attempt} failed", retryable=retryable)
        return ok({"attempt": ctx.attempt})

    return f


def test_retry_until_success_with_backoff(make_engine: Any) -> None:
    engine = make_engine(flaky_flow(2, Retry(max_attempts=3, backoff="exponential", base_delay_ms=20, max_delay_ms=30)))
    started = time.monotonic()
    run = engine.run_until_blocked(engine.start("flaky").run_id)
    assert time.monotonic() - started >= 0.045  # 20 ms then min(40, 30) ms
    assert run.status == "COMPLETED" and run.outputs["call"] == {"attempt": 3}
    assert run.attempts == {"call": 3}
    failed = [e for e in engine.timeline(run.run_id) if e.type == "NODE_FAILED"]
    assert [e.payload["retryInMs"] for e in failed] == [20, 30]
    assert [e.attempt for e in failed] == [1, 2]
    assert [(e.payload["nodeId"], e.payload["attempt"]) for e in failed] == [("call", 1), ("call", 2)]
    assert list(failed[0].payload) == ["nodeId", "attempt", "error", "retryInMs"]


def test_retry_exhausted_fails_the_run(make_engine: Any) -> None:
    engine = make_engine(flaky_flow(5, Retry(max_attempts=3, base_delay_ms=1)))
    run = engine.run_until_blocked(engine.start("flaky").run_id)
    assert run.status == "FAILED" and run.attempts == {"call": 3}
    assert run.error == {
        "code": "NETWORK_ERROR", "message": "attempt 3 failed", "retryable": True, "notRetried": "all 3 attempts were used"
    }  # fmt: skip
    timeline = types(engine, run.run_id)
    assert timeline.count("NODE_FAILED") == 3 and timeline[-1] == "RUN_ABORTED"
    aborted = engine.timeline(run.run_id)[-1]
    assert (aborted.node_id, aborted.attempt, list(aborted.payload)) == (None, None, ["error"])
    assert engine.timeline(run.run_id)[-2].payload["notRetried"] == "all 3 attempts were used"


def test_non_retryable_error_fails_at_once(make_engine: Any) -> None:
    engine = make_engine(flaky_flow(5, Retry(max_attempts=5), code="INVALID_CARD"))
    run = engine.run_until_blocked(engine.start("flaky").run_id)
    assert run.status == "FAILED" and run.attempts == {"call": 1}
    assert run.error["retryable"] is False
    failed = next(e for e in engine.timeline(run.run_id) if e.type == "NODE_FAILED")
    assert failed.payload["notRetried"].startswith("INVALID_CARD is not retryable (by default only NETWORK_ERROR, ")
    # explicitly retryable wins over the code
    engine2 = Engine("memory://", flows=[flaky_flow(1, Retry(max_attempts=2), code="CUSTOM", retryable=True)])
    assert engine2.run_until_blocked(engine2.start("flaky").run_id).status == "COMPLETED"
    engine2.close()


def test_exception_becomes_failure_with_code_and_retryable(make_engine: Any) -> None:
    class PaymentDeclined(Exception):
        code = "DECLINED"
        retryable = False

    f = Flow("raises")

    @f.node(entry=True, retry=Retry(max_attempts=3))
    def boom(ctx: Any) -> Any:
        if ctx.attempt == 1:
            raise ConnectionError("socket closed")  # class name as code; not retryable by default
        raise PaymentDeclined("card declined")

    engine = make_engine(f)
    run = engine.run_until_blocked(engine.start("raises").run_id)
    assert run.status == "FAILED" and run.error["code"] == "ConnectionError"

    g = Flow("raises2")

    @g.node(entry=True, retry=Retry(max_attempts=3))
    def boom2(ctx: Any) -> Any:
        raise PaymentDeclined("card declined")

    engine.register(g)
    run = engine.run_until_blocked(engine.start("raises2").run_id)
    traceback = run.error.pop("traceback")
    assert run.error.pop("notRetried").startswith("DECLINED is not retryable")  # with Retry(3): why it stopped
    assert run.error == {"code": "DECLINED", "message": "card declined", "retryable": False}
    # The user's frame and the exception are kept; flowrt's own frames are not.
    assert 'in boom2\n    raise PaymentDeclined("card declined")' in traceback
    assert traceback.rstrip().endswith("PaymentDeclined: card declined") and "flowrt/" not in traceback
    failed = [e for e in engine.timeline(run.run_id) if e.type == "NODE_FAILED"]
    assert failed[-1].payload["error"]["traceback"] == traceback


def test_timeouts_for_async_and_sync_handlers(make_engine: Any) -> None:
    f = Flow("slow")

    @f.node(entry=True, timeout_ms=100, retry=Retry(max_attempts=2))
    async def slow_async(ctx: Any) -> Any:
        if ctx.attempt == 1:
            await asyncio.sleep(5)
        return ok("fast enough")

    @f.node(timeout_ms=100)
    def slow_sync(ctx: Any) -> Any:
        time.sleep(1)
        return ok("never")

    f.edge("slow_async", "slow_sync")
    engine = make_engine(f)
    started = time.monotonic()
    run = engine.run_until_blocked(engine.start("slow").run_id)
    assert time.monotonic() - started < 0.9
    assert run.outputs["slow_async"] == "fast enough" and run.attempts["slow_async"] == 2
    assert run.status == "FAILED" and run.error["code"] == "TIMEOUT" and run.error["retryable"] is True


def test_idempotency_key_reuses_the_stored_result_across_runs(make_engine: Any) -> None:
    calls: list[str] = []
    f = Flow("pay")

    @f.node(entry=True, idempotency_key=lambda ctx: f"charge:{ctx.input['orderId']}")
    def charge(ctx: Any) -> Any:
        calls.append(ctx.run_id)
        return ok({"receipt": len(calls)}, patch={"charged": True})

    engine = make_engine(f)
    first = engine.run_until_blocked(engine.start("pay", input={"orderId": "A1"}).run_id)
    second = engine.run_until_blocked(engine.start("pay", input={"orderId": "A1"}).run_id)
    other = engine.run_until_blocked(engine.start("pay", input={"orderId": "B2"}).run_id)
    assert len(calls) == 2
    assert first.outputs == second.outputs == {"charge": {"receipt": 1}}
    assert second.state == {"charged": True}
    assert other.outputs == {"charge": {"receipt": 2}}
    finished = [e for e in engine.timeline(second.run_id) if e.type == "NODE_FINISHED"]
    assert finished[0].payload == {"nodeId": "charge", "attempt": 1, "cached": True}


def test_failed_attempt_stores_no_idempotency_record(make_engine: Any) -> None:
    calls: list[int] = []
    f = Flow("pay2")

    @f.node(entry=True, idempotency_key=lambda ctx: "same", retry=Retry(max_attempts=2))
    def charge(ctx: Any) -> Any:
        calls.append(ctx.attempt)
        if len(calls) == 1:
            return fail("RATE_LIMIT", "slow down")
        return ok("paid")

    engine = make_engine(f)
    run = engine.run_until_blocked(engine.start("pay2").run_id)
    assert run.status == "COMPLETED" and calls == [1, 2]


def test_deep_merge_patch_and_state_copy_isolation(make_engine: Any) -> None:
    f = Flow("merge")

    @f.node(entry=True)
    def a(ctx: Any) -> Any:
        ctx.state["scratch"] = "ignored"  # in-place changes persist nothing
        return ok(patch={"user": {"name": "Ada", "tags": ["a"]}, "n": 1})

    @f.node
    def b(ctx: Any) -> Any:
        assert "scratch" not in ctx.state
        return ok(patch={"user": {"email": "ada@example.com", "tags": ["b"]}, "n": {"x": 1}})

    f.edge("a", "b")
    engine = make_engine(f)
    run = engine.run_until_blocked(engine.start("merge", initial_state={"user": {"id": 7}}).run_id)
    assert run.state == {"user": {"id": 7, "name": "Ada", "email": "ada@example.com", "tags": ["b"]}, "n": {"x": 1}}


def test_tenant_initial_state_services_and_context(make_engine: Any) -> None:
    seen: dict[str, Any] = {}
    f = Flow("ctx", "2.0.0")

    @f.node(entry=True)
    async def look(ctx: Any) -> Any:
        seen.update(
            tenant=ctx.tenant_id,
            state=ctx.state,
            service=ctx.services["greeter"]("x"),
            flow=(ctx.flow_id, ctx.flow_version),
            attempt=ctx.attempt,
            attempts=ctx.attempts,
            started=ctx.started_at,
            resume=ctx.resume_payload,
        )
        return ok()

    engine = make_engine(f, services={"greeter": lambda s: f"hello {s}"})
    run = engine.run_until_blocked(
        engine.start("ctx", tenant_id="acme", initial_state={"plan": "gold"}).run_id
    )
    assert run.tenant_id == "acme" and run.status == "COMPLETED"
    assert seen["tenant"] == "acme" and seen["state"] == {"plan": "gold"}
    assert seen["service"] == "hello x" and seen["flow"] == ("ctx", "2.0.0")
    assert seen["attempt"] == 1 and seen["attempts"] == {"look": 1} and seen["resume"] is None
    assert seen["started"] == run.created_at
    assert run.to_json()["tenantId"] == "acme"


def test_non_json_output_fails_the_step_cleanly(make_engine: Any) -> None:
    f = Flow("bad-output")
    f.add_node("a", lambda ctx: ok({"when": object()}), entry=True)
    engine = make_engine(f)
    run = engine.run_until_blocked(engine.start("bad-output").run_id)
    assert run.status == "FAILED" and run.error["code"] == "NOT_SERIALIZABLE"
    g = Flow("bad-patch")
    g.add_node("a", lambda ctx: ok(patch={"x": float("nan")}), entry=True)
    engine.register(g)
    run = engine.run_until_blocked(engine.start("bad-patch").run_id)
    assert run.status == "FAILED" and run.error["code"] == "NOT_SERIALIZABLE"
    assert run.state == {}


def test_a_circular_output_fails_the_step_saying_so_and_user_json_is_the_standard_encoding(make_engine: Any) -> None:
    """User values go through the standard library's strict encoder, built once (flowrt.values):
    the text stored is json.dumps's, compact and UTF-8; a value that refers to itself fails."""
    import json

    from flowrt.values import dumps_user

    for value in ({"a": 1, "b": [1.5, None, True, 'caf\u00e9 "q"']}, "s", 5, 2.5, [], {}, {1: 2}):
        assert dumps_user(value) == json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    looped: dict[str, Any] = {}
    looped["self"] = looped
    f = Flow("circular")
    f.add_node("a", lambda ctx: ok(looped), entry=True)
    engine = make_engine(f)
    run = engine.run_until_blocked(engine.start("circular").run_id)
    assert run.status == "FAILED" and run.error["code"] == "NOT_SERIALIZABLE"
    assert "circular reference" in run.error["message"]


def test_start_errors_and_version_selection(make_engine: Any) -> None:
    v1, v2 = Flow("multi", "1.2.0"), Flow("multi", "1.10.0")
    v1.add_node("a", lambda ctx: ok("v1"), entry=True)
    v2.add_node("a", lambda ctx: ok("v2"), entry=True)
    engine = make_engine(v1, v2)
    assert engine.start("multi").flow_version == "1.10.0"  # numeric, not lexical, ordering
    assert engine.start("multi", "1.2.0").flow_version == "1.2.0"
    with pytest.raises(FlowNotFound) as err:
        engine.start("multi", "9.9.9")
    assert err.value.code == "FLOW_NOT_FOUND" and err.value.http_status == 404
    with pytest.raises(FlowNotFound):
        engine.start("nope")
    with pytest.raises(InvalidInput):
        engine.start("multi", input={"x": {1, 2}})
    with pytest.raises(InvalidInput):
        engine.start("multi", initial_state=["not", "a", "dict"])  # type: ignore[arg-type]
    with pytest.raises(RunNotFound):
        engine.tick("missing")
    with pytest.raises(RunNotFound):
        engine.timeline("missing")


def test_cancel(make_engine: Any) -> None:
    engine = make_engine(support_flow())
    run = engine.run_until_blocked(engine.start("demo-support").run_id)
    run = engine.cancel(run.run_id, "customer gave up")
    assert run.status == "CANCELLED"
    events = engine.timeline(run.run_id)
    assert events[-1].type == "RUN_CANCELLED" and events[-1].payload == {"reason": "customer gave up", "by": "api"}
    with pytest.raises(RunFinished):
        engine.cancel(run.run_id)
    with pytest.raises(RunNotWaiting):
        engine.resume(run.run_id, {})
    with pytest.raises(RunNotFound):
        engine.cancel("missing")
    assert engine.tick(run.run_id).status == "CANCELLED"


def test_durable_timer_resumes_by_itself_when_driven(make_engine: Any) -> None:
    f = Flow("timer")

    @f.node(entry=True)
    def sleepy(ctx: Any) -> Any:
        if ctx.attempt == 1:
            return wait("cool-off", until=timedelta(milliseconds=200))
        return ok({"woke": ctx.resume_payload})

    engine = make_engine(f)
    run = engine.run_until_blocked(engine.start("timer").run_id)
    assert run.status == "WAITING" and run.wake_at is not None and run.wait_until.endswith("Z")
    assert engine.drive_next() is False  # not due yet
    time.sleep(0.25)
    assert engine.drive_next() is True
    run = engine.get(run.run_id)
    assert run.status == "COMPLETED" and run.outputs["sleepy"] == {"woke": None}
    resumed = [e for e in engine.timeline(run.run_id) if e.type == "RUN_RESUMED"]
    assert resumed[0].payload == {"by": "timer", "payload": None}


def test_long_backoff_parks_the_run_for_drivers(make_engine: Any) -> None:
    engine = make_engine(flaky_flow(1, Retry(max_attempts=2, base_delay_ms=60_000)), inline_backoff=1.0)
    run = engine.start("flaky")
    assert engine.drive_next() is True
    run = engine.get(run.run_id)
    assert run.status == "RUNNING" and run.wake_at is not None
    assert engine.drive_next() is False  # parked; no driver is pinned by it
    assert engine.tick(run.run_id).attempts == {"call": 1}  # tick will not skip a long backoff


def test_list_runs_filters_and_keyset_pagination(make_engine: Any) -> None:
    engine = make_engine(linear_flow(1), support_flow())
    ids = [engine.start("linear", tenant_id="t1" if i % 2 else "t2").run_id for i in range(7)]
    waiting = engine.run_until_blocked(engine.start("demo-support").run_id)
    page, cursor = engine.list_runs(flow_id="linear", limit=3)
    assert [r.run_id for r in page] == ids[::-1][:3] and cursor
    seen = [r.run_id for r in page]
    while cursor:
        page, cursor = engine.list_runs(flow_id="linear", limit=3, cursor=cursor)
        seen += [r.run_id for r in page]
    assert seen == ids[::-1]
    assert {r.run_id for r in engine.list_runs(tenant_id="t1")[0]} == set(ids[1::2])
    assert [r.run_id for r in engine.list_runs(status="WAITING")[0]] == [waiting.run_id]
    assert set(engine.running_run_ids()) == set(ids)
    with pytest.raises(InvalidInput):
        engine.list_runs(status="SLEEPING")
    with pytest.raises(InvalidInput):
        engine.list_runs(limit=0)


@pytest.mark.parametrize("shared", ["sqlite_url", "pg_url"])
def test_flow_not_registered_in_this_process(shared: str, request: pytest.FixtureRequest) -> None:
    url = request.getfixturevalue(shared)
    engine = Engine(url, flows=[linear_flow(2)])
    run = engine.start("linear")
    other = Engine(url)  # same database, no flows loaded
    request.addfinalizer(engine.close)
    request.addfinalizer(other.close)
    from flowrt import FlowNotRegistered

    with pytest.raises(FlowNotRegistered) as err:
        other.tick(run.run_id)
    assert err.value.http_status == 422
    assert engine.tick(run.run_id).current_node_id == "n1"  # the lease was released


# ---------------------------------------------------------------------------- definitions


def test_definition_validation_names_the_culprit() -> None:
    f = Flow("broken")
    f.add_node("a", lambda ctx: ok())
    with pytest.raises(DefinitionError, match="exactly one entry"):
        f.validate()
    f.add_node("b", lambda ctx: ok(), entry=True)
    f.edge("b", "ghost")
    with pytest.raises(DefinitionError, match="'broken'.*ghost"):
        Engine("memory://").register(f)
    with pytest.raises(DefinitionError, match="duplicate"):
        f.add_node("a", lambda ctx: ok())
    with pytest.raises(DefinitionError, match="max_attempts"):
        Flow("r").add_node("x", lambda ctx: ok(), retry=Retry(max_attempts=0))
    with pytest.raises(DefinitionError, match="timeout_ms"):
        Flow("t").add_node("x", lambda ctx: ok(), timeout_ms=-5)
    with pytest.raises(DefinitionError):

        @flow("two-entries")
        class Two:
            @entry
            @node
            def a(self, ctx: Any) -> Any: ...

            @entry
            @node
            def b(self, ctx: Any) -> Any: ...


def test_to_dict_describes_the_flow() -> None:
    f = Flow("order-flow", "1.0.0")
    f.add_node("validate", lambda ctx: ok(), entry=True)
    f.add_node(
        "charge",
        lambda ctx: ok(),
        retry=Retry(3, "exponential", 100, 2000),
        timeout_ms=5000,
        idempotency_key=lambda ctx: "k",
    )
    f.edge("validate", "charge", when=lambda ctx: True, priority=1)
    d = f.to_dict()
    assert d["flowId"] == "order-flow" and d["entry"] == "validate"
    assert d["nodes"]["charge"]["retry"] == {
        "maxAttempts": 3, "backoff": "exponential", "baseDelayMs": 100, "maxDelayMs": 2000, "maxRecoveries": 5,
    }  # fmt: skip
    assert d["nodes"]["charge"]["maxRecoveries"] == 5
    assert d["nodes"]["charge"]["timeoutMs"] == 5000 and d["nodes"]["charge"]["hasIdempotencyKey"] is True
    assert d["edges"] == [{"from": "validate", "to": "charge", "priority": 1, "hasCondition": True, "condition": "True"}]
    engine = Engine("memory://", flows=[f, FraudFlow])
    assert [x["flowId"] for x in engine.list_flows()] == ["demo-fraud", "order-flow"]
    engine.close()


def test_loader_finds_flows_by_import_path(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from flowrt.loader import load_all, load_flows

    (tmp_path / "myflows.py").write_text(
        "from flowrt import Flow, ok, flow, node, entry\n"
        "a = Flow('a'); a.add_node('x', lambda ctx: ok(), entry=True)\n"
        "@flow('b')\nclass B:\n    @entry\n    @node\n    def x(self, ctx): return ok()\n"
        "ALL = [a, B]\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    assert [f.flow_id for f in load_flows("myflows:ALL")] == ["a", "b"]
    assert [f.flow_id for f in load_flows("myflows:a")] == ["a"]
    assert sorted(f.flow_id for f in load_flows("myflows")) == ["a", "b"]
    assert len(load_all(["myflows:a,myflows:B"])) == 2
    with pytest.raises(DefinitionError, match="cannot import"):
        load_flows("no_such_module_xyz:ALL")
    with pytest.raises(DefinitionError, match="no attribute"):
        load_flows("myflows:MISSING")


def test_status_compares_to_plain_strings() -> None:
    assert RunStatus.WAITING == "WAITING" and "COMPLETED" == RunStatus.COMPLETED
    assert RunStatus("FAILED").finished and not RunStatus.RUNNING.finished


# ---------------------------------------------------------------------------- concurrency


def test_twenty_threads_ticking_one_run_execute_each_node_once(make_engine: Any) -> None:
    counts: dict[str, int] = {}
    lock = threading.Lock()
    f = Flow("contended")
    for i in range(3):

        def handler(ctx: Any, name: str = f"n{i}") -> Any:
            with lock:
                counts[name] = counts.get(name, 0) + 1
            time.sleep(0.02)
            return ok(name)

        f.add_node(f"n{i}", handler, entry=(i == 0))
        if i:
            f.edge(f"n{i - 1}", f"n{i}")
    engine = make_engine(f)
    run_id = engine.start("contended").run_id
    errors: list[BaseException] = []
    barrier = threading.Barrier(20)

    def worker() -> None:
        from flowrt import RunBusy

        barrier.wait()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                if engine.tick(run_id).finished:
                    return
            except RunBusy:
                time.sleep(0.001)
            except BaseException as exc:  # noqa: BLE001
                errors.append(exc)
                return

    threads = [threading.Thread(target=worker) for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert counts == {"n0": 1, "n1": 1, "n2": 1}
    run = engine.get(run_id)
    assert run.status == "COMPLETED" and run.attempts == {"n0": 1, "n1": 1, "n2": 1}
    assert types(engine, run_id).count("NODE_FINISHED") == 3


def test_eight_threads_drive_five_hundred_runs(make_engine: Any, backend: str) -> None:
    engine = make_engine(linear_flow(3))
    ids = [engine.start("linear", input={"i": i}).run_id for i in range(500)]
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            while engine.drive_next():
                pass
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    runs, _ = engine.list_runs(status="COMPLETED", limit=1000)
    assert len(runs) == 500 and {r.run_id for r in runs} == set(ids)
    assert all(r.attempts == {"n0": 1, "n1": 1, "n2": 1} for r in runs)


def test_tick_fires_a_due_timer_without_drivers(make_engine: Any) -> None:
    f = Flow("timer2")

    @f.node(entry=True)
    def nap(ctx: Any) -> Any:
        if ctx.attempt == 1:
            return wait("nap", until=timedelta(milliseconds=50))
        return ok(ctx.resume_payload)

    engine = make_engine(f)
    run = engine.run_until_blocked(engine.start("timer2").run_id)
    assert run.status == "WAITING"
    time.sleep(0.06)
    run = engine.tick(run.run_id)
    assert run.status == "COMPLETED"
    resumed = [e.payload for e in engine.timeline(run.run_id) if e.type == "RUN_RESUMED"]
    assert resumed == [{"by": "timer", "payload": None}]


def test_unreachable_database_is_a_clear_error() -> None:
    from flowrt import StorageUnavailable

    with pytest.raises(StorageUnavailable) as err:
        Engine("postgresql://postgres@127.0.0.1:1/nothing")
    assert err.value.code == "STORAGE_UNAVAILABLE" and "127.0.0.1:1" in str(err.value)
    with pytest.raises(InvalidInput):
        Engine("mysql://nope")


# ---------------------------------------------------------------------------- regressions


def test_lost_worker_is_recorded_even_after_a_claim_that_backs_off(make_engine: Any) -> None:
    engine = make_engine(linear_flow(2))
    run = engine.start("linear")
    engine.storage.claim(run.run_id, "dead-worker", 100)  # a worker claims, then dies
    time.sleep(0.15)
    with pytest.raises(RunNotWaiting):
        engine.resume(run.run_id, {})  # claims the expired lease, then backs off
    run = engine.run_until_blocked(run.run_id)
    lost = [e for e in engine.timeline(run.run_id) if e.type == "NODE_FAILED"]
    assert [e.payload["error"]["code"] for e in lost] == ["WORKER_LOST"]
    assert "dead-worker" in lost[0].payload["error"]["message"]


def test_drivers_claim_only_flows_their_process_has(sqlite_url: str) -> None:
    with Engine(sqlite_url, flows=[linear_flow(1)]) as has, Engine(sqlite_url) as lacks:
        run = has.start("linear")
        assert lacks.drive_next() is False
        assert has.get(run.run_id).wake_at is None  # not parked for anyone
        assert has.drive_next() is True and has.get(run.run_id).status == "COMPLETED"


def test_an_idle_driver_writes_nothing(make_engine: Any) -> None:
    engine = make_engine(linear_flow(1))
    before = engine.storage.write_transactions
    assert engine.drive_next() is False
    assert engine.storage.write_transactions == before


def test_poll_that_succeeds_clears_the_wait_fields(make_engine: Any) -> None:
    f = Flow("poll")

    @f.node(entry=True)
    def check(ctx: Any) -> Any:
        return wait("not yet", until="manual") if ctx.attempt == 1 else ok("ready")

    engine = make_engine(f)
    run = engine.run_until_blocked(engine.start("poll").run_id)
    assert run.wait_reason == "not yet"
    run = engine.tick(run.run_id)
    assert run.status == "COMPLETED" and run.wait_reason is None and run.wait_until is None


def test_timeout_error_raised_by_a_handler_is_not_a_node_timeout(make_engine: Any) -> None:
    f = Flow("own-timeout")

    @f.node(entry=True, timeout_ms=5000)
    async def call(ctx: Any) -> Any:
        raise TimeoutError("upstream socket timed out")

    engine = make_engine(f)
    run = engine.run_until_blocked(engine.start("own-timeout").run_id)
    assert run.error["code"] == "TimeoutError" and "upstream" in run.error["message"]


def test_prerelease_versions_sort_before_their_release() -> None:
    flows = []
    for version in ("1.0.0-beta", "1.0.0", "0.9.0", "1.0.0-alpha+build.7"):
        f = Flow("v", version)
        f.add_node("a", lambda ctx: ok(), entry=True)
        flows.append(f)
    with Engine("memory://", flows=flows) as engine:
        assert engine.start("v").flow_version == "1.0.0"


def test_invalid_until_is_an_invalid_result(make_engine: Any) -> None:
    f = Flow("bad-until")
    f.add_node("a", lambda ctx: wait("x", until=60), entry=True)
    engine = make_engine(f)
    run = engine.run_until_blocked(engine.start("bad-until").run_id)
    assert run.status == "FAILED" and run.error["code"] == "INVALID_RESULT"


def test_missing_postgres_schema_is_a_clear_error() -> None:
    from conftest import require_pg, schema_url

    from flowrt import StorageUnavailable

    require_pg()
    with pytest.raises(StorageUnavailable, match="schema"):
        Engine(schema_url("flowrt_no_such_schema_xyz"))


def test_every_table_and_index_carries_the_flowrt_prefix(sqlite_url: str) -> None:
    import sqlite3

    with Engine(sqlite_url):
        pass
    names = sqlite3.connect(sqlite_url[len("sqlite:///") :]).execute(
        "SELECT name FROM sqlite_master WHERE type IN ('table', 'index') AND name NOT LIKE 'sqlite_%'"
    ).fetchall()
    assert names and all(name.startswith("flowrt_") for (name,) in names), names


def test_deeply_nested_output_fails_the_step_instead_of_crashing(make_engine: Any) -> None:
    def deep(ctx: Any) -> Any:
        value: Any = []
        for _ in range(100_000):
            value = [value]
        return ok(value)

    f = Flow("deep")
    f.add_node("a", deep, entry=True)
    engine = make_engine(f)
    run = engine.run_until_blocked(engine.start("deep").run_id)
    assert run.status == "FAILED" and run.error["code"] == "NOT_SERIALIZABLE"


def test_a_stopping_driver_hands_the_run_back_after_the_step_in_hand(make_engine: Any) -> None:
    engine = make_engine(linear_flow(3))
    run = engine.start("linear")
    assert engine.drive_next(should_stop=lambda: engine.get(run.run_id).current_node_id == "n1") is True
    run = engine.get(run.run_id)
    assert run.status == "RUNNING" and run.current_node_id == "n1"
    assert engine.tick(run.run_id).current_node_id == "n2"  # the lease was handed back


def test_closing_with_a_step_in_flight_counts_it_as_lost(sqlite_url: str) -> None:
    from flowrt.driver import Drivers

    started = threading.Event()
    f = Flow("slow-close")

    @f.node(entry=True, retry=Retry(max_attempts=2))
    def slow(ctx: Any) -> Any:
        if ctx.attempt == 1:
            started.set()
            time.sleep(2)
        return ok(ctx.attempt)

    first = Engine(sqlite_url, flows=[f])
    run = first.start("slow-close")
    drivers = Drivers(first, workers=1).start()
    assert started.wait(5)
    drivers.stop(timeout=0.1)  # the grace period runs out with the node still running
    first.close()
    with Engine(sqlite_url, flows=[f]) as second:
        done = second.run_until_blocked(run.run_id)  # no wait for a lease TTL: it was expired
        assert done.status == "COMPLETED" and done.outputs == {"slow": 2}
        lost = [e for e in second.timeline(run.run_id) if e.type == "NODE_FAILED"]
        assert [(e.attempt, e.payload["error"]["code"]) for e in lost] == [(1, "WORKER_LOST")]


def test_deeply_nested_input_is_invalid_input(make_engine: Any) -> None:
    engine = make_engine(linear_flow(1), support_flow())
    deep: Any = None
    for _ in range(100_000):
        deep = [deep]
    with pytest.raises(InvalidInput):
        engine.start("linear", input={"v": deep})
    run = engine.run_until_blocked(engine.start("demo-support").run_id)
    with pytest.raises(InvalidInput):
        engine.resume(run.run_id, deep)


def test_an_interrupt_inside_a_handler_counts_as_a_lost_attempt(make_engine: Any) -> None:
    f = Flow("interrupted")

    @f.node(entry=True, retry=Retry(max_attempts=2))
    def node_a(ctx: Any) -> Any:
        if ctx.attempt == 1:
            raise KeyboardInterrupt
        return ok(ctx.attempt)

    engine = make_engine(f)
    run = engine.start("interrupted")
    with pytest.raises(KeyboardInterrupt):
        engine.tick(run.run_id)
    run = engine.run_until_blocked(run.run_id)
    assert run.status == "COMPLETED" and run.outputs == {"node_a": 2}
    lost = [e.payload["error"]["code"] for e in engine.timeline(run.run_id) if e.type == "NODE_FAILED"]
    assert lost == ["WORKER_LOST"]


def test_a_cursor_that_was_never_issued_is_rejected(make_engine: Any) -> None:
    engine = make_engine(linear_flow(1))
    with pytest.raises(InvalidInput, match="cursor"):
        engine.list_runs(cursor="garbage")


def test_cancel_clears_the_wait(make_engine: Any) -> None:
    engine = make_engine(support_flow())
    run = engine.run_until_blocked(engine.start("demo-support").run_id)
    run = engine.cancel(run.run_id)
    assert run.status == "CANCELLED" and run.wait_reason is None and run.wait_until is None


def test_sqlite_wal_is_rewound_under_steady_writes(tmp_path: Any) -> None:
    """Background checkpoints must rewind the WAL, not just copy it: else it grows without end."""
    path = tmp_path / "wal.db"

    def salts() -> bytes:
        """The WAL header's checkpoint sequence and salts: they change each time the WAL is rewound."""
        with open(f"{path}-wal", "rb") as f:
            return f.read(32)[12:24]

    with Engine(f"sqlite:///{path}", flows=[linear_flow(3)]) as engine:
        engine.storage.checkpoint_interval = 0.1
        engine.run_until_blocked(engine.start("linear").run_id)
        seen = {salts()}
        deadline = time.monotonic() + 10  # a deadline, not a pace: a loaded machine writes less
        while len(seen) < 3 and time.monotonic() < deadline:
            engine.run_until_blocked(engine.start("linear").run_id)
            seen.add(salts())
        # A WAL that is only copied back, never rewound, keeps its salts and grows without end.
        assert len(seen) >= 3, "the WAL was not rewound while writes went on"


def test_drivers_back_off_while_the_database_is_away(make_engine: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from flowrt import StorageUnavailable
    from flowrt.driver import Drivers, recover

    engine = make_engine(linear_flow(1))
    calls: list[float] = []

    def unavailable(*args: Any, **kwargs: Any) -> Any:
        calls.append(time.monotonic())
        raise StorageUnavailable("database went away")

    monkeypatch.setattr(engine.storage, "claim_next", unavailable)
    drivers = Drivers(engine, workers=2, poll_interval=0.01).start()
    time.sleep(0.5)
    drivers.stop()
    assert 1 <= len(calls) <= 4  # each driver tried, then waited a second; no hot loop
    calls.clear()
    assert recover(engine, concurrency=2).driven == 0 and len(calls) == 2  # one try per worker


_FORKED_ID_BITS = """
import os, random
from flowrt import runs
state = runs._id_random.getstate()
read, write = os.pipe()
pid = os.fork()
if pid == 0:
    os.write(write, str(runs._id_random.getrandbits(62)).encode())
    os._exit(0)
os.close(write)
child = int(os.read(read, 100))
os.waitpid(pid, 0)
twin = random.Random()
twin.setstate(state)  # what the child drew had nobody reseeded it
print("reseeded" if child != twin.getrandbits(62) else "inherited")
"""


def test_run_ids_are_time_ordered_and_unique_whatever_the_user_seeds() -> None:
    """The random part of a run id comes from flowrt's own generator: a user's random.seed()
    (common in tests and simulations) must not make two processes issue the same ids, nor
    may a forked child repeat its parent's."""
    import os
    import random
    import subprocess
    import sys

    from flowrt.runs import new_run_id

    saved = random.getstate()
    try:
        random.seed(0)
        first = [new_run_id() for _ in range(500)]
        random.seed(0)
        second = [new_run_id() for _ in range(500)]
    finally:
        random.setstate(saved)
    ids = first + second
    assert len(set(ids)) == len(ids)
    assert ids == sorted(ids)  # time-ordered, with a counter inside one millisecond
    assert len({i[19:] for i in ids}) == len(ids)  # the random tails differ too, not only the counters

    if hasattr(os, "fork"):  # in a fresh interpreter of one thread: a fork inside pytest's is not safe
        forked = subprocess.run([sys.executable, "-c", _FORKED_ID_BITS], capture_output=True, text=True, timeout=60)
        assert forked.stdout.strip() == "reseeded", forked.stderr


@pytest.mark.parametrize("ttl", [0, -1, float("nan"), float("inf"), 1e9])
def test_a_lease_ttl_out_of_range_is_refused_before_a_database_is_opened(tmp_path: Path, ttl: float) -> None:
    # inf once failed deep in the engine (OverflowError: no expiry time to store), and
    # `flowrt serve --lease-ttl inf` with it as an internal error.
    db = tmp_path / "never.db"
    with pytest.raises(InvalidInput, match="lease_ttl must be above 0 and at most 86400 seconds"):
        Engine(f"sqlite:///{db}", lease_ttl=ttl)
    assert not db.exists()
    Engine("memory://", lease_ttl=86_400).close()  # a day is the longest taken
