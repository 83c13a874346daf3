"""How far below the raw commit rate a durable step sits, layer by layer, on one SQLite file.
Not collected by pytest.

    python tests/benchmarks/bench_step_floor.py [--steps 5000] [--rounds 3] [--batch 8]

`flowrt bench` compares the engine's steps/s with the raw commit rate: one transaction that
updates one small row and inserts two small events (``flowrt.bench.raw_commit_rate``). This
script puts two layers between the two, measured in the same rounds (A B C D A B C D ...) on
the same file, each as steps/s and as a ratio to the raw rate of its round:

- ``raw``: the raw commit rate, as `flowrt bench` measures it;
- ``storage``: a step's write as the engine makes it -- ``Storage.step_write`` of a held run
  (flowrt's own tables and indexes, its real UPDATE and two-event INSERT, the change mark
  a held lease takes) committed through ``Storage._write``, one step a transaction -- with no
  step logic around it: the row and events are built by a few lines here;
- ``storage xN``: the same, ``--batch`` steps (of as many runs) in each transaction, what the
  group commit does with N runs in flight;
- ``engine tick``: ``flowrt bench``'s tick mode at c=1 (a 5-node flow of trivial handlers):
  the step core, the lease, the context, the handler, the events, the commit.

``storage`` is the ceiling of engine/raw at c=1 for this schema with no step logic at all;
``engine tick`` over ``storage`` is what the step logic costs. (docs/performance.md,
"How far a step is from the raw commit".)
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from typing import Any

from flowrt import Engine
from flowrt.bench import _Probe, bench_engine, bench_flow, raw_commit_rate
from flowrt.runs import EventType
from flowrt.storage import Storage

OWNER = "bench-step-floor"
TTL_MS = 60_000


def held_runs(engine: Engine, count: int) -> list[list[Any]]:
    """``count`` new runs of a bench flow, each claimed (held) here: ``[row, epoch]``, the row
    replaced by each step written."""
    flow = engine.flows[0]
    held = []
    for _ in range(count):
        run = engine.start(flow.flow_id, flow.version, None)
        row = engine.storage.claim(run.run_id, OWNER, TTL_MS)
        assert row is not None, "a new run could not be claimed"
        held.append([row, row.lease_epoch])
    return held


def storage_steps(storage: Storage, held: list[list[Any]], steps: int) -> float:
    """Steps/s of committing ``steps`` step writes, one of each held run per transaction."""
    payload = '{"nodeId":"n0","attempt":1,"cached":false}'
    done = 0
    started = time.perf_counter()
    while done < steps:
        writes = []
        for run in held:
            row, epoch = run
            now = storage.clock.now_ms()
            new = row.evolve(last_seq=row.last_seq + 2, updated_at=now, lease_expires_at=now + TTL_MS)
            events: list[Any] = [
                (row.run_id, row.last_seq + 1, now, EventType.NODE_STARTED, "n0", 1, '{"nodeId":"n0","attempt":1}', None),
                (row.run_id, row.last_seq + 2, now, EventType.NODE_FINISHED, "n0", 1, payload, '{"output":null,"patch":null}'),
            ]
            writes.append(storage.step_write(new, epoch, events, in_place=True))
            run[0] = new
        with storage._write() as cursor:  # noqa: SLF001 - the transaction path the writer takes
            for write in writes:
                assert write(cursor) is None, "a step write lost its lease"
        done += len(writes)
    return done / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=5000, help="steps (commits) per measurement")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch", type=int, default=8, help="steps a transaction in the batched measurement")
    args = parser.parse_args()
    figures: dict[str, list[float]] = {}
    ratios: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory() as folder:
        url = f"sqlite:///{folder}/floor.db"
        with Engine(url, flows=[bench_flow(1, _Probe())]) as engine:
            one, many = held_runs(engine, 1), held_runs(engine, args.batch)
            storage_steps(engine.storage, one, 500)  # warm: the WAL grows, caches fill
            for round_ in range(args.rounds):
                raw = raw_commit_rate(engine.storage, commits=args.steps)
                measured = {
                    "raw": raw,
                    "storage": storage_steps(engine.storage, one, args.steps),
                    f"storage x{args.batch}": storage_steps(engine.storage, many, args.steps),
                }
                # (the engine's run on the same file; its own raw figure is left out: ours is beside it)
                measured["engine tick"] = bench_engine(url, runs=args.steps // 5, mode="tick", raw=False)["stepsPerSecond"]
                for name, rate in measured.items():
                    figures.setdefault(name, []).append(rate)
                    ratios.setdefault(name, []).append(rate / raw)
                print(json.dumps({"round": round_ + 1, **{k: round(v) for k, v in measured.items()}}), flush=True)
    print(f"{'layer':<14} {'steps/s (median)':>17} {'/ raw (median of rounds)':>25}")
    for name in figures:
        print(f"{name:<14} {statistics.median(figures[name]):>17,.0f} {statistics.median(ratios[name]):>25.3f}")


if __name__ == "__main__":
    main()
