"""Startup recovery at scale: N RUNNING runs on a SQLite file, continued by `recover()` (what
`flowrt serve` runs at startup and `flowrt recover` runs on demand). Not collected by pytest.

    python tests/benchmarks/bench_recovery.py [--runs 10000] [--concurrency 8] [--flow demo|lin5]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parents[1]))

from bench_flows import ALL as LIN5  # noqa: E402

from examples.demo import ALL as DEMO  # noqa: E402
from flowrt import Engine  # noqa: E402
from flowrt.driver import recover  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--flow", choices=["demo", "lin5"], default="demo")
    parser.add_argument("--db", default=None, help="database URL (default: a SQLite file in a temp dir)")
    args = parser.parse_args()
    flows, flow_id, input_value = (DEMO, "demo-fraud", {"amount": 50}) if args.flow == "demo" else (LIN5, "lin5", {})
    with tempfile.TemporaryDirectory() as folder:
        url = args.db or f"sqlite:///{folder}/flowrt.db"
        with Engine(url, flows=flows) as engine:
            for _ in range(args.runs):
                engine.start(flow_id, input=input_value)  # RUNNING, never driven: as after a crash
        # A new engine, as a restarted process would have.
        with Engine(url, flows=flows) as engine:
            started = time.perf_counter()
            report = recover(engine, concurrency=args.concurrency)
            elapsed = time.perf_counter() - started
            counts = engine.storage.count_runs()
        print(json.dumps({
            "flow": flow_id, "runs": args.runs, "found": report.found, "driven": report.driven,
            "completed": counts.get("COMPLETED", 0), "seconds": round(elapsed, 2),
            "runsPerSecond": round(args.runs / elapsed, 1), "concurrency": args.concurrency,
        }))


if __name__ == "__main__":
    main()
