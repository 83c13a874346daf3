"""Flows for the dashboard's tests: a graph with branches and a loop, a run that fails."""

from __future__ import annotations

from typing import Any

from flowrt import Flow, Retry, fail, ok, wait

review = Flow("ui-review", "2.0.0", description="Draft, review (waits for a person), revise until approved, publish.")


@review.node(entry=True, timeout_ms=5000)
def draft(ctx: Any) -> Any:
    return ok(output={"text": ctx.input.get("text", "hello")})


@review.node
def decide(ctx: Any) -> Any:
    if ctx.resume_payload is None:
        return wait("editor_decision")
    return ok(output=ctx.resume_payload, patch={"approved": bool(ctx.resume_payload.get("approved"))})


@review.node(retry=Retry(max_attempts=3, backoff="exponential", base_delay_ms=10))
def revise(ctx: Any) -> Any:
    return ok(output={"revised": True})


@review.node
def publish(ctx: Any) -> Any:
    return ok(output={"published": True})


review.edge("draft", "decide")
review.edge("decide", "publish", when=lambda ctx: ctx.state.get("approved"), priority=2)
review.edge("decide", "revise", priority=1)
review.edge("revise", "decide")

broken = Flow("ui-broken", "1.0.0", description="Fails: the handler raises, twice.")


@broken.node(entry=True, retry=Retry(max_attempts=2, backoff="fixed", base_delay_ms=10))
def explode(ctx: Any) -> Any:
    raise RuntimeError("the printer is on fire")


refused = Flow("ui-refused", "1.0.0")


@refused.node(entry=True)
def check(ctx: Any) -> Any:
    return fail("NOT_ALLOWED", "amount over limit")


# A flow id with a slash in it: its page's path holds it encoded.
slashed = Flow("billing/charge", "1.0.0", description="Its id holds a slash.")


@slashed.node(entry=True)
def charge(ctx: Any) -> Any:
    return ok(output={"charged": True})


ALL = [review, broken, refused, slashed]
