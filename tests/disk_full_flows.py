"""Flows for the full-disk test (served by `flowrt serve --flows disk_full_flows:ALL`).

``gated`` says when its first node starts (a ``started`` file), then holds it until a gate file exists, so the test decides when the
node's result is committed (after the disk is full); each execution of that node is
appended to the ``reached`` file, outside the small disk. ``filler`` writes a few KiB per
run, to use up the database's own free pages quickly.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from flowrt import Flow, ok

gated = Flow("gated", "1.0.0")


@gated.node(entry=True)
async def hold(ctx: Any) -> Any:
    Path(ctx.input["started"]).touch()  # the claim is committed: the test may fill the disk
    gate = Path(ctx.input["gate"])
    deadline = time.monotonic() + 120
    while not gate.exists() and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    with open(ctx.input["reached"], "a") as f:
        f.write(f"{ctx.run_id} {ctx.attempt}\n")
    return ok({"held": True}, patch={"held": True})


@gated.node
def after(ctx: Any) -> Any:
    return ok({"after": True})


gated.edge("hold", "after")

filler = Flow("filler", "1.0.0")


@filler.node(entry=True)
def write(ctx: Any) -> Any:
    return ok({"pad": "x" * 4096})


ALL = [gated, filler]
