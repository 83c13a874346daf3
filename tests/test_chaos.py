"""Chaos: several `flowrt serve` processes share one database while one of them is
kill -9'd every couple of seconds and restarted. At the end every run is COMPLETED, every
node's result was committed exactly once, and no node ran twice without a crash to explain it.

Default size is small; FLOWRT_CHAOS_FULL=1 runs the issue's full size (1,000 runs, 3 processes).
"""

from __future__ import annotations

import os
import random
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest

from flowrt import Engine
from http_helpers import ServeProcess

FULL = os.environ.get("FLOWRT_CHAOS_FULL") == "1"
LEASE_TTL = "1.5"


def call(server: ServeProcess, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    resp = httpx.request(method, server.url + path, json=body, timeout=10)
    return resp.status_code, resp.json()


def any_live(servers: list[ServeProcess], method: str, path: str, body: Any = None) -> tuple[int, Any]:
    """Try the servers in random order until one answers (others may be dead or restarting)."""
    deadline = time.monotonic() + 30
    while True:
        for server in random.sample(servers, len(servers)):
            try:
                return call(server, method, path, body)
            except httpx.TransportError:
                continue
        assert time.monotonic() < deadline, "no server answered for 30 s"
        time.sleep(0.1)


def run_chaos(url: str, side: str, processes: int, runs: int, budget: float, spread: float) -> None:
    import chaos_flows  # noqa: PLC0415 - tests/ is on sys.path (pyproject's pythonpath)

    chaos_flows.create_side_table(side)
    args = ["--flows", "chaos_flows:ALL", "--db", url, "--workers", "2", "--lease-ttl", LEASE_TTL, "--log-level", "warning"]
    env = {"FLOWRT_CHAOS_SIDE": side}
    servers = [ServeProcess(args, env) for _ in range(processes)]
    engine = Engine(url, flows=chaos_flows.ALL)  # for reading results only
    try:
        run_ids: list[str] = []
        kills = 0
        next_kill = time.monotonic() + 1.5
        started = time.monotonic()
        deadline = started + budget

        def chaos_tick() -> None:
            nonlocal kills, next_kill
            if time.monotonic() >= next_kill:
                victim = random.randrange(len(servers))
                servers[victim].close()  # kill -9, then a fresh process takes its place
                kills += 1
                servers[victim] = ServeProcess(args, env)
                next_kill = time.monotonic() + random.uniform(1.5, 2.5)

        # Starts are spread over `spread` seconds, so kills land while work is in flight.
        for i in range(runs):
            while time.monotonic() < started + spread * i / runs:
                chaos_tick()
                time.sleep(0.02)
            code, body = any_live(servers, "POST", "/v1/runs/start", {"flowId": "chaos", "input": {"approval": i % 5 == 0}})
            assert code == 200, body
            run_ids.append(body["runId"])
        while True:
            counts = engine.storage.count_runs()
            if counts.get("COMPLETED", 0) == runs:
                break
            assert time.monotonic() < deadline, f"not all runs completed: {counts}"
            for run in engine.list_runs(status="WAITING", limit=100)[0]:
                any_live(servers, "POST", f"/v1/runs/{run.run_id}/resume", {"approved": True})
            chaos_tick()
            time.sleep(0.1)
        # verify
        executed = chaos_flows.executions()
        for run_id in run_ids:
            events = engine.timeline(run_id)
            assert [e.seq for e in events] == list(range(1, len(events) + 1))
            # A NODE_FINISHED right before RUN_WAITING is a wait (a poll), not the node's completion.
            finished = Counter(
                e.node_id
                for e, after in zip(events, [*events[1:], None])
                if e.type == "NODE_FINISHED" and (after is None or after.type != "RUN_WAITING")
            )
            lost = Counter(
                e.node_id
                for e in events
                if e.type == "NODE_FAILED" and e.payload["error"]["code"] == "WORKER_LOST"
            )
            other_failures = [
                e for e in events if e.type == "NODE_FAILED" and e.payload["error"]["code"] != "WORKER_LOST"
            ]
            assert not other_failures, other_failures
            expected = {"a", "b", "c", "d", "e"} | ({"approval"} if "approval" in finished else set())
            assert set(finished) == expected and all(n == 1 for n in finished.values()), (run_id, finished)
            for node_id in expected:
                ran = executed.get((run_id, node_id), 0)
                polls = sum(1 for e in events if e.type == "RUN_WAITING" and e.node_id == node_id)
                assert 1 <= ran <= 1 + lost[node_id] + polls, (run_id, node_id, ran, lost[node_id])
        assert kills >= 3, kills
        lost_total = sum(
            1 for run_id in run_ids for e in engine.timeline(run_id)
            if e.type == "NODE_FAILED" and e.payload["error"]["code"] == "WORKER_LOST"
        )  # fmt: skip
        print(f"chaos: {runs} runs, {processes} processes, {kills} kills, {lost_total} WORKER_LOST attempts")
    finally:
        for server in servers:
            server.terminate()
            server.close()
        engine.close()


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_chaos_on_postgres_three_processes(pg_url: str) -> None:
    runs = 1000 if FULL else 150
    run_chaos(pg_url, pg_url, 3, runs, budget=480 if FULL else 120, spread=60 if FULL else 8)


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_chaos_on_sqlite_two_processes(tmp_path: Path) -> None:
    runs = 300 if FULL else 60
    run_chaos(
        f"sqlite:///{tmp_path / 'flowrt.db'}", str(tmp_path / "side.db"), 2, runs,
        budget=300 if FULL else 90, spread=30 if FULL else 8,
    )  # fmt: skip
