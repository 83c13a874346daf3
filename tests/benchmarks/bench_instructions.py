"""Instructions a request costs the server, counted (valgrind's callgrind), not timed: repeatable
to ~0.2% on one machine whatever its load (not across machines: the CPU, libc and Python build
change the count), so a change of a few percent shows where req/s and CPU time drown in this
machine's noise (±15% between rounds). Not collected by pytest.

    git worktree add /tmp/wt-old <commit>
    python tests/benchmarks/bench_instructions.py /tmp/wt-old . [--runs 300] [--concurrency 1]

For each checkout: `flowrt serve --no-drive` on a fresh SQLite file, run *from that checkout*
(as bench_http_ab.py does) under `valgrind --tool=callgrind --instr-atstart=no`; 60 demo-fraud
runs unmeasured (imports, caches, the WAL's first pages), then counting is switched on
(`callgrind_control -i on`), the shared client sends `--runs` runs of start + ticks, counting
is switched off and dumped. The figure is every instruction the process executed meanwhile,
all threads, user space only (the kernel's share of a request -- its socket and WAL system
calls -- is not in it: count those with `strace -c -f`), over the requests. Under valgrind the
server is ~50x slower, so timings mean nothing here.

Needs valgrind (`apt-get install valgrind`). Prints one JSON line per checkout, then each
checkout's count over the first's.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_http_ab import CLIENT, wait_for_health  # the same client and start-up wait

PORT = 3952
WARMUP_RUNS = 60


def client(runs: int, concurrency: int) -> dict[str, object]:
    out = subprocess.run(
        [sys.executable, str(CLIENT), "--url", f"http://127.0.0.1:{PORT}", "--flow", "demo-fraud",
         "--version", "1.0.0", "--input", '{"amount": 50, "userId": "u1"}', "--runs", str(runs),
         "--warmup", "0", "--concurrency", str(concurrency)],
        capture_output=True, text=True, check=True,
    ).stdout.strip().splitlines()[-1]  # fmt: skip
    result: dict[str, object] = json.loads(out)
    return result


def measure(checkout: Path, runs: int, concurrency: int) -> dict[str, object]:
    folder = tempfile.TemporaryDirectory()
    env = {**os.environ, "PYTHONPATH": str(checkout)}
    out_file = f"{folder.name}/callgrind.out"
    server = subprocess.Popen(
        ["valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={out_file}",
         sys.executable, "-m", "flowrt.cli", "serve", "--flows", "examples.demo:ALL", "--port", str(PORT),
         "--db", f"sqlite:///{folder.name}/flowrt.db", "--no-drive", "--log-level", "warning"],
        cwd=checkout, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        wait_for_health(server, PORT, f"the server of {checkout} under valgrind", seconds=180)
        client(WARMUP_RUNS, concurrency)
        subprocess.run(["callgrind_control", "-i", "on", str(server.pid)], check=True, capture_output=True)
        result = client(runs, concurrency)
        subprocess.run(["callgrind_control", "-i", "off", str(server.pid)], check=True, capture_output=True)
        subprocess.run(["callgrind_control", "-d", str(server.pid)], check=True, capture_output=True)
        instructions = _dumped_instructions(folder.name, deadline=time.monotonic() + 60)
    finally:
        server.terminate()
        server.wait(60)
        folder.cleanup()
    requests = int(result["requests"])  # type: ignore[call-overload]
    return {
        "checkout": str(checkout),
        "concurrency": concurrency,
        "requests": requests,
        "instructionsPerRequest": round(instructions / requests),
    }


def _dumped_instructions(folder: str, *, deadline: float) -> int:
    """The total of the dump callgrind writes on request (``callgrind.out.1``), once complete."""
    while time.monotonic() < deadline:
        for name in os.listdir(folder):
            if name.startswith("callgrind.out."):
                with open(os.path.join(folder, name)) as dump:
                    found = re.search(r"^totals: (\d+)", dump.read(), re.MULTILINE)
                if found:
                    return int(found[1])
        time.sleep(0.2)
    sys.exit("callgrind wrote no dump")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkouts", nargs="+", type=Path)
    parser.add_argument("--runs", type=int, default=300)
    parser.add_argument("--concurrency", type=int, default=1)
    args = parser.parse_args()
    if not shutil.which("valgrind"):
        sys.exit("valgrind is not installed (apt-get install valgrind)")
    rows = []
    for checkout in (c.resolve() for c in args.checkouts):
        rows.append(measure(checkout, args.runs, args.concurrency))
        print(json.dumps(rows[-1]), flush=True)
    first = int(rows[0]["instructionsPerRequest"])  # type: ignore[call-overload]
    print(
        "instructions a request, over the first: "
        + " ".join(f"{Path(str(r['checkout'])).name}={int(r['instructionsPerRequest']) / first:.3f}x" for r in rows)  # type: ignore[call-overload]
    )


if __name__ == "__main__":
    main()
