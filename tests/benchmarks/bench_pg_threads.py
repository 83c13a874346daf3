"""What a Postgres query costs the server's process: from database threads (how `flowrt serve`
runs its Postgres work today) or on the event loop itself (psycopg's async connection). Not
collected by pytest.

    python tests/benchmarks/bench_pg_threads.py [--dsn "host=127.0.0.1 user=postgres dbname=test"]
                                                [--queries 3000] [--concurrency 1 16]

Each of C asyncio tasks sends its share of a small one-row SELECT, one at a time: through a pool
of C threads with a connection each (``asyncio.wrap_future(pool.submit(...))``), then through C
async connections awaited on the same uvloop loop. It prints queries/s and the process's CPU per
query for both. Measured on the 2-vCPU machine of docs/performance.md, two runs: at C=16, 119-166
µs of CPU a query from threads (the threads and the loop passing the interpreter lock) against
29-30 µs on the loop, 7,200-10,300 against 32,300-32,500 queries/s; at C=1, 80-98 against 41-45.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import json
import threading
import time
from typing import Any

import psycopg
import uvloop

QUERY = "SELECT 1, 'x', %s::text"


def from_threads(dsn: str, queries: int, concurrency: int) -> tuple[float, float]:
    local = threading.local()

    def query(i: int) -> Any:
        conn = getattr(local, "conn", None)
        if conn is None:
            conn = local.conn = psycopg.connect(dsn, autocommit=True)
        return conn.execute(QUERY, (str(i),)).fetchall()

    pool = concurrent.futures.ThreadPoolExecutor(concurrency)

    async def task() -> None:
        for i in range(queries // concurrency):
            await asyncio.wrap_future(pool.submit(query, i))

    async def main() -> tuple[float, float]:
        await asyncio.gather(*(task() for _ in range(concurrency)))  # connect and warm up
        began, cpu = time.perf_counter(), time.process_time()
        await asyncio.gather(*(task() for _ in range(concurrency)))
        return queries / (time.perf_counter() - began), (time.process_time() - cpu) / queries * 1e6

    try:
        return asyncio.run(main())
    finally:
        pool.shutdown()


def on_the_loop(dsn: str, queries: int, concurrency: int) -> tuple[float, float]:
    async def task(conn: psycopg.AsyncConnection[Any]) -> None:
        for i in range(queries // concurrency):
            cur = await conn.execute(QUERY, (str(i),))
            await cur.fetchall()

    async def main() -> tuple[float, float]:
        conns = [await psycopg.AsyncConnection.connect(dsn, autocommit=True) for _ in range(concurrency)]
        try:
            await asyncio.gather(*(task(conn) for conn in conns))  # warm up
            began, cpu = time.perf_counter(), time.process_time()
            await asyncio.gather(*(task(conn) for conn in conns))
            return queries / (time.perf_counter() - began), (time.process_time() - cpu) / queries * 1e6
        finally:
            for conn in conns:
                await conn.close()

    return asyncio.run(main())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dsn", default="host=127.0.0.1 user=postgres dbname=test")
    parser.add_argument("--queries", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 16])
    args = parser.parse_args()
    uvloop.install()
    for c in args.concurrency:
        threads = from_threads(args.dsn, args.queries, c)
        loop = on_the_loop(args.dsn, args.queries, c)
        print(json.dumps({
            "concurrency": c,
            "threads": {"queriesPerSecond": round(threads[0]), "cpuMicrosecondsPerQuery": round(threads[1], 1)},
            "loop": {"queriesPerSecond": round(loop[0]), "cpuMicrosecondsPerQuery": round(loop[1], 1)},
        }))


if __name__ == "__main__":
    main()
