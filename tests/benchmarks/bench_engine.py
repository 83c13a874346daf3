"""Durable steps/s of a 5-node linear flow of trivial nodes, in each engine mode, on a SQLite
file and on Postgres (a throwaway schema), with each database's raw step-commit rate at one
thread and at the same concurrency beside it: what `flowrt bench` reports. Not collected by pytest.

    python tests/benchmarks/bench_engine.py [--runs 3000] [--concurrency 1 8] [--mode tick drive until] [--pg URL]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import uuid

import psycopg

from flowrt.bench import ENGINE_MODES, bench_engine


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--mode", nargs="+", choices=ENGINE_MODES, default=list(ENGINE_MODES))
    parser.add_argument("--pg", default=os.environ.get("FLOWRT_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test"))
    args = parser.parse_args()

    def run_all(url: str) -> None:
        for mode in args.mode:
            for c in args.concurrency:
                print(json.dumps(bench_engine(url, runs=args.runs, concurrency=c, mode=mode)), flush=True)

    with tempfile.TemporaryDirectory() as folder:
        run_all(f"sqlite:///{folder}/bench.db")
    schema = f"flowrt_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(args.pg, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    try:
        run_all(f"{args.pg}{'&' if '?' in args.pg else '?'}options=-csearch_path%3D{schema}")
    finally:
        with psycopg.connect(args.pg, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


if __name__ == "__main__":
    main()
