"""HTTP, one checkout against another in the same minutes: `flowrt serve --no-drive` of each, on
a fresh Postgres schema (or a fresh SQLite file) each time, loaded by the shared client (start +
ticks of demo-fraud), A B A B. Not collected by pytest.

    git worktree add /tmp/wt-old <commit>
    python tests/benchmarks/bench_http_ab.py /tmp/wt-old . [--db postgres|sqlite] [--rounds 3]
                                             [--runs 2000] [--concurrency 1 16]

Each server runs *from its own checkout* (that folder as the working directory and first on
PYTHONPATH): started from this checkout instead, ``python -m flowrt.cli`` would import this
checkout's flowrt whatever PYTHONPATH says (the working directory comes first), and every column
would measure the same code. A server that does not have the checkout's flowrt is refused.

One JSON line per measurement (req/s, p99, server CPU per request), then the median per
checkout and concurrency, and each checkout's req/s over the first's.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

import psycopg

PG = os.environ.get("FLOWRT_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")
CLIENT = Path(__file__).resolve().parents[3] / "shared" / "bench" / "http_flow_bench.py"
PORT = 3951


def wait_for_health(server: subprocess.Popen[bytes], port: int, what: str, *, seconds: float) -> None:
    """Until the server on ``port`` answers /health; exits if it dies or takes too long."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2).read()
            return
        except OSError:
            if server.poll() is not None or time.monotonic() > deadline:
                sys.exit(f"{what} did not start")
            time.sleep(0.1)


def measure(checkout: Path, runs: int, concurrency: int, db: str) -> dict[str, object]:
    schema = f"flowrt_bench_{uuid.uuid4().hex[:8]}"
    folder = tempfile.TemporaryDirectory()
    if db == "postgres":
        with psycopg.connect(PG, autocommit=True) as conn:
            conn.execute(f'CREATE SCHEMA "{schema}"')
        url = f"{PG}{'&' if '?' in PG else '?'}options=-csearch_path%3D{schema}"
    else:
        url = f"sqlite:///{folder.name}/flowrt.db"
    env = {**os.environ, "PYTHONPATH": str(checkout)}
    where = subprocess.run(
        [sys.executable, "-c", "import flowrt; print(flowrt.__file__)"], cwd=checkout, env=env,
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    if not where.startswith(str(checkout)):
        sys.exit(f"{checkout} imports flowrt from {where}, not from itself")
    server = subprocess.Popen(
        [sys.executable, "-m", "flowrt.cli", "serve", "--flows", "examples.demo:ALL", "--port", str(PORT),
         "--db", url, "--no-drive", "--log-level", "warning"],
        cwd=checkout, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        wait_for_health(server, PORT, f"the server of {checkout}", seconds=60)
        out = subprocess.run(
            [sys.executable, str(CLIENT), "--url", f"http://127.0.0.1:{PORT}", "--flow", "demo-fraud",
             "--version", "1.0.0", "--input", '{"amount": 50, "userId": "u1"}', "--runs", str(runs),
             "--warmup", "100", "--concurrency", str(concurrency), "--server-pid", str(server.pid)],
            capture_output=True, text=True, check=True,
        ).stdout.strip().splitlines()[-1]  # fmt: skip
        result = json.loads(out)
    finally:
        server.terminate()
        server.wait(30)
        if db == "postgres":
            with psycopg.connect(PG, autocommit=True) as conn:
                conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        folder.cleanup()
    cpu = result.get("server", {}).get("cpu_s")
    return {
        "checkout": str(checkout),
        "concurrency": concurrency,
        "requestsPerSecond": round(result["requests_per_s"]),
        "p99Ms": result["latency_ms"]["p99"],
        "serverCpuMicrosecondsPerRequest": round(cpu / result["requests"] * 1e6) if cpu else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkouts", nargs="+", type=Path)
    parser.add_argument("--db", choices=("postgres", "sqlite"), default="postgres")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--runs", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[16])
    args = parser.parse_args()
    checkouts = [c.resolve() for c in args.checkouts]
    rows = []
    for concurrency in args.concurrency:
        for _ in range(args.rounds):
            for checkout in checkouts:
                rows.append(measure(checkout, args.runs, concurrency, args.db))
                print(json.dumps(rows[-1]), flush=True)
    for concurrency in args.concurrency:
        medians = {
            str(c): statistics.median(
                int(r["requestsPerSecond"]) for r in rows if r["checkout"] == str(c) and r["concurrency"] == concurrency  # type: ignore[call-overload]
            )
            for c in checkouts
        }
        first = medians[str(checkouts[0])]
        ratios = " ".join(f"{Path(c).name}={medians[c] / first:.2f}x" for c in medians)
        print(f"c={concurrency} median req/s " + " ".join(f"{Path(c).name}={v:.0f}" for c, v in medians.items()) + f"; over the first: {ratios}")


if __name__ == "__main__":
    main()
