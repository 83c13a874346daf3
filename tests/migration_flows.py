"""The flow that the schema fixtures' runs belong to. Keep it unchanged: databases
written by earlier versions of flowrt (tests/fixtures/) hold runs of it."""

from __future__ import annotations

from typing import Any

from flowrt import Flow, Retry, fail, ok, wait

legacy = Flow("legacy", "1.0.0")


@legacy.node(entry=True, idempotency_key=lambda ctx: f"prepare:{ctx.input.get('n')}")
def prepare(ctx: Any) -> Any:
    return ok({"prepared": ctx.input.get("n")}, patch={"n": ctx.input.get("n")})


@legacy.node
def approve(ctx: Any) -> Any:
    if ctx.resume_payload is None:
        return wait("approval")
    return ok(ctx.resume_payload)


@legacy.node(retry=Retry(max_attempts=2))
def finish(ctx: Any) -> Any:
    if ctx.input.get("fail"):
        return fail("BROKEN", "asked to fail", retryable=False)
    return ok({"done": True})


legacy.edge("prepare", "approve").edge("approve", "finish")
ALL = [legacy]
