"""WAL pages written per commit on SQLite: what a step costs the disk, counted, not timed.
Not collected by pytest.

    python tests/benchmarks/bench_pages.py [--runs 400] [--output-bytes 10 300 1000]

Every page a transaction changes is appended to the WAL as one frame, so with checkpoints held
off the WAL's growth divided by the commits is the pages per commit -- the same on any machine,
unlike a rate. Runs of a 5-node linear flow, started keeping their lease and ticked to the end
(one write transaction per step), each node returning an output of the given size.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile

from flowrt import Engine, Flow, ok

FRAME = 4096 + 24  # a page and its frame header (SQLite's default page size)


def linear(output_bytes: int) -> Flow:
    flow = Flow("pages")
    blob = "x" * output_bytes

    def handler(ctx: object) -> object:
        return ok({"blob": blob})

    for i in range(5):
        flow.add_node(f"n{i}", handler, entry=i == 0)
        if i:
            flow.edge(f"n{i - 1}", f"n{i}")
    return flow


def pages_per_commit(runs: int, output_bytes: int) -> tuple[float, int]:
    path = tempfile.mktemp(suffix=".db")
    with Engine(f"sqlite:///{path}", flows=[linear(output_bytes)]) as engine:
        engine.storage.checkpoint_interval = 1e9  # hold checkpoints off: the WAL only grows
        for _ in range(50):  # past the tables' first pages
            engine.run_until_blocked(engine.start("pages", keep_lease=True).run_id)
        engine.storage.db.connection().execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
        before = engine.storage.write_transactions
        for _ in range(runs):
            run_id = engine.start("pages", keep_lease=True).run_id
            while engine.tick(run_id).status == "RUNNING":
                pass
        commits = engine.storage.write_transactions - before
        frames = (os.path.getsize(path + "-wal") - 32) // FRAME
    for suffix in ("", "-wal", "-shm"):
        if os.path.exists(path + suffix):
            os.remove(path + suffix)
    return frames / commits, commits


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=400)
    parser.add_argument("--output-bytes", type=int, nargs="+", default=[10, 300, 1000])
    args = parser.parse_args()
    for size in args.output_bytes:
        pages, commits = pages_per_commit(args.runs, size)
        print(json.dumps({"outputBytes": size, "walPagesPerCommit": round(pages, 2), "commits": commits}))


if __name__ == "__main__":
    main()
