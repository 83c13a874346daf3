"""Reads stay O(that run / that page) as stored data grows: the same reads against a database
with ~1,000 events and one with ~1,000,000. Not collected by pytest.

    python tests/benchmarks/bench_scale.py [--events 1000000] [--db URL]

Rows are bulk-inserted through SQL (building a million events through the engine would take
minutes and measure nothing new); the reads go through the Engine API the server uses.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_flows import ALL  # noqa: E402

from flowrt import Engine  # noqa: E402
from flowrt.runs import new_run_id, now_ms  # noqa: E402
from flowrt.storage import RUN_COLUMNS  # noqa: E402

EVENTS_PER_RUN = 12


def fill(engine: Engine, events: int) -> list[str]:
    runs = events // EVENTS_PER_RUN
    p = engine.storage.db.param
    run_sql = f"INSERT INTO flowrt_runs ({', '.join(RUN_COLUMNS)}) VALUES ({', '.join([p] * len(RUN_COLUMNS))})"
    event_sql = f"INSERT INTO flowrt_events (run_id, seq, at, type, node_id, attempt, payload_json) VALUES ({', '.join([p] * 7)})"
    ids: list[str] = []
    now = now_ms()
    for start in range(0, runs, 5000):
        batch = [new_run_id() for _ in range(min(5000, runs - start))]
        ids += batch
        with engine.storage._write() as cur:  # noqa: SLF001 - bulk load for the benchmark
            cur.executemany(run_sql, [
                (rid, "lin5", "1.0.0", None, "COMPLETED", None, "{}", '{"k":1}', '{"n0":null}', '{"n0":1}', 0,
                 None, None, None, None, None, EVENTS_PER_RUN, None, None, 1, None, now, now)
                for rid in batch
            ])
            cur.executemany(event_sql, [
                (rid, seq, now, "NODE_FINISHED", "n0", 1, '{"cached":false}')
                for rid in batch for seq in range(1, EVENTS_PER_RUN + 1)
            ])
    return ids


def timed(fn, repeat: int = 200) -> float:  # type: ignore[no-untyped-def]
    samples = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t0)
    return round(statistics.median(samples) * 1e6, 1)  # µs


def measure(url: str, events: int) -> dict[str, object]:
    with Engine(url, flows=ALL) as engine:
        t0 = time.perf_counter()
        ids = fill(engine, events)
        load = time.perf_counter() - t0
        first, last = ids[0], ids[-1]
        _, cursor = engine.list_runs(limit=50)
        deep_cursor = ids[len(ids) // 2]
        return {
            "events": len(ids) * EVENTS_PER_RUN,
            "runs": len(ids),
            "loadSeconds": round(load, 1),
            "getRunUs": timed(lambda: engine.get(random.choice(ids))),
            "timelineOldestRunUs": timed(lambda: engine.timeline(first)),
            "timelineNewestRunUs": timed(lambda: engine.timeline(last)),
            "timelinePageUs": timed(lambda: engine.timeline(last, after=5, limit=5)),
            "listFirstPageUs": timed(lambda: engine.list_runs(limit=50)),
            "listSecondPageUs": timed(lambda: engine.list_runs(limit=50, cursor=cursor)),
            "listDeepPageUs": timed(lambda: engine.list_runs(limit=50, cursor=deep_cursor)),
            "listByStatusUs": timed(lambda: engine.list_runs(status="COMPLETED", limit=50)),
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--db", default=None, help="an empty database URL (default: SQLite files in a temp dir)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        small = measure(args.db or f"sqlite:///{folder}/small.db", 1_000) if not args.db else None
        large = measure(args.db or f"sqlite:///{folder}/large.db", args.events)
    if small:
        print(json.dumps({"small": small}))
    print(json.dumps({"large": large}))


if __name__ == "__main__":
    main()
