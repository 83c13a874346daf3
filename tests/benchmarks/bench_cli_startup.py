"""How long a `flowrt` command takes to start, as a ratio to importing its libraries alone.

Targets (issue 12): `flowrt status RUN --json --url URL` within 2x `python -c "import httpx, rich"`,
and the local `flowrt status RUN --json` within 2x `python -c "import peewee, httpx, rich"`.
The four commands run interleaved, round after round, so a busy machine slows them alike;
the figures are medians. Not collected by pytest.

    python tests/benchmarks/bench_cli_startup.py [--rounds 15]
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
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from http_helpers import serve_process  # noqa: E402

FLOWRT = str(Path(sys.executable).parent / "flowrt")


def _seconds(argv: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    done = subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    took = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} exited {done.returncode}: {done.stderr}")
    return took


def measure(rounds: int) -> dict[str, float]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLOWRT_") and k != "DATABASE_URL"}
    with tempfile.TemporaryDirectory() as folder:
        db = f"sqlite:///{folder}/startup.db"
        with serve_process(["--flows", "examples.orders:ALL", "--db", db, "--no-drive"]) as server:
            run_id = httpx.post(server.url + "/v1/runs/start", json={"flowId": "order-flow", "input": {}}).json()["runId"]
            commands = {
                "import httpx, rich": [sys.executable, "-c", "import httpx, rich"],
                "remote status": [FLOWRT, "status", run_id, "--json", "--url", server.url],
                "import peewee, httpx, rich": [sys.executable, "-c", "import peewee, httpx, rich"],
                "local status": [FLOWRT, "status", run_id, "--json", "--db", db],
            }
            times: dict[str, list[float]] = {name: [] for name in commands}
            for argv in commands.values():
                _seconds(argv, env)  # warm the page cache and .pyc files
            for _ in range(rounds):
                for name, argv in commands.items():
                    times[name].append(_seconds(argv, env))
    med = {name: statistics.median(values) for name, values in times.items()}
    return {
        "rounds": rounds,
        **{f"{name} (s)": round(value, 3) for name, value in med.items()},
        "remote ratio": round(med["remote status"] / med["import httpx, rich"], 2),
        "local ratio": round(med["local status"] / med["import peewee, httpx, rich"], 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=15)
    print(json.dumps(measure(parser.parse_args().rounds), indent=2))


if __name__ == "__main__":
    main()
