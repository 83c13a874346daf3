"""Approval: a request waits for a human decision, and escalates if nobody decides in time.

``decide`` parks the run (``WAITING``) until someone resumes it with
``{"approved": true}`` or ``{"approved": false}``. It also sets a durable timer with
``wait(until=...)``: if the timer comes due first, a server's drivers (or
``flowrt recover``) resume the run with payload ``None``, and ``decide`` escalates the
request to a manager and keeps waiting, now without a deadline. The timer survives
restarts: it is a column in the database, not a sleeping thread.

Try it::

    flowrt start approval --flows examples.approval:ALL --wait \\
        --input '{"requestId": "R1", "amount": 250, "requester": "ana"}'
    flowrt resume <RUN> --flows examples.approval:ALL --wait --payload '{"approved": true}'

Input: ``requestId``, ``amount`` (> 0), ``requester``, and ``escalateAfterSeconds``
(default 3600) to see the escalation sooner.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from flowrt import Context, Fail, Flow, Ok, Wait, fail, ok, wait

approval = Flow("approval", "1.0.0", description="Wait for a human decision; escalate to a manager after a deadline.")


@approval.node(entry=True)
def submit(ctx: Context) -> Ok | Fail:
    request = ctx.input
    amount = request.get("amount")
    if not isinstance(amount, (int, float)) or isinstance(amount, bool) or amount <= 0:
        return fail("INVALID_REQUEST", "amount must be a positive number", retryable=False)
    seconds = request.get("escalateAfterSeconds", 3600)
    escalate_at = (ctx.now() + timedelta(seconds=seconds)).isoformat(timespec="milliseconds")
    return ok(
        output={"requestId": request.get("requestId"), "amount": amount},
        patch={"approver": "team-lead", "escalateAt": escalate_at, "escalated": False},
    )


@approval.node
def decide(ctx: Context) -> Ok | Wait:
    decision: Any = ctx.resume_payload
    if isinstance(decision, dict) and isinstance(decision.get("approved"), bool):
        by = decision.get("by") or ctx.state["approver"]
        return ok(output={"approved": decision["approved"], "by": by}, patch={"approved": decision["approved"]})
    if decision is not None:
        # A malformed decision must not be lost silently, nor decide anything: ask again.
        return wait(reason='invalid decision: resume with {"approved": true|false}', until=_deadline(ctx))
    if not ctx.state["escalated"] and ctx.now() >= datetime.fromisoformat(ctx.state["escalateAt"]):
        # The timer fired (or someone polled after the deadline): escalate, then wait for good.
        return wait(reason="escalated: awaiting a manager's decision", patch={"escalated": True, "approver": "manager"})
    return wait(reason=f"awaiting a decision from the {ctx.state['approver']}", until=_deadline(ctx))


def _deadline(ctx: Context) -> str | None:
    return None if ctx.state["escalated"] else ctx.state["escalateAt"]


@approval.node
def approved(ctx: Context) -> Ok:
    return ok(output={"status": "approved", "by": ctx.outputs["decide"]["by"]})


@approval.node
def rejected(ctx: Context) -> Ok:
    return ok(output={"status": "rejected", "by": ctx.outputs["decide"]["by"]})


approval.edge("submit", "decide")
approval.edge("decide", "approved", when=lambda ctx: ctx.state["approved"], priority=1)
approval.edge("decide", "rejected", when=lambda ctx: not ctx.state["approved"], priority=1)

ALL = [approval]
