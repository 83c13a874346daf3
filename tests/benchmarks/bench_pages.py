"""WAL pages written per commit on SQLite: what a step costs the disk, counted, not timed.
Not collected by pytest.

    python tests/benchmarks/bench_pages.py [--runs 400] [--output-bytes 10 300 1000]

Every page a transaction changes is appended to the WAL as one frame, so with checkpoints held
off the WAL's growth divided by the commits is the pages per commit -- the same on any machine,
unlike a rate. Runs of a 5-node linear flow, started keeping their lease and ticked to the end
(one write transaction per step), each node returning an output of the given size. The frames'
page numbers, looked up in SQLite's ``dbstat`` table, say which table or index each page
belongs to (``pagesPerCommitByTree``; ``sqlite_schema`` is page 1, whose header changes as the
file grows, and pointer-map pages come with growth too).
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import sqlite3
import struct
import tempfile

from flowrt import Engine, Flow, ok

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


def wal_pages(path: str) -> list[int]:
    """The page number of each frame in the WAL (none if it is empty)."""
    with open(path + "-wal", "rb") as wal:
        data = wal.read()
    if len(data) < 32:
        return []
    page_size = struct.unpack(">I", data[8:12])[0]  # from the WAL's 32-byte header
    frame = 24 + page_size  # each frame: a 24-byte header (its page number first), then the page
    return [struct.unpack(">I", data[at : at + 4])[0] for at in range(32, len(data) - frame + 1, frame)]


def frames_by_tree(path: str, pages: list[int]) -> collections.Counter[str]:
    """How many of the WAL's frames hold a page of each table or index (by name)."""
    conn = sqlite3.connect(path)
    try:
        owner = dict(conn.execute("SELECT pageno, name FROM dbstat"))
    except sqlite3.OperationalError:  # a SQLite built without dbstat
        owner = {}
    finally:
        conn.close()
    return collections.Counter(owner.get(page, "other (pointer map, free)") for page in pages)


def pages_per_commit(runs: int, output_bytes: int) -> tuple[float, int, dict[str, float]]:
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
        commits = max(1, engine.storage.write_transactions - before)
        pages = wal_pages(path)
        by_tree = {name: round(n / commits, 2) for name, n in frames_by_tree(path, pages).most_common()}
    for suffix in ("", "-wal", "-shm"):
        if os.path.exists(path + suffix):
            os.remove(path + suffix)
    return len(pages) / commits, commits, by_tree


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=400)
    parser.add_argument("--output-bytes", type=int, nargs="+", default=[10, 300, 1000])
    args = parser.parse_args()
    for size in args.output_bytes:
        pages, commits, by_tree = pages_per_commit(args.runs, size)
        line = {"outputBytes": size, "walPagesPerCommit": round(pages, 2), "commits": commits}
        print(json.dumps({**line, "pagesPerCommitByTree": by_tree}))


if __name__ == "__main__":
    main()
