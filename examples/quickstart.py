"""flowrt in one file: define a flow, run it durably, wait for a person, resume, read the timeline.

    python examples/quickstart.py

Runs on the embedded default database, ``flowrt.db`` in the working directory, so the
runs it creates are still there afterwards: ``flowrt runs`` and ``flowrt timeline RUN``
show them.
"""

from __future__ import annotations

from flowrt import Context, Engine, Fail, Flow, Ok, Retry, Wait, fail, ok, wait

signup = Flow("quickstart-signup", "1.0.0", description="Create an account, wait for e-mail confirmation, welcome.")


@signup.node(entry=True)
def create_account(ctx: Context) -> Ok:
    user = ctx.input["email"].split("@")[0]
    return ok(output={"user": user}, patch={"user": user})


@signup.node
def confirm_email(ctx: Context) -> Ok | Wait:
    # First visit: park the run. It stays WAITING in the database, across restarts,
    # until someone resumes it; the payload arrives as ctx.resume_payload.
    if ctx.resume_payload is None:
        return wait(reason="waiting for the user to click the link")
    return ok(output={"confirmed": ctx.resume_payload["confirmed"]})


@signup.node(retry=Retry(max_attempts=3, backoff="exponential", base_delay_ms=50))
def welcome(ctx: Context) -> Ok | Fail:
    if ctx.attempt < 2:
        # NETWORK_ERROR, TIMEOUT and RATE_LIMIT are retryable by default: attempt 2 succeeds.
        return fail("NETWORK_ERROR", "mail server busy")
    return ok(output={"sent": f"welcome, {ctx.state['user']}!"})


signup.edge("create_account", "confirm_email")
signup.edge("confirm_email", "welcome", when=lambda ctx: ctx.outputs["confirm_email"]["confirmed"])


def main() -> None:
    with Engine(flows=[signup]) as engine:  # no URL: sqlite:///flowrt.db
        run = engine.start("quickstart-signup", input={"email": "ada@example.com"})
        run = engine.run_until_blocked(run.run_id)
        print(f"run {run.run_id} is {run.status}: {run.wait_reason}")

        run = engine.resume(run.run_id, {"confirmed": True})  # the user clicked
        run = engine.run_until_blocked(run.run_id)
        print(f"run {run.run_id} is {run.status}: {run.outputs['welcome']['sent']}")

        for event in engine.timeline(run.run_id):
            print(f"  {event.seq:>2}  {event.type:<14} {event.node_id or ''}")
        if run.status != "COMPLETED":
            raise SystemExit(f"expected COMPLETED, got {run.status}: {run.error}")


if __name__ == "__main__":
    main()
