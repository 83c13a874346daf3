"""The reference runtime's demo flows, same ids, versions and behaviour.

``flowrt serve --flows examples.demo:ALL`` serves both:

- ``demo-fraud`` 1.0.0: ``score`` rates the ``amount`` (risk 80 above 1000, else 20) and
  branches to ``approve`` (< 30), ``review`` (30-69) or ``reject`` (>= 70).
- ``demo-support`` 1.0.0: ``create`` waits (``awaiting_ticket_creation``) until resumed
  with ``{"ticketId": ...}``; then ``notify`` reports it.

Handlers are ``async def``: steps taken by HTTP requests await them on the server's event
loop, with no thread hop per step.
"""

from __future__ import annotations

from typing import Any

from flowrt import Context, Ok, Wait, edge, entry, flow, node, ok, wait


@flow("demo-fraud", "1.0.0", description="Fraud check: score an amount, then approve, review or reject.")
class DemoFraud:
    @entry
    @node("score")
    @edge("approve", when=lambda ctx: ctx.state["riskScore"] < 30, priority=1)
    @edge("review", when=lambda ctx: 30 <= ctx.state["riskScore"] < 70, priority=1)
    @edge("reject", when=lambda ctx: ctx.state["riskScore"] >= 70, priority=1)
    async def score(self, ctx: Context) -> Ok:
        risk = 80 if ctx.input["amount"] > 1000 else 20
        return ok(output={"riskScore": risk}, patch={"riskScore": risk})

    @node("approve")
    async def approve(self, ctx: Context) -> Ok:
        return ok(output={"decision": "approved"})

    @node("review")
    async def review(self, ctx: Context) -> Ok:
        return ok(output={"decision": "manual_review"})

    @node("reject")
    async def reject(self, ctx: Context) -> Ok:
        return ok(output={"decision": "rejected"})


@flow("demo-support", "1.0.0", description="Support ticket: wait for the ticket to be created, then notify.")
class DemoSupport:
    @entry
    @node("create")
    @edge("notify")
    async def create(self, ctx: Context) -> Ok | Wait:
        payload: Any = ctx.resume_payload
        if isinstance(payload, dict) and "ticketId" in payload:
            ticket = payload["ticketId"]
            return ok(output={"ticketId": ticket}, patch={"ticketId": ticket})
        return wait(reason="awaiting_ticket_creation", until="manual")

    @node("notify")
    async def notify(self, ctx: Context) -> Ok:
        return ok(output={"notified": True, "ticketId": ctx.outputs["create"]["ticketId"]})


ALL = [DemoFraud, DemoSupport]
