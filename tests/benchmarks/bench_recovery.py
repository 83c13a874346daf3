"""Startup recovery at scale: N RUNNING runs nobody drives (as after a crash), continued by
`recover()` on a fresh engine (what `flowrt serve` runs at startup and `flowrt recover` on
demand); then, on the same database, drive mode of the same flow at the same concurrency
(each run started holding its lease and continued by a driver's `drive_next`), and the
ratio. `flowrt bench --mode recover` does the same with its own K-node flow. Not collected by pytest.

    python tests/benchmarks/bench_recovery.py [--runs 10000] [--concurrency 8] [--flow demo|lin5] [--db URL]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parents[1]))

from bench_flows import ALL as LIN5  # noqa: E402

from examples.demo import ALL as DEMO  # noqa: E402
from flowrt.bench import bench_recovery  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--flow", choices=["demo", "lin5"], default="demo")
    parser.add_argument("--db", default=None, help="a scratch database URL (default: a SQLite file in a temp dir)")
    args = parser.parse_args()
    flows, flow_id, input_value = (DEMO, "demo-fraud", {"amount": 50}) if args.flow == "demo" else (LIN5, "lin5", {})
    with tempfile.TemporaryDirectory() as folder:
        url = args.db or f"sqlite:///{folder}/flowrt.db"
        result = bench_recovery(
            url, runs=args.runs, concurrency=args.concurrency, flows=flows, flow_id=flow_id, input_value=input_value
        )
    keys = (
        "flowId", "runs", "found", "driven", "completed", "concurrency", "seconds", "runsPerSecond", "stepsPerSecond",
        "writeTransactionsPerStep", "driveRunsPerSecond", "driveStepsPerSecond", "recoveryVsDrive", "errors",
    )  # fmt: skip
    print(json.dumps({key: result.get(key) for key in keys}))


if __name__ == "__main__":
    main()
