"""Chaos: several `flowrt serve` processes share one database while one of them is
kill -9'd every couple of seconds and restarted. At the end every run is COMPLETED, every
node's result was committed exactly once, and no node ran twice without a crash to explain it.

Default size is small; FLOWRT_CHAOS_FULL=1 runs the issue's full size (1,000 runs, 3 processes).
"""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from flowrt import Engine

HERE = Path(__file__).parent
FULL = os.environ.get("FLOWRT_CHAOS_FULL") == "1"
LEASE_TTL = "1.5"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """One `flowrt serve` subprocess on a fixed port, restartable."""

    def __init__(self, url: str, env: dict[str, str], log: Path) -> None:
        self.port = free_port()
        self.url = url
        self.env = env
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        cmd = [
            sys.executable, "-c", "from flowrt.cli import main; main()", "serve",
            "--flows", "chaos_flows:ALL", "--port", str(self.port), "--db", self.url,
            "--workers", "2", "--lease-ttl", LEASE_TTL, "--log-level", "warning",
        ]  # fmt: skip
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(cmd, env=self.env, stdout=log, stderr=log, cwd=HERE)

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()

    def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(
            f"http://127.0.0.1:{self.port}{path}", data=data, method=method,
            headers={"Content-Type": "application/json"},
        )  # fmt: skip
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                return resp.status, json.loads(resp.read() or b"null")
        except urllib.error.HTTPError as err:
            return err.code, json.loads(err.read() or b"null")


def any_live(servers: list[Server], method: str, path: str, body: Any = None) -> tuple[int, Any]:
    """Try the servers in random order until one answers (others may be dead or restarting)."""
    deadline = time.monotonic() + 30
    while True:
        for server in random.sample(servers, len(servers)):
            try:
                return server.call(method, path, body)
            except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
                continue
        assert time.monotonic() < deadline, "no server answered for 30 s"
        time.sleep(0.1)


def run_chaos(url: str, side: str, processes: int, runs: int, tmp_path: Path, budget: float, spread: float) -> None:
    sys.path.insert(0, str(HERE))
    import chaos_flows  # noqa: PLC0415

    chaos_flows.create_side_table(side)
    env = {**os.environ, "FLOWRT_CHAOS_SIDE": side, "PYTHONPATH": str(HERE)}
    servers = [Server(url, env, tmp_path / f"server{i}.log") for i in range(processes)]
    for server in servers:
        server.start()
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
                victim = random.choice(servers)
                victim.kill()
                kills += 1
                victim.start()
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
            finished = Counter(e.node_id for e in events if e.type == "NODE_FINISHED")
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
            server.stop()
        engine.close()


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_chaos_on_postgres_three_processes(pg_url: str, tmp_path: Path) -> None:
    runs = 1000 if FULL else 150
    run_chaos(pg_url, pg_url, 3, runs, tmp_path, budget=480 if FULL else 120, spread=60 if FULL else 8)


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_chaos_on_sqlite_two_processes(tmp_path: Path) -> None:
    runs = 300 if FULL else 60
    run_chaos(
        f"sqlite:///{tmp_path / 'flowrt.db'}", str(tmp_path / "side.db"), 2, runs, tmp_path,
        budget=300 if FULL else 90, spread=30 if FULL else 8,
    )  # fmt: skip
