"""A tick's and a GET's answer is encoded straight from the stored row (``Run.stored_to_json``):
it must be the answer ``Run.to_json`` gives, byte for byte, for every kind of run -- and on a
real server, the same bytes the engine's own view of the run encodes to."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.configuration import set_hypothesis_home_dir

from flowrt import Engine, Flow, Retry, fail, ok, wait
from flowrt.runs import Run
from http_helpers import thread_server

set_hypothesis_home_dir(Path(tempfile.gettempdir()) / "flowrt-hypothesis")

encode = msgspec.json.Encoder().encode


def _flow() -> Flow:
    """Runs of every shape: input and patches as given, a wait with a deadline, a failure with
    its error, a retry backoff (wake_at set), a tenant."""
    flow = Flow("wire-shapes", "1")

    def first(ctx: Any) -> Any:
        mode = ctx.input.get("mode") if isinstance(ctx.input, dict) else None
        if mode == "wait":
            return wait("for a person: é ✓", until="2030-01-01T00:00:00Z", patch={"asked": True})
        if mode == "fail":
            return fail("BAD_THING", "it went wrong \u0001 \"quoted\"", retryable=False)
        if mode == "retry" and ctx.attempt == 1:
            return fail("TIMEOUT", "try again later")
        return ok(output={"echo": ctx.input, "unicode": "日本 \u2028"}, patch=ctx.input.get("patch", {}) if isinstance(ctx.input, dict) else {})

    flow.add_node("first", first, entry=True, retry=Retry(max_attempts=3, base_delay_ms=60_000))
    flow.add_node("second", lambda ctx: ok(output=[1, 2.5, None, {"deep": {"er": []}}]))
    flow.edge("first", "second")
    return flow


def _both(engine: Engine, run_id: str) -> tuple[bytes, bytes]:
    row = engine.storage.get_run(run_id)
    assert row is not None
    return encode(Run.stored_to_json(row)), encode(engine.get(run_id).to_json())  # type: ignore[union-attr]


@pytest.mark.parametrize(
    "value",
    [
        None, {"mode": "wait"}, {"mode": "fail"}, {"mode": "retry"}, {"patch": {"k": "v", "n": [1, {"x": None}]}},
        "a string", 12345678901234567890123, [True, False], {"ünï": "cödé", "emoji": "🙂", "ctl": "\u0000\u001f"},
    ],
)  # fmt: skip
def test_the_stored_answer_is_the_runs_answer_byte_for_byte(tmp_path: Path, value: Any) -> None:
    with Engine(f"sqlite:///{tmp_path / 'w.db'}", flows=[_flow()]) as engine:
        run = engine.start("wire-shapes", "1", value, tenant_id="acme" if value is None else None)
        seen = [_both(engine, run.run_id)]
        for _ in range(3):
            engine.tick(run.run_id)
            seen.append(_both(engine, run.run_id))
        for stored, built in seen:
            assert stored == built


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    value=st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
        lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
        max_leaves=12,
    )
)
def test_any_json_input_answers_the_same_value(tmp_path: Path, value: Any) -> None:
    # A float in exponent form may be spelled differently (the stored 1e+100 or 1e-05 against a
    # re-encoded 1e100 or 0.00001): the same number. Everything else is the same bytes.
    with Engine("memory://", flows=[_flow()]) as engine:
        run = engine.start("wire-shapes", "1", {"patch": {"v": value}, "value": value})
        engine.tick(run.run_id)
        stored, built = _both(engine, run.run_id)
        assert msgspec.json.decode(stored) == msgspec.json.decode(built)
        if not any("e" in repr(x) for x in _floats(value)):
            assert stored == built


def _floats(value: Any) -> list[float]:
    if isinstance(value, float):
        return [value]
    if isinstance(value, dict):
        value = list(value.values())
    return [x for item in value for x in _floats(item)] if isinstance(value, list) else []


def test_a_servers_tick_and_get_answer_with_the_stored_run(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 's.db'}"
    with thread_server(url, flows=[_flow()], drive=False) as server:
        body = {"flowId": "wire-shapes", "version": "1", "input": {"patch": {"a": "é"}}}
        started = server.client.post("/v1/runs/start", json=body)
        assert started.status_code == 200, started.text
        run_id = started.json()["runId"]
        ticked = server.client.post(f"/v1/runs/{run_id}/tick")
        got = server.client.get(f"/v1/runs/{run_id}")
        assert ticked.status_code == got.status_code == 200 and got.content == ticked.content
        assert encode(server.engine.get(run_id).to_json()) == got.content  # type: ignore[union-attr]
        assert got.json()["stateJson"] == {"a": "é"} and got.json()["currentNodeId"] == "second"
