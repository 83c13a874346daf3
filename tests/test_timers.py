"""Durable timers on a real `flowrt serve`: they fire by themselves, and across a restart."""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

import httpx
import pytest

from http_helpers import serve_process


@pytest.fixture(params=["sqlite_url", "pg_url"])
def shared_url(request: pytest.FixtureRequest) -> str:
    return request.getfixturevalue(request.param)


def wait_for(client: httpx.Client, run_id: str, status: str, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        run = client.get(f"/v1/runs/{run_id}").json()
        if run["status"] == status:
            return run
        assert time.monotonic() < deadline, f"run still {run['status']}, wanted {status}"
        time.sleep(0.05)


def timer_resumes(client: httpx.Client, run_id: str) -> list[dict[str, Any]]:
    events = client.get(f"/v1/runs/{run_id}/timeline").json()
    return [e for e in events if e["type"] == "RUN_RESUMED"]


def test_a_timer_a_second_ahead_resumes_by_itself(shared_url: str) -> None:
    with serve_process(["--flows", "timer_flows:ALL", "--db", shared_url]) as server:
        client = httpx.Client(base_url=server.url, timeout=10)
        run_id = client.post("/v1/runs/start", json={"flowId": "timer", "input": {"seconds": 1}}).json()["runId"]
        waiting = wait_for(client, run_id, "WAITING", 5)
        wake_at = datetime.fromisoformat(waiting["wakeAt"].replace("Z", "+00:00")).timestamp()
        done = wait_for(client, run_id, "COMPLETED", 5)
        finished_at = datetime.fromisoformat(done["updatedAt"].replace("Z", "+00:00")).timestamp()
        assert 0 <= finished_at - wake_at < 1.0  # within a second of its time
        assert [e["payloadJson"] for e in timer_resumes(client, run_id)] == [{"by": "timer", "payload": None}]


def test_a_timer_due_while_the_server_was_stopped_fires_on_restart(shared_url: str) -> None:
    with serve_process(["--flows", "timer_flows:ALL", "--db", shared_url]) as server:
        client = httpx.Client(base_url=server.url, timeout=10)
        run_id = client.post("/v1/runs/start", json={"flowId": "timer", "input": {"seconds": 1}}).json()["runId"]
        wait_for(client, run_id, "WAITING", 5)
        assert server.terminate() == 0
    time.sleep(1.5)  # the timer comes due while nothing runs
    with serve_process(["--flows", "timer_flows:ALL", "--db", shared_url]) as server:
        client = httpx.Client(base_url=server.url, timeout=10)
        wait_for(client, run_id, "COMPLETED", 5)
        assert [e["payloadJson"]["by"] for e in timer_resumes(client, run_id)] == ["timer"]
