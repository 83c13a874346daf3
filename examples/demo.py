"""The reference runtime's demo flows: same ids, versions, and outcomes for the same inputs.

``flowrt serve --flows examples.demo:ALL`` serves both. They follow the reference's source
(``@hazeljs/flow-runtime``'s ``demo_fraud_flow`` and ``demo_support_flow``) to the letter,
JavaScript quirks included, so a client written against its demo sees the same statuses
and outputs here:

- ``demo-fraud`` 1.0.0: ``score`` rates ``input.amount`` (risk 80 when it is above 1000,
  else 20) and branches to ``approve`` (< 30), ``review`` (30-69: unreachable, as there) or
  ``reject`` (>= 70). The comparison is JavaScript's ``amount > 1000``: a numeric string
  counts as its number (``"5000"`` is rejected), anything that is not a number (no input,
  no ``amount``, ``"abc"``, an object) is approved.
- ``demo-support`` 1.0.0: ``create`` waits (``awaiting_ticket_creation``) until resumed
  with any object (or list) payload, then outputs ``{"ticketId": payload.ticketId}``
  (``{}`` when the payload has no ``ticketId``); a ``null``, string or number payload
  leaves it waiting. ``notify`` outputs ``{"notified": true, "ticketId": <create's whole
  output>}``: the reference nests the object there, and so does this copy.

Handlers are ``async def``: steps taken by HTTP requests await them on the server's event
loop, with no thread hop per step.
"""

from __future__ import annotations

import math
import re
from typing import Any

from flowrt import Context, Ok, Wait, edge, entry, flow, node, ok, wait

_JS_DECIMAL = re.compile(r"[+-]?(?:Infinity|(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)\Z")
_JS_RADIX = {"0x": 16, "0o": 8, "0b": 2}


def js_number(value: Any) -> float:
    """JavaScript's ``Number(value)`` for a JSON value (``NaN`` when it is not a number)."""
    if value is None:
        return 0.0
    if isinstance(value, bool):
        return 1.0 if value else 0.0
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        text = value.strip()
        if not text:
            return 0.0
        if _JS_DECIMAL.match(text):
            return float(text.replace("Infinity", "inf"))
        base = _JS_RADIX.get(text[:2].lower())
        if base is not None:
            try:
                return float(int(text[2:], base)) if text[2:].isalnum() else math.nan
            except ValueError:
                return math.nan
        return math.nan
    if isinstance(value, list):
        # An array becomes the string of its elements joined by ","; one element is that element.
        if not value:
            return 0.0
        return js_number(value[0]) if len(value) == 1 and not isinstance(value[0], bool) else math.nan
    return math.nan  # an object is "[object Object]"


@flow("demo-fraud", "1.0.0", description="Fraud check: score an amount, then approve, review or reject.")
class DemoFraud:
    @entry
    @node("score")
    @edge("approve", when=lambda ctx: ctx.state["riskScore"] < 30, priority=1)
    @edge("review", when=lambda ctx: 30 <= ctx.state["riskScore"] < 70, priority=1)
    @edge("reject", when=lambda ctx: ctx.state["riskScore"] >= 70, priority=1)
    async def score(self, ctx: Context) -> Ok:
        amount = ctx.input.get("amount") if isinstance(ctx.input, dict) else None
        risk = 80 if js_number(amount) > 1000 else 20  # NaN > 1000 is false, as in JavaScript
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
        # The reference keeps only object payloads (lists are objects in JavaScript) and
        # goes on for any of them; a missing ticketId is undefined, which JSON leaves out.
        if isinstance(payload, (dict, list)):
            ticket = {"ticketId": payload["ticketId"]} if isinstance(payload, dict) and "ticketId" in payload else {}
            return ok(output=ticket, patch=ticket)
        return wait(reason="awaiting_ticket_creation", until="manual")

    @node("notify")
    async def notify(self, ctx: Context) -> Ok:
        return ok(output={"notified": True, "ticketId": ctx.outputs["create"]})


ALL = [DemoFraud, DemoSupport]
