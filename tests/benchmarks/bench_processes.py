"""Runs/s of a 5-node flow driven by 1, 2 and 3 `flowrt serve` processes sharing one Postgres.

Each measurement gets a fresh schema. The servers start first; then this script creates N runs
(8 threads calling Engine.start, as clients would) and times until every run is COMPLETED.
Not collected by pytest.

    python tests/benchmarks/bench_processes.py [--runs 5000] [--processes 1 2 3] [--workers 4]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
import uuid
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: http_helpers, benchmarks.*
PG = os.environ.get("FLOWRT_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")

from benchmarks.bench_flows import ALL  # noqa: E402
from http_helpers import ServeProcess  # noqa: E402

from flowrt import Engine  # noqa: E402


def measure(processes: int, runs: int, workers: int) -> dict[str, float]:
    schema = f"flowrt_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(PG, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    url = f"{PG}{'&' if '?' in PG else '?'}options=-csearch_path%3D{schema}"
    Engine(url).close()  # create the tables before the servers race to
    args = ["--flows", "benchmarks.bench_flows:ALL", "--db", url, "--workers", str(workers),
            "--log-level", "warning", "--strict-db"]
    servers = [ServeProcess(args) for _ in range(processes)]
    try:
        for server in servers:
            server.wait_ready(30)
        engine = Engine(url, flows=ALL)
        started = time.perf_counter()

        def create(count: int) -> None:
            for _ in range(count):
                engine.start("lin5")

        threads = [threading.Thread(target=create, args=(runs // 8,)) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        created = (runs // 8) * 8
        while engine.storage.count_runs().get("COMPLETED", 0) < created:
            time.sleep(0.05)
        elapsed = time.perf_counter() - started
        engine.close()
        return {"processes": processes, "runs": created, "seconds": round(elapsed, 2),
                "runsPerSecond": round(created / elapsed, 1), "stepsPerSecond": round(5 * created / elapsed, 1)}
    finally:
        for server in servers:
            server.terminate()
            server.close()
        with psycopg.connect(PG, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5000)
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--workers", type=int, default=4)
    args = parser.parse_args()
    for k in args.processes:
        print(json.dumps(measure(k, args.runs, args.workers)), flush=True)


if __name__ == "__main__":
    main()
