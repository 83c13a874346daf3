"""flowrt.client against real servers: FlowRuntime in a thread, `flowrt serve` processes, and a
scripted loopback server for the retry policy. (The reference runtime: test_client_reference.py.)"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
import time
from typing import Any, Iterator

import pytest

import flowrt
from client_helpers import FLOWRT_HEALTH, FLOWS, GATE, ScriptedServer, run_json
from examples.demo import ALL as DEMO
from flowrt import Event, FlowNotFound, Run, RunBusy, RunFinished, RunNotFound, RunNotWaiting, RunStatus
from flowrt.client import AsyncClient, Client, HttpError, ServerUnreachable, Unsupported
from http_helpers import REPO, free_port, serve_process, thread_server

SERVED = [*DEMO, *FLOWS]


@pytest.fixture(scope="module")
def driving(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    url = f"sqlite:///{tmp_path_factory.mktemp('client') / 'driving.db'}"
    with thread_server(url, SERVED, workers=2) as srv:
        yield srv


@pytest.fixture(scope="module")
def still(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """--no-drive: only ticks move runs, as on the reference."""
    url = f"sqlite:///{tmp_path_factory.mktemp('client') / 'still.db'}"
    with thread_server(url, SERVED, drive=False) as srv:
        yield srv


@pytest.fixture
def gate() -> Iterator[Any]:
    GATE.reset()
    try:
        yield GATE
    finally:
        GATE.opened.set()  # never leave a driver thread blocked


# --------------------------------------------------------------------------- the life of a run


def test_start_resume_and_timeline_return_the_engines_objects(driving: Any) -> None:
    with Client(driving.url) as client:
        run = client.start("demo-support", {"customer": "ana"}, tenant_id="t-life", wait=True)
        assert isinstance(run, Run) and run.status == RunStatus.WAITING
        assert (run.current_node_id, run.wait_reason, run.tenant_id) == ("create", "awaiting_ticket_creation", "t-life")
        done = client.resume(run.run_id, {"ticketId": "T-7"}, wait=True)
        assert done.status == "COMPLETED" and done.outputs["notify"] == {"notified": True, "ticketId": {"ticketId": "T-7"}}
        assert done.attempts == {"create": 2, "notify": 1} and done.finished
        # The same object the engine holds, field for field.
        assert done == driving.engine.get(run.run_id)
        events = client.timeline(run.run_id)
        assert all(isinstance(e, Event) for e in events)
        assert events == driving.engine.timeline(run.run_id)
        assert [e.seq for e in events] == list(range(1, len(events) + 1))
        assert [e.seq for e in client.timeline(run.run_id, after=3, limit=2)] == [4, 5]
        # Raw JSON, for callers that print it: to_json gives back what the server sent.
        raw = client.request("GET", f"/v1/runs/{run.run_id}")
        assert Run.from_json(raw).to_json() == raw == done.to_json()


def test_start_without_wait_answers_at_once_and_wait_sees_it_end(driving: Any, gate: Any) -> None:
    with Client(driving.url) as client:
        run = client.start("client-gate")
        assert run.status == "RUNNING" and run.current_node_id == "hold"
        assert gate.entered.wait(30), "no driver picked the run up"
        started = time.monotonic()
        still_running = client.wait(run.run_id, timeout=0.3)
        assert still_running.status == "RUNNING"
        assert time.monotonic() - started >= 0.3
        threading.Timer(0.2, gate.opened.set).start()
        done = client.wait(run.run_id, timeout=60)
        assert done.status == "COMPLETED" and done.outputs == {"hold": {"held": True}, "after": {"after": True}}


def test_default_version_is_the_highest(driving: Any, still: Any) -> None:
    for server in (driving, still):
        with Client(server.url) as client:
            run = client.start("client-versions", wait=True)
            assert run.flow_version == "1.10.0" and run.outputs == {"only": {"version": "1.10.0"}}
            assert client.start("client-versions", version="1.2.0", wait=True).outputs["only"] == {"version": "1.2.0"}


def test_initial_state_and_input_reach_the_run(driving: Any) -> None:
    with Client(driving.url) as client:
        run = client.start("demo-fraud", {"amount": 5000, "userId": "u1"}, initial_state={"k": [1]}, wait=True)
        assert run.input == {"amount": 5000, "userId": "u1"} and run.state["k"] == [1]
        assert "reject" in run.outputs


def test_without_drivers_wait_and_start_wait_tick_the_run(still: Any) -> None:
    with Client(still.url) as client:
        run = client.start("demo-fraud", {"amount": 50, "userId": "u"})
        assert run.status == "RUNNING"
        time.sleep(0.2)
        assert client.get(run.run_id).status == "RUNNING", "nothing moves a run on --no-drive"
        one = client.tick(run.run_id)
        assert one.status == "RUNNING" and one.current_node_id == "approve"
        assert client.wait(run.run_id, timeout=30).status == "COMPLETED"
        # A retry backoff is slept through, then the run is ticked on.
        flaky = client.start("client-flaky", wait=True)
        assert flaky.status == "COMPLETED" and flaky.outputs == {"shaky": {"attempt": 2}}
        waiting = client.start("demo-support", wait=True)
        assert waiting.status == "WAITING"
        assert client.resume(waiting.run_id, {"ticketId": "T"}, wait=True).status == "COMPLETED"


def test_cancel(driving: Any) -> None:
    with Client(driving.url) as client:
        run = client.start("demo-support", wait=True)
        cancelled = client.cancel(run.run_id, "duplicate")
        assert cancelled.status == RunStatus.CANCELLED
        assert client.timeline(run.run_id)[-1].payload == {"reason": "duplicate", "by": "api"}
        with pytest.raises(RunFinished):
            client.cancel(run.run_id)


# --------------------------------------------------------------------------- errors


def test_errors_are_the_engines_classes(driving: Any) -> None:
    with Client(driving.url) as client:
        for call in (client.get, client.tick, client.cancel, client.timeline, lambda r: client.resume(r, {})):
            with pytest.raises(RunNotFound):
                call("no-such-run")
        with pytest.raises(FlowNotFound):
            client.start("no-such-flow")
        done = client.start("demo-fraud", {"amount": 1, "userId": "u"}, wait=True)
        with pytest.raises(RunNotWaiting) as caught:
            client.resume(done.run_id, {})
        assert caught.value.code == "RUN_NOT_WAITING" and caught.value.http_status == 409
        with pytest.raises(flowrt.InvalidInput, match="status"):
            list(client.runs(status="SLEEPY"))
        with pytest.raises(flowrt.InvalidInput, match="JSON"):
            client.start("demo-fraud", {"not json": {1, 2}})
        with pytest.raises(Unsupported, match="does not offer GET /v1/nothing"):
            client.request("GET", "/v1/nothing")


def test_run_busy(still: Any, gate: Any) -> None:
    with Client(still.url) as client:
        run = client.start("client-gate")
        first = threading.Thread(target=client.tick, args=(run.run_id,))
        first.start()
        try:
            assert gate.entered.wait(30)
            with pytest.raises(RunBusy):
                client.tick(run.run_id)
        finally:
            gate.opened.set()
            first.join(30)
        assert client.get(run.run_id).current_node_id == "after"


def test_token(tmp_path: Any) -> None:
    with thread_server(f"sqlite:///{tmp_path / 't.db'}", api_token="s3cret") as srv:
        with Client(srv.url) as anonymous, pytest.raises(HttpError) as caught:
            anonymous.flows()
        assert caught.value.code == "UNAUTHORIZED" and caught.value.http_status == 401
        assert "token" in caught.value.message
        with Client(srv.url + "/v1/", token="s3cret") as client:  # a trailing /v1 is understood
            assert {f["flowId"] for f in client.flows()} == {"demo-fraud", "demo-support"}


def test_a_server_that_is_not_there_is_one_clear_error() -> None:
    port = free_port()  # nothing listens there
    started = time.monotonic()
    with Client(f"http://127.0.0.1:{port}", retries=2, retry_backoff=0.01) as client:
        with pytest.raises(ServerUnreachable, match=f"cannot reach http://127.0.0.1:{port}.*after 3 attempts"):
            client.get("r")
        # A tick that never reached the server is safe to send again, so it is retried too.
        with pytest.raises(ServerUnreachable, match="after 3 attempts"):
            client.tick("r")
    assert time.monotonic() - started < 30
    with pytest.raises(flowrt.InvalidInput, match="http://"):
        Client("127.0.0.1:3000")


def test_async_client_does_the_same(driving: Any) -> None:
    async def scenario() -> None:
        async with AsyncClient(driving.url) as client:
            run = await client.start("demo-support", {"c": 1}, tenant_id="t-async", wait=True)
            assert run.status == "WAITING"
            done = await client.resume(run.run_id, {"ticketId": "A"}, wait=True)
            assert done.status == "COMPLETED" and done == driving.engine.get(run.run_id)
            assert [e.type async for e in client.follow(run.run_id)][-1] == "RUN_COMPLETED"
            assert await client.timeline(run.run_id) == driving.engine.timeline(run.run_id)
            assert [r.run_id async for r in client.runs(tenant_id="t-async", page_size=1)] == [run.run_id]
            page = await client.runs_page(tenant_id="t-async")
            assert [r.run_id for r in page.runs] == [run.run_id] and page.next_cursor is None
            assert (await client.wait(run.run_id)).status == "COMPLETED"
            with pytest.raises(RunNotFound):
                await client.get("nope")
            with pytest.raises(RunFinished):
                await client.cancel(run.run_id)
            assert (await client.health())["condition"] == "ok"
        async with AsyncClient(f"http://127.0.0.1:{free_port()}", retries=0) as gone:
            with pytest.raises(ServerUnreachable):
                await gone.flows()

    asyncio.run(scenario())


# --------------------------------------------------------------------------- paging and following


def test_runs_iterates_every_page(driving: Any) -> None:
    with Client(driving.url) as client:
        ids = [client.start("demo-support", {"i": i}, tenant_id="t-pages").run_id for i in range(7)]
        listed = list(client.runs(tenant_id="t-pages", page_size=2))
        assert [r.run_id for r in listed] == ids[::-1]  # newest first, each once
        assert all(isinstance(r, Run) for r in listed)
        page = client.runs_page(tenant_id="t-pages", limit=3)
        assert len(page.runs) == 3 and page.next_cursor is not None
        rest = client.runs_page(tenant_id="t-pages", limit=10, cursor=page.next_cursor)
        assert [r.run_id for r in page.runs + rest.runs] == ids[::-1] and rest.next_cursor is None
        assert page.to_json()["nextCursor"] == page.next_cursor
        assert list(client.runs(tenant_id="t-pages", status="COMPLETED")) == []
        assert len(list(client.runs(tenant_id="t-pages", status=RunStatus.WAITING, flow_id="demo-support"))) == 7


def test_follow_yields_events_as_they_happen_until_the_end(driving: Any) -> None:
    with Client(driving.url, poll_interval=0.05) as client:
        run = client.start("demo-support", wait=True)
        seen: list[Event] = []

        def watch() -> None:
            seen.extend(client.follow(run.run_id))

        watcher = threading.Thread(target=watch)
        watcher.start()
        deadline = time.monotonic() + 30
        while not any(e.type == "RUN_WAITING" for e in seen) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert watcher.is_alive(), "follow stopped before the run ended"
        client.resume(run.run_id, {"ticketId": "F"})
        watcher.join(30)
        assert not watcher.is_alive()
        assert seen == client.timeline(run.run_id) and seen[-1].type == "RUN_COMPLETED"
        assert [e.seq for e in client.follow(run.run_id, after=5)] == list(range(6, len(seen) + 1))


def test_follow_stops_on_cancel(driving: Any) -> None:
    with Client(driving.url, poll_interval=0.05) as client:
        run = client.start("demo-support", wait=True)
        threading.Timer(0.2, client.cancel, args=(run.run_id,)).start()
        assert [e.type for e in client.follow(run.run_id)][-1] == "RUN_CANCELLED"


# --------------------------------------------------------------------------- retries, precisely


def test_idempotent_calls_are_retried_after_a_lost_answer_and_others_are_not() -> None:
    with ScriptedServer(["drop", "drop", (200, run_json())]) as srv, Client(srv.url, retry_backoff=0.01) as client:
        assert client.get("r1").status == "COMPLETED"
        assert [s.method for s in srv.seen] == ["GET", "GET", "GET"]
    with ScriptedServer(["drop", (200, run_json())]) as srv, Client(srv.url, retry_backoff=0.01) as client:
        with pytest.raises(ServerUnreachable):
            client.tick("r1")  # it may have run: never sent twice
        assert len(srv.seen) == 1
    with ScriptedServer(["drop"]) as srv, Client(srv.url, retries=4, retry_backoff=0.01) as client:
        with pytest.raises(ServerUnreachable, match="after 5 attempts"):
            client.flows()
    with ScriptedServer(["drop"]) as srv, Client(srv.url, retries=0) as client:
        with pytest.raises(ServerUnreachable):
            client.flows()
        assert len(srv.seen) == 1


def test_unavailable_answers_are_retried_for_idempotent_calls_only() -> None:
    busy = (503, {"error": "the database cannot be reached", "code": "STORAGE_UNAVAILABLE"})
    with ScriptedServer([busy, busy, (200, run_json())]) as srv, Client(srv.url, retry_backoff=0.01) as client:
        assert client.get("r1").run_id == "r1" and len(srv.seen) == 3
    with ScriptedServer([busy]) as srv, Client(srv.url, retry_backoff=0.01) as client:
        with pytest.raises(flowrt.StorageUnavailable):
            client.get("r1")
        assert len(srv.seen) == 3
        with pytest.raises(flowrt.StorageUnavailable):
            client.resume("r1", {})
        assert [s.method for s in srv.seen[3:]] == ["GET", "POST"]  # /health once (as it answers), resume once


def test_idempotency_key_is_sent_and_makes_start_retryable() -> None:
    script = [(200, FLOWRT_HEALTH), "drop", (200, run_json(status="RUNNING"))]
    with ScriptedServer(script) as srv, Client(srv.url, retry_backoff=0.01) as client:
        run = client.start("f", {"x": 1}, idempotency_key="order-17")
        assert run.run_id == "r1"
        starts = [s for s in srv.seen if s.path.startswith("/v1/runs/start")]
        assert len(starts) == 2  # the lost answer was retried: the key makes that safe
        assert all(s.headers["idempotency-key"] == "order-17" for s in starts)
        assert json.loads(starts[0].body) == {"flowId": "f", "input": {"x": 1}}
    with ScriptedServer([(200, FLOWRT_HEALTH), "drop"]) as srv, Client(srv.url, retry_backoff=0.01) as client:
        with pytest.raises(ServerUnreachable):
            client.start("f")  # no key: a second start could create a second run
        starts = [s for s in srv.seen if s.path.startswith("/v1/runs/start")]
        assert len(starts) == 1 and "idempotency-key" not in starts[0].headers


def test_a_replay_answered_to_a_retry_is_not_reported_as_replayed() -> None:
    """The lost first attempt may have made the run the retry is answered with: this call's own."""
    replayed = {"Idempotent-Replayed": "True"}  # any case: a proxy may rewrite it
    with ScriptedServer([(200, FLOWRT_HEALTH), (200, run_json(status="RUNNING"), replayed)]) as srv, \
            Client(srv.url, retry_backoff=0.01) as client:
        assert client.start("f", {"x": 1}, idempotency_key="order-18").replayed
    script = [(200, FLOWRT_HEALTH), "drop", (200, run_json(status="RUNNING"), replayed)]
    with ScriptedServer(script) as srv, Client(srv.url, retry_backoff=0.01) as client:
        run = client.start("f", {"x": 1}, idempotency_key="order-18")
        assert run.run_id == "r1" and not run.replayed
        assert len([s for s in srv.seen if s.path.startswith("/v1/runs/start")]) == 2


def test_the_async_client_tries_calls_by_the_same_rules() -> None:
    """Both transports run one retry loop (``Settings.tries``); this is the async side of the tests above."""
    busy = (503, {"error": "the database cannot be reached", "code": "STORAGE_UNAVAILABLE"})
    replayed = {"Idempotent-Replayed": "true"}

    async def calls(url: str) -> list[Any]:
        async with AsyncClient(url, retry_backoff=0.01, retries=3) as client:
            got: list[Any] = [(await client.get("r1")).status]  # a lost answer, then a 503: tried again
            with pytest.raises(ServerUnreachable):
                await client.tick("r1")  # a lost answer to a tick: it may have run, so not sent again
            run = await client.start("f", idempotency_key="k-1")  # lost once, then answered as a replay
            got.append(run.replayed)
            with pytest.raises(ServerUnreachable, match="after 4 attempts"):
                await client.get("r1")
            return got

    script = [
        "drop", busy, (200, run_json()), "drop",
        (200, FLOWRT_HEALTH), "drop", (200, run_json(status="RUNNING"), replayed),
        "drop", "drop", "drop", "drop",
    ]  # fmt: skip
    with ScriptedServer(script) as srv:
        assert asyncio.run(calls(srv.url)) == ["COMPLETED", False]  # the retry's replay is this call's own run
        assert [s.method for s in srv.seen] == ["GET"] * 3 + ["POST", "GET", "POST", "POST"] + ["GET"] * 4


def test_idempotent_start_end_to_end(driving: Any) -> None:
    with Client(driving.url) as client:
        first = client.start("demo-support", {"order": 1}, idempotency_key="client-e2e-1")
        again = client.start("demo-support", {"order": 1}, idempotency_key="client-e2e-1", wait=True)
        assert again.run_id == first.run_id and again.replayed and not first.replayed
        assert not client.get(first.run_id).replayed
        with pytest.raises(flowrt.FlowrtError) as caught:
            client.start("demo-support", {"order": 2}, idempotency_key="client-e2e-1")
        assert caught.value.code == "IDEMPOTENCY_CONFLICT" and caught.value.http_status == 409


def test_timeouts_are_errors_and_a_tick_is_not_resent(still: Any, gate: Any) -> None:
    with Client(still.url) as client:
        run = client.start("client-gate")
    with Client(still.url, timeout=0.5, retry_backoff=0.01) as impatient:
        with pytest.raises(ServerUnreachable, match="no answer in time"):
            impatient.tick(run.run_id)  # the node holds the tick far longer than 0.5 s
        gate.opened.set()
        assert gate.calls == 1
    with Client(still.url) as client:
        assert client.wait(run.run_id, timeout=30).status == "COMPLETED"
        assert gate.calls == 1


# --------------------------------------------------------------------------- a real `flowrt serve`


def test_against_flowrt_serve_then_its_death() -> None:
    with serve_process(["--flows", "examples.demo:ALL", "--db", "memory://"]) as srv:
        with Client(srv.url, retries=1, retry_backoff=0.01) as client:
            assert client.health()["driving"] is True
            run = client.start("demo-fraud", {"amount": 5000, "userId": "u"}, wait=True)
            assert run.status == "COMPLETED" and "reject" in run.outputs
            srv.kill()
            with pytest.raises(ServerUnreachable, match="after 2 attempts"):
                client.get(run.run_id)


def test_importing_the_client_stays_light() -> None:
    code = (
        "import sys, flowrt.client, flowrt\n"
        "heavy = [m for m in sys.modules if m.split('.')[0] in ('peewee', 'psycopg', 'litestar', 'uvicorn', 'msgspec')"
        " or m in ('flowrt.engine', 'flowrt.storage', 'flowrt.server', 'flowrt.driver')]\n"
        "assert not heavy, heavy\n"
        "assert flowrt.Client is flowrt.client.Client and flowrt.AsyncClient is flowrt.client.AsyncClient\n"
        "assert flowrt.Engine.__name__ == 'Engine'\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


def test_get_with_wait_long_polls_only_where_drivers_move_runs(driving: Any, still: Any, gate: Any) -> None:
    with Client(driving.url) as client:
        run = client.start("client-gate")
        assert gate.entered.wait(30)
        threading.Timer(0.3, gate.opened.set).start()
        held = driving.client.get(f"/v1/runs/{run.run_id}", params={"wait": 30}, timeout=60)
        assert held.status_code == 200 and held.json()["status"] == "COMPLETED"
        assert driving.client.get(f"/v1/runs/{run.run_id}", params={"wait": 301}).json()["code"] == "BAD_REQUEST"
    with Client(still.url) as client:
        parked = client.start("demo-fraud", {"amount": 1, "userId": "u"})
        started = time.monotonic()
        answer = still.client.get(f"/v1/runs/{parked.run_id}", params={"wait": 20}, timeout=60)
        assert answer.json()["status"] == "RUNNING", "a GET must not move a run"
        assert time.monotonic() - started < 15


def test_the_documented_examples_run(driving: Any, capsys: pytest.CaptureFixture[str]) -> None:
    import re

    docs = (REPO / "docs" / "client.md").read_text()
    readme = (REPO / "README.md").read_text().split("From a Python app, use the client")[1]
    blocks = re.findall(r"```python\n(.*?)```", docs, re.S)[:2] + re.findall(r"```python\n(.*?)```", readme, re.S)[:1]
    for code in blocks:
        exec(compile(code.replace("http://127.0.0.1:3000", driving.url), "client.md", "exec"), {"__name__": "doc"})  # noqa: S102
    out = capsys.readouterr().out
    assert "WAITING awaiting_ticket_creation" in out and "RUN_NOT_WAITING" in out and "RUN_COMPLETED" in out
    assert "COMPLETED {'score'" in out
