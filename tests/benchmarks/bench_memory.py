"""Server memory stays flat as runs accumulate: RSS of `flowrt serve` (SQLite file, drivers on)
after 1,000 completed runs and after 100,000. Not collected by pytest.

    python tests/benchmarks/bench_memory.py [--runs 100000] [--concurrency 16]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

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
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory() as folder:
        server = subprocess.Popen(
            [sys.executable, "-m", "flowrt.cli", "serve", "--flows", "examples.demo:ALL", "--port", str(port),
             "--log-level", "warning"],
            cwd=folder, env={**os.environ, "PYTHONPATH": str(REPO)},
        )
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    urllib.request.urlopen(f"{url}/health", timeout=1)
                    break
                except OSError:
                    assert time.monotonic() < deadline
                    time.sleep(0.1)
            points = []
            done = 0
            for target in (1_000, 10_000, args.runs):
                result = bench_http(url, runs=target - done, concurrency=args.concurrency, driven=True)
                assert not result["errors"], result["errors"]
                done = target
                points.append({"completedRuns": done, "rssMiB": rss_mib(server.pid),
                               "runsPerSecond": result["runsPerSecond"]})
                print(json.dumps(points[-1]), flush=True)
            growth = 100 * (points[-1]["rssMiB"] - points[0]["rssMiB"]) / points[0]["rssMiB"]
            print(json.dumps({"rssGrowthPercent1kTo": args.runs, "percent": round(growth, 1)}))
        finally:
            server.terminate()
            server.wait(30)


if __name__ == "__main__":
    main()
