"""Small flows that put runs into the states `flowrt recover --dry-run` must explain."""

from __future__ import annotations

from flowrt import Context, Fail, Flow, Ok, Retry, Wait, fail, ok, wait

# A durable timer: waits until input["until"] (default: long past, so it is due at once).
nap = Flow("nap", "1.0.0")


@nap.node(entry=True)
def doze(ctx: Context) -> Ok | Wait:
    if ctx.state.get("dozed"):
        return ok({"woke": True})
    return wait("napping", until=ctx.input.get("until", "2000-01-01T00:00:00Z"), patch={"dozed": True})


def _flaky(flow_id: str, delay_ms: int) -> Flow:
    """Fails its first attempt (retryable), then succeeds; ``delay_ms`` is the backoff between."""
    built = Flow(flow_id, "1.0.0")

    @built.node(entry=True, retry=Retry(max_attempts=2, base_delay_ms=delay_ms))
    def call(ctx: Context) -> Ok | Fail:
        if ctx.attempt == 1:
            return fail("NETWORK_ERROR", "first attempt always fails")
        return ok({"attempt": ctx.attempt})

    return built


flaky_fast = _flaky("flaky-fast", 1)
flaky_soon = _flaky("flaky-soon", 300)  # a backoff `recover` waits out, as a tick would
flaky_slow = _flaky("flaky-slow", 600_000)
flaky_later = _flaky("flaky-later", 60_000)  # longer than a tick waits: left for later

ALL = [nap, flaky_fast, flaky_soon, flaky_slow, flaky_later]
