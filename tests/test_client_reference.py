"""flowrt.client against the reference runtime (@hazeljs/flow-runtime, ../shared/peer/start.sh).

Skipped, saying why, where it cannot start (no node/npm, no peer checkout, no npm registry
for its first install). Its API has no listing, cancel or long-poll: those calls raise
Unsupported, and waiting ticks the run, as a caller of that API must.
"""

from __future__ import annotations

import asyncio
from typing import Iterator

import pytest

from flowrt import FlowNotFound, Run, RunNotFound
from flowrt.client import AsyncClient, Client, Unsupported
from reference_peer import running_reference

@pytest.fixture(scope="module")
def reference() -> Iterator[str]:
    with running_reference() as url:
        yield url


def test_a_run_from_start_to_end(reference: str) -> None:
    with Client(reference) as client:
        assert client.health()["status"] == "alive"
        # No version: the reference needs one, so the client names the highest registered.
        run = client.start("demo-support", {"customer": "ana"}, wait=True)
        assert isinstance(run, Run) and run.status == "WAITING" and run.flow_version == "1.0.0"
        assert run.current_node_id == "create" and run.attempts == {}  # fields it does not send are empty
        # Its resume answers with part of a run: the client fetches the whole one.
        done = client.resume(run.run_id, {"ticketId": "T-1"}, wait=True)
        assert done.status == "COMPLETED" and done.outputs["create"] == {"ticketId": "T-1"}
        assert done.state is not None and done.created_at <= done.updated_at
        fraud = client.start("demo-fraud", {"amount": 50, "userId": "u"}, version="1.0.0")
        assert fraud.status == "RUNNING"
        ticked = client.tick(fraud.run_id)
        assert ticked.current_node_id == "approve" and ticked.state["riskScore"] == 20
        assert client.wait(fraud.run_id, timeout=30).status == "COMPLETED"


def test_its_timeline_is_numbered_and_followed(reference: str) -> None:
    with Client(reference, poll_interval=0.05) as client:
        run = client.start("demo-fraud", {"amount": 5000, "userId": "u"}, wait=True)
        events = client.timeline(run.run_id)
        assert [e.seq for e in events] == list(range(1, len(events) + 1))  # it sends no seq
        assert all(e.run_id == run.run_id for e in events)
        assert events[0].type == "RUN_STARTED" and events[-1].type == "RUN_COMPLETED"
        assert client.timeline(run.run_id, after=2, limit=2) == events[2:4]
        assert list(client.follow(run.run_id)) == events
        assert list(client.follow(run.run_id, after=len(events) - 1)) == events[-1:]


def test_its_errors_and_what_it_does_not_offer(reference: str) -> None:
    with Client(reference) as client:
        with pytest.raises(RunNotFound):
            client.get("no-such-run")
        with pytest.raises(RunNotFound):
            client.tick("no-such-run")  # it answers 500 "RunNotFoundError: ..."
        with pytest.raises(FlowNotFound):
            client.start("no-such-flow")
        with pytest.raises(FlowNotFound):
            client.start("demo-fraud", version="9.9.9")
        run = client.start("demo-support", wait=True)
        with pytest.raises(Unsupported, match="does not offer POST /v1/runs/.*/cancel"):
            client.cancel(run.run_id)
        with pytest.raises(Unsupported, match="does not offer GET /v1/runs"):
            list(client.runs())
        with pytest.raises(Unsupported):
            client.runs_page()


def test_the_async_client_on_it(reference: str) -> None:
    async def scenario() -> None:
        async with AsyncClient(reference) as client:
            run = await client.start("demo-support", wait=True)
            done = await client.resume(run.run_id, {"ticketId": "A"}, wait=True)
            assert done.status == "COMPLETED"
            assert [e.type async for e in client.follow(run.run_id)][-1] == "RUN_COMPLETED"
            with pytest.raises(Unsupported):
                await client.cancel(run.run_id)

    asyncio.run(scenario())


def test_flows_are_listed(reference: str) -> None:
    with Client(reference) as client:
        assert {f["flowId"] for f in client.flows()} == {"demo-fraud", "demo-support"}
