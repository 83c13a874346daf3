"""Flows for the tests of flowrt.testing: long backoffs, timers one after another, a reminder."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from flowrt import Flow, Retry, fail, ok, wait

HOUR_MS = 3_600_000

# Fails twice, backing off an hour, then two hours; succeeds on the third attempt.
backoff = Flow("t-backoff", "1.0.0")


@backoff.node(entry=True, retry=Retry(max_attempts=3, backoff="exponential", base_delay_ms=HOUR_MS))
def charge(ctx: Any) -> Any:
    if ctx.attempt < 3:
        return fail("GATEWAY_DOWN", f"attempt {ctx.attempt} failed", retryable=True)
    return ok({"charged": True, "at": ctx.now().isoformat()})


# Two timers in a row: an hour, then two more.
naps = Flow("t-naps", "1.0.0")


@naps.node(entry=True)
def first(ctx: Any) -> Any:
    if ctx.resume_payload is None and ctx.attempt == 1:
        return wait("first nap", until=timedelta(hours=1))
    return ok({"woke": ctx.now().isoformat()})


@naps.node
def second(ctx: Any) -> Any:
    if ctx.resume_payload is None and ctx.attempt == 1:
        return wait("second nap", until=timedelta(hours=2))
    return ok({"woke": ctx.now().isoformat()})


naps.edge("first", "second")

# Waits for a person; every `remindAfterHours` without an answer it records a reminder.
reminder = Flow("t-reminder", "1.0.0")


@reminder.node(entry=True)
def ask(ctx: Any) -> Any:
    if isinstance(ctx.resume_payload, dict):
        return ok(ctx.resume_payload)
    sent = ctx.state.get("reminders", -1) + 1  # the first pass only asks
    return wait("awaiting an answer", until=timedelta(hours=ctx.input.get("remindAfterHours", 1)),
                patch={"reminders": sent})
