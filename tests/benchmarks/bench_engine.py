"""Durable steps/s of a 5-node linear flow driven in-process with Engine, on a SQLite file and
on Postgres, with each database's raw step-commit rate beside it (what `flowrt bench` reports).
Not collected by pytest.

    python tests/benchmarks/bench_engine.py [--runs 3000] [--concurrency 1 8] [--pg URL]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import uuid

import psycopg

from flowrt.bench import bench_engine


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--pg", default=os.environ.get("FLOWRT_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        for c in args.concurrency:
            print(json.dumps(bench_engine(f"sqlite:///{folder}/bench.db", runs=args.runs, concurrency=c)), flush=True)
    schema = f"flowrt_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(args.pg, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    try:
        url = f"{args.pg}{'&' if '?' in args.pg else '?'}options=-csearch_path%3D{schema}"
        for c in args.concurrency:
            print(json.dumps(bench_engine(url, runs=args.runs, concurrency=c)), flush=True)
    finally:
        with psycopg.connect(args.pg, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


if __name__ == "__main__":
    main()
