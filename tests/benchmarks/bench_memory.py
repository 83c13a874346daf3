"""Server memory stays flat as runs accumulate: RSS of `flowrt serve` (SQLite file, drivers on)
after 1,000 completed runs and after 100,000. Not collected by pytest.

    python tests/benchmarks/bench_memory.py [--runs 100000] [--concurrency 16]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/, for http_helpers

from http_helpers import serve_process  # noqa: E402

from flowrt.bench import bench_http  # noqa: E402


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    raise RuntimeError("no VmRSS")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=100_000)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        with serve_process(["--flows", "examples.demo:ALL", "--log-level", "warning"], cwd=Path(folder)) as server:
            points = []
            done = 0
            for target in (1_000, 10_000, args.runs):
                result = bench_http(server.url, runs=target - done, concurrency=args.concurrency, driven=True)
                assert not result["errors"], result["errors"]
                done = target
                points.append({"completedRuns": done, "rssMiB": rss_mib(server.proc.pid),
                               "runsPerSecond": result["runsPerSecond"]})
                print(json.dumps(points[-1]), flush=True)
            growth = 100 * (points[-1]["rssMiB"] - points[0]["rssMiB"]) / points[0]["rssMiB"]
            print(json.dumps({"rssGrowthPercent1kTo": args.runs, "percent": round(growth, 1)}))
            server.terminate()


if __name__ == "__main__":
    main()
