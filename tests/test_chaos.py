"""Chaos: several `flowrt serve` processes share one database while a killer thread
kill -9's one of them every 1.5-2.5 s of wall time and starts a replacement.

The kills follow the clock for a fixed window, whatever the client's pace, and the
client meanwhile starts and resumes runs on whichever server answers (retrying with an
Idempotency-Key). At the end every run is COMPLETED although each node has the default
``Retry()`` (a lost worker is not the node's failure), every node's result was committed
exactly once, and no handler ran more often than the crashes explain.

Default size fits a loaded 2-core machine in well under two minutes per variant;
FLOWRT_CHAOS_FULL=1 runs the issue's full size (1,000 runs, 3 processes).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

import chaos_flows
from chaos_harness import KILL_INTERVAL, Client, Fault, Killer, ServerPool, drive_load, make_starts, verify
from flowrt import Engine

FULL = os.environ.get("FLOWRT_CHAOS_FULL") == "1"
LEASE_TTL = "1.5"
SLOW_NODE = {"c": (0.2, 0.6)}
"""Node c takes a while, so kills land on steps in flight, not only between them."""


def run_chaos(url: str, side: str, processes: int, runs: int, window: float, completion: float) -> None:
    chaos_flows.create_side_table(side)
    # --strict-db: a server that cannot use the database exits instead of running on memory.
    args = ["--flows", "chaos_flows:ALL", "--db", url, "--workers", "3", "--lease-ttl", LEASE_TTL, "--strict-db"]
    # The schema exists before the servers start: this test is about kills, not about
    # several processes creating the tables at once.
    reader = Engine(url, flows=chaos_flows.ALL)  # reads only; the servers do the work
    pool = ServerPool(processes, args + ["--log-level", "warning"], {"FLOWRT_CHAOS_SIDE": side})
    faults: list[Fault] = []
    client: Client | None = None
    killer: Killer | None = None
    try:
        pool.wait_ready(60)  # the clock starts with every server up
        started = time.monotonic()
        killer = Killer(pool, window, faults)
        client = Client(pool, give_up_at=started + window + completion)
        starts = make_starts(runs, SLOW_NODE)
        killer.start()
        # Starts spread over most of the window, so every kill finds work in flight.
        unfinished = drive_load(client, reader, starts, 0.8 * window, started + window + completion)
        killer.join(window + 10)
        elapsed = time.monotonic() - started
        assert not killer.errors, killer.errors
        assert not pool.start_failures, pool.start_failures
        # On the clock: at least one kill per longest interval of the window, whatever the load.
        assert killer.kills >= max(3, int(window / KILL_INTERVAL[1])), (killer.kills, window)
        report = verify(reader, starts, faults, pool.pids, worker_lost_allowed=True)
        ready_kills = sum("ready" in f.what for f in faults)
        print(
            f"chaos: {runs} runs, {processes} processes, {killer.kills} kills ({ready_kills} of ready servers) "
            f"in {window:.0f}s, "
            f"done in {elapsed:.1f}s; {report.text().splitlines()[0]}; resume answers {dict(client.resume_answers)}"
        )
        if report.worker_lost == 0:
            report.add("kills land on steps in flight", "no attempt was recorded as WORKER_LOST")
        problems = report.text()
        if unfinished:
            problems = f"{unfinished}\n{problems}"
        clean = not unfinished and not report.problems
        assert clean, problems + "\nserver log:\n" + "\n".join(pool.log_lines())
    finally:
        if killer is not None:
            killer.stop()  # before the pool closes, so no replacement outlives the test
        if client is not None:
            client.close()
        pool.close()
        reader.close()
        chaos_flows.close_side()


@pytest.mark.slow
@pytest.mark.timeout(600 if FULL else 150)
def test_chaos_on_postgres_three_processes(pg_url: str) -> None:
    run_chaos(pg_url, pg_url, 3, 1000 if FULL else 120, window=120 if FULL else 20, completion=240 if FULL else 45)


@pytest.mark.slow
@pytest.mark.timeout(600 if FULL else 150)
def test_chaos_on_sqlite_two_processes(tmp_path: Path) -> None:
    run_chaos(
        f"sqlite:///{tmp_path / 'flowrt.db'}", str(tmp_path / "side.db"), 2, 300 if FULL else 60,
        window=60 if FULL else 20, completion=180 if FULL else 45,
    )  # fmt: skip
