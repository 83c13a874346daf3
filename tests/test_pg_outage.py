"""A Postgres outage mid-load costs time, never a run.

Two `flowrt serve` processes work on a throwaway cluster of the test's own
(tests/pg_cluster.py; the shared cluster is never touched). While runs are in flight,
one node taking 1-2 s, the cluster is stopped for 5 s and started again; starts and
resumes sent meanwhile get 503 (or a refused connection) and the client retries them
with the same Idempotency-Key. At the end: every start made exactly one run, every run
is COMPLETED, every node finished once and ran once (no process died, so no attempt may
be WORKER_LOST), and /ready answered 503 (and /health's condition "unavailable") during the outage and both recovered by itself.
The side table of executions lives in an SQLite file, which the outage does not reach.
"""

from __future__ import annotations

import subprocess
from collections import Counter
import threading
import time
from pathlib import Path
from typing import Iterator

import httpx
import pytest

import chaos_flows
from chaos_harness import Client, Fault, ServerPool, drive_load, make_starts, verify
from flowrt import Engine
from http_helpers import free_port
from pg_cluster import PREFIX, PgCluster, clusters, remove_stale, require_cluster_tools, throwaway_cluster

RUNS = 40
SPREAD = 12.0  # seconds over which the starts are sent
OUTAGE_AT = 4.0  # seconds after the first start
OUTAGE_SECONDS = 5.0
STOP_MODE = "fast"  # pg_ctlcluster's default: every client connection is cut
SLOW_NODE = {"c": (1.0, 2.0)}
COMPLETION = 75.0  # after the first start; beyond the default 30 s lease, so a stuck run shows how it ends


@pytest.fixture
def cluster() -> Iterator[PgCluster]:
    with throwaway_cluster() as made:
        yield made


class Outage(threading.Thread):
    """Stops the cluster at ``at`` (monotonic) for ``seconds``, probing the servers' /health meanwhile."""

    def __init__(self, cluster: PgCluster, pool: ServerPool, at: float, seconds: float, faults: list[Fault]) -> None:
        super().__init__(name="pg-outage", daemon=True)
        self.cluster, self.pool, self.at, self.seconds, self.faults = cluster, pool, at, seconds, faults
        self.stopped_at = 0.0  # time.time(), for the side table's clock
        self.down_confirmed = False
        self.health_during: list[int] = []
        self.recovered_in: float | None = None  # seconds from the restart until every /health said 200
        self.errors: list[str] = []
        self.conditions: list[str] = []  # /health's verdicts, probed next to each /ready

    def _health(self) -> list[int]:
        """/ready's status code per server (503 during the outage); /health, liveness, must stay
        200 throughout and say ``condition: unavailable`` when /ready does."""
        codes = []
        for url in self.pool.urls():
            try:
                ready = httpx.get(url + "/ready", timeout=5).status_code
                live = httpx.get(url + "/health", timeout=5)
            except httpx.TransportError as exc:
                self.errors.append(f"/ready or /health of {url} did not answer: {exc!r}")
                continue
            if live.status_code != 200:
                self.errors.append(f"/health of {url} answered {live.status_code}: liveness must stay 200")
            else:
                self.conditions.append(str(live.json().get("condition")))
            codes.append(ready)
        return codes

    def run(self) -> None:
        try:
            time.sleep(max(0.0, self.at - time.monotonic()))
            self.cluster.stop(STOP_MODE)
            self.stopped_at = time.time()
            self.faults.append(Fault(self.stopped_at, f"Postgres stopped (-m {STOP_MODE})"))
            self.down_confirmed = not self.cluster.running() and not self.cluster.accepts_connections()
            back_at = time.monotonic() + self.seconds
            while time.monotonic() < back_at:
                self.health_during.extend(self._health())
                time.sleep(0.5)
            self.cluster.start()
            self.faults.append(Fault(time.time(), "Postgres started again"))
            restarted = time.monotonic()
            while time.monotonic() < restarted + 30:
                codes = self._health()
                if codes and all(code == 200 for code in codes):
                    self.recovered_in = time.monotonic() - restarted
                    return
                time.sleep(0.2)
        except Exception as exc:  # noqa: BLE001 - reported by the test
            self.errors.append(repr(exc))


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_postgres_outage_mid_load_loses_and_fails_nothing(cluster: PgCluster, tmp_path: Path) -> None:
    side = str(tmp_path / "side.db")
    chaos_flows.create_side_table(side)
    # The default lease (30 s) outlives the outage: a step whose commit fails must wait for
    # the database, not be taken for a dead worker.
    # --strict-db: a server never falls back to in-memory storage. The reader creates the
    # schema before the servers start, so they do not race to create the tables.
    args = ["--flows", "chaos_flows:ALL", "--db", cluster.url, "--workers", "4", "--strict-db", "--log-level", "warning"]
    reader = Engine(cluster.url, flows=chaos_flows.ALL)
    pool = ServerPool(2, args, {"FLOWRT_CHAOS_SIDE": side})
    faults: list[Fault] = []
    client: Client | None = None
    outage: Outage | None = None
    try:
        pool.wait_ready(60)
        started = time.monotonic()
        outage = Outage(cluster, pool, started + OUTAGE_AT, OUTAGE_SECONDS, faults)
        client = Client(pool, give_up_at=started + COMPLETION)
        starts = make_starts(RUNS, SLOW_NODE)
        outage.start()
        unfinished = drive_load(client, reader, starts, SPREAD, started + COMPLETION)
        outage.join(60)
        elapsed = time.monotonic() - started

        # The harness did what it says: the database was really away, mid-load.
        assert not outage.errors, outage.errors
        assert outage.down_confirmed, "the cluster still answered after pg_ctlcluster stop"
        assert cluster.running(), "the cluster did not come back after pg_ctlcluster start"
        in_flight = [
            (node, at)
            for run in {s.run_id for s in starts if s.run_id}
            for at, node, _attempt, _pid in chaos_flows.executions_of(str(run))
            if node == "c" and outage.stopped_at - 1.0 <= at <= outage.stopped_at
        ]
        assert in_flight, "no slow step was in flight when the database stopped"
        assert 503 in outage.health_during, f"/ready never reported the outage: {outage.health_during}"
        assert "unavailable" in outage.conditions, f"/health's condition never said so: {outage.conditions}"
        retried = [s for s in starts if s.retried]
        assert retried, "no start met the outage"

        verifier = Engine(cluster.url, flows=chaos_flows.ALL)  # a fresh pool, after the restart
        try:
            report = verify(verifier, starts, faults, pool.pids, worker_lost_allowed=False)
        finally:
            verifier.close()
        retried_text = ", ".join(f"#{s.index} {Counter(s.failed_tries).most_common(2)}" for s in retried)
        print(
            f"outage: {RUNS} runs, {len(in_flight)} slow steps in flight at the stop, "
            f"/health back {outage.recovered_in}s after the restart, done in {elapsed:.1f}s; "
            f"{report.text().splitlines()[0]}; retried starts {retried_text}"
        )
        if outage.recovered_in is None:
            report.add("/health recovers by itself", "some /health still not 200 30 s after the restart")
        problems = report.text()
        if unfinished:
            problems = f"{unfinished}\n{problems}"
        clean = not unfinished and not report.problems
        assert clean, problems + "\nserver log:\n" + "\n".join(pool.log_lines())
    finally:
        if outage is not None and outage.ident is not None:
            outage.join(60)  # the cluster is dropped after this; never while the thread restarts it
        if client is not None:
            client.close()
        pool.close()
        reader.close()
        chaos_flows.close_side()


def test_stale_clusters_of_dead_sessions_are_removed() -> None:
    """A cluster left by a crashed session goes; a live session's cluster stays."""
    version = require_cluster_tools()
    gone = subprocess.Popen(["true"])
    gone.wait()
    stale = PgCluster(version, f"{PREFIX}{gone.pid}_stale", free_port())
    with throwaway_cluster() as live:
        stale.create()
        try:
            assert stale.name in remove_stale(version)
            names = {name for name, _, _ in clusters(version)}
            assert stale.name not in names and live.name in names and "main" in names
        finally:
            if stale.name in {name for name, _, _ in clusters(version)}:
                stale.drop()
    assert live.name not in {name for name, _, _ in clusters(version)}
