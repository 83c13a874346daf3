"""Busy polling, A/B in one run: `flowrt serve --no-drive` with each `--busy-poll` given, and the
reference runtime, each loaded in turn by the shared client (start + ticks of demo-fraud) for
several rounds. Not collected by pytest; run from the checkout after the README's install.

    python tests/benchmarks/bench_busy_poll.py [--limits 300 0] [--rounds 6] [--runs 1000]
                                               [--concurrency 1]

On a noisy machine a whole round can run at half speed, so each round measures every server
back to back, and what counts is each flowrt server's req/s over the reference's *in the same
round* (their median over the rounds is the last lines), with the server's CPU (% of a core).
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
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SHARED = ROOT.parent / "shared"


def _healthy(port: int, proc: subprocess.Popen[bytes], tries: int = 600) -> None:
    for _ in range(tries):  # the reference's first start installs its npm packages
        if proc.poll() is not None:
            sys.exit(f"the server on port {port} exited")
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1)
            return
        except OSError:
            time.sleep(0.2)
    sys.exit(f"the server on port {port} never became healthy")


def _measure(port: int, pid: int, runs: int, concurrency: int) -> tuple[float, float]:
    out = subprocess.check_output(
        [sys.executable, str(SHARED / "bench" / "http_flow_bench.py"), "--url", f"http://127.0.0.1:{port}",
         "--flow", "demo-fraud", "--version", "1.0.0", "--input", '{"amount": 50, "userId": "u1"}',
         "--runs", str(runs), "--warmup", "100", "--concurrency", str(concurrency), "--server-pid", str(pid)],
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    result = json.loads(out.decode().strip().splitlines()[-1])
    return float(result["requests_per_s"]), float(result.get("server", {}).get("cpu_pct") or 0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limits", nargs="+", default=["300", "0"], help="--busy-poll of each flowrt server (µs)")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=1)
    args = parser.parse_args()
    flowrt = ROOT / ".venv" / "bin" / "flowrt"
    work = Path(tempfile.mkdtemp(prefix="bench-busy-poll-"))
    servers: dict[str, tuple[int, subprocess.Popen[bytes]]] = {}
    with open(work / "ref.log", "wb") as log:
        reference = subprocess.Popen(
            [str(SHARED / "peer" / "start.sh")], env={**os.environ, "PORT": "3901", "LOG_ENABLED": "false"},
            stdout=log, stderr=subprocess.STDOUT, cwd=work,
        )  # fmt: skip
    servers["reference"] = (3901, reference)
    try:
        for i, limit in enumerate(args.limits):
            port = 3921 + i
            with open(work / f"flowrt-{limit}.log", "wb") as log:
                servers[f"busy-poll {limit}"] = (port, subprocess.Popen(
                    [str(flowrt), "serve", "--flows", "examples.demo:ALL", "--port", str(port), "--no-drive",
                     "--busy-poll", limit, "--db", f"sqlite:///{work / f'flowrt-{i}.db'}"],
                    env={**os.environ, "PYTHONPATH": str(ROOT)}, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                ))  # fmt: skip
        for port, proc in servers.values():
            _healthy(port, proc)
        rounds: dict[str, list[tuple[float, float]]] = {name: [] for name in servers}
        for n in range(args.rounds):
            for name, (port, proc) in servers.items():
                rounds[name].append(_measure(port, proc.pid, args.runs, args.concurrency))
            print(json.dumps({"round": n, **{name: got[-1] for name, got in rounds.items()}}), flush=True)
    finally:
        for _, proc in servers.values():
            proc.terminate()
        for _, proc in servers.values():
            proc.wait(10)
    for name, got in rounds.items():
        rps, cpu = statistics.median(r for r, _ in got), statistics.median(c for _, c in got)
        line = f"{name}: median {rps:,.0f} req/s, server CPU {cpu:.0f}%"
        if name != "reference":
            ratios = [a / b for (a, _), (b, _) in zip(got, rounds["reference"])]
            line += f"; / reference per round {[round(r, 2) for r in ratios]}, median {statistics.median(ratios):.3f}"
        print(line)


if __name__ == "__main__":
    main()
