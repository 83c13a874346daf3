"""A flow whose first node sets a durable timer one second ahead (for the timer tests)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from flowrt import Flow, ok, wait

timer = Flow("timer", "1.0.0")


@timer.node(entry=True)
def nap(ctx: Any) -> Any:
    if ctx.resume_payload is None and ctx.attempt == 1:
        return wait("cool-off", until=timedelta(seconds=float(ctx.input.get("seconds", 1))))
    return ok({"woke": True})


@timer.node
def done(ctx: Any) -> Any:
    return ok("done")


timer.edge("nap", "done")
ALL = [timer]
