"""HTTP benchmark: demo-fraud start + tick-to-completion against ``flowrt serve --no-drive``.

The reference client's pattern (start, then tick until the run leaves RUNNING) on the
durable SQLite default, at concurrency 1 and 16, reporting requests/s and p50/p99.
The server is a separate process; the load generator (``flowrt.bench.bench_http``)
uses keep-alive sockets and a hand-rolled HTTP/1.1 exchange so it costs less than
the server does. Not collected by pytest.

    python tests/benchmarks/bench_http.py [--runs 3000] [--concurrency 1 16] [--json]
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3000, help="runs per concurrency level")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--warmup", type=int, default=300)
    parser.add_argument("--amount", type=int, default=50, help="demo-fraud input amount (50: approve)")
    parser.add_argument("--db", default=None, help="database URL (default: the embedded SQLite file, in a temp dir)")
    parser.add_argument("--drive", action="store_true", help="serve with drivers and use start?wait= instead of ticks")
    parser.add_argument("--json", action="store_true", help="print the raw results as JSON")
    args = parser.parse_args()

    serve_args = ["--flows", "examples.demo:ALL", "--log-level", "warning"]
    if not args.drive:
        serve_args.append("--no-drive")
    if args.db:
        serve_args += ["--db", args.db]
    input_value = {"amount": args.amount, "userId": "bench"}
    with tempfile.TemporaryDirectory(prefix="flowrt-bench-") as folder:
        with serve_process(serve_args, cwd=Path(folder)) as server:  # the embedded default lands in folder
            bench_http(server.url, runs=args.warmup, concurrency=4, input_value=input_value, driven=args.drive)
            results = [
                bench_http(server.url, runs=args.runs, concurrency=c, input_value=input_value, driven=args.drive)
                for c in args.concurrency
            ]
            server.terminate()

    if args.json:
        print(json.dumps(results, indent=2))
        return
    mode = "start?wait (driven)" if args.drive else "start + tick to completion (--no-drive)"
    print(f"demo-fraud, {mode}, {args.db or 'embedded SQLite'}; server pid separate from client")
    print(f"{'c':>4} {'req/s':>9} {'runs/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}  statuses / errors")
    for r in results:
        print(
            f"{r['concurrency']:>4} {r['requestsPerSecond']:>9.1f} {r['runsPerSecond']:>8.1f} {r['p50Ms']:>8.3f} "
            f"{r['p99Ms']:>8.3f} {r['maxMs']:>8.1f}  {r['statuses']} {r['errors'] or ''}"
        )


if __name__ == "__main__":
    main()
