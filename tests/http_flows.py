"""Flows for the HTTP runtime tests (served by `flowrt serve --flows http_flows:ALL` from tests/).

``slow-http`` has three nodes that each record their execution in a side file
(HTTP_TEST_SIDE_FILE) and then sleep (HTTP_TEST_SLEEP seconds), so a test can kill
the server mid-run and count how often every node really ran.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

from flowrt import Flow, Retry, ok

slow = Flow("slow-http", "1.0.0")
# The default Retry(): one attempt. A node whose process died mid-way is still run again:
# an interruption (WORKER_LOST) is not a failure of the node and does not use up attempts.
_RETRY = Retry()


def record(ctx: Any) -> None:
    path = os.environ.get("HTTP_TEST_SIDE_FILE")
    if path:
        with open(path, "a") as f:
            f.write(f"{ctx.run_id} {ctx.node_id} {ctx.attempt}\n")
            f.flush()
            os.fsync(f.fileno())


async def _work(ctx: Any) -> Any:
    record(ctx)
    await asyncio.sleep(float(os.environ.get("HTTP_TEST_SLEEP", "0.2")))
    return ok({"node": ctx.node_id}, patch={ctx.node_id: True})


for _name in ("one", "two", "three"):
    slow.add_node(_name, _work, entry=_name == "one", retry=_RETRY)
slow.edge("one", "two").edge("two", "three")

ALL = [slow]
