"""A flow for retry and rewind tests: its ``charge`` node fails while a file exists.

The switch is a file named in the run's input (``brokenFile``), so a test can break and
fix the "service" across processes: the engine here, a `flowrt serve`, a CLI process.
"""

from __future__ import annotations

import os
from typing import Any

from flowrt import Flow, Retry, fail, ok, wait

shop = Flow("shop", "1.0.0")


@shop.node(entry=True)
def prepare(ctx: Any) -> Any:
    return ok({"prepared": ctx.input.get("n")}, patch={"steps": {"prepare": True}, "count": 1})


@shop.node(retry=Retry(max_attempts=2))
def charge(ctx: Any) -> Any:
    broken = ctx.input.get("brokenFile")
    if broken and os.path.exists(broken):
        return fail("SERVICE_DOWN", "the payment service is down", retryable=True)
    return ok({"charged": ctx.state["count"]}, patch={"steps": {"charge": True}, "count": ctx.state["count"] + 1})


@shop.node
def approve(ctx: Any) -> Any:
    if ctx.resume_payload is None:
        return wait("approval", patch={"asked": True})
    return ok(ctx.resume_payload, patch={"approvedBy": ctx.resume_payload.get("by")})


@shop.node
def ship(ctx: Any) -> Any:
    return ok({"shipped": True})


shop.edge("prepare", "charge").edge("charge", "approve").edge("approve", "ship")
ALL = [shop]
