"""Flows for the crash and multi-process tests. Every execution appends a line to a side file,
so a test can count how often each node really ran, across processes."""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any

from flowrt import Engine, Flow, Retry, ok


def record(ctx: Any, node: str) -> None:
    path = os.environ.get("FLOWRT_TEST_SIDE_FILE")
    if path:
        with open(path, "a") as f:
            f.write(f"{ctx.run_id} {node} {ctx.attempt}\n")
            f.flush()
            os.fsync(f.fileno())


slow = Flow("slow-flow", "1.0.0")


@slow.node(entry=True)
def first(ctx: Any) -> Any:
    record(ctx, "first")
    return ok({"first": True})


# The default max_attempts (1): an interruption is not the node's failure, so a node killed
# mid-way is run again; max_recoveries=2 lets a test exhaust the recovery budget quickly.
@slow.node(retry=Retry(max_recoveries=2))
def middle(ctx: Any) -> Any:
    record(ctx, "middle")
    marker = os.environ.get("FLOWRT_TEST_MARKER")
    if marker:
        open(marker, "w").close()
    time.sleep(float(os.environ.get("FLOWRT_TEST_SLEEP", "0")))
    return ok({"middle": True})


@slow.node
def last(ctx: Any) -> Any:
    record(ctx, "last")
    return ok({"last": True})


slow.edge("first", "middle").edge("middle", "last")
ALL = [slow]


def main() -> None:
    """``python engine_flows.py URL ACTION [RUN_ID]``: one engine call in a process of its own."""
    url, action = sys.argv[1], sys.argv[2]
    ttl, owner = float(os.environ.get("FLOWRT_TEST_TTL", "30")), os.environ.get("FLOWRT_TEST_OWNER") or None
    engine = Engine(url, flows=ALL, lease_ttl=ttl, owner=owner)
    if action == "start-and-tick":
        run = engine.start("slow-flow")
        run = engine.tick(run.run_id)
    elif action == "start-and-drive":
        run = engine.start("slow-flow")
        print(json.dumps({"runId": run.run_id}), flush=True)
        run = engine.run_until_blocked(run.run_id)
    else:
        run = engine.run_until_blocked(sys.argv[3])
    print(json.dumps(run.to_json()), flush=True)
    engine.close()


if __name__ == "__main__":
    main()
