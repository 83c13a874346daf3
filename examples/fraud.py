"""Fraud detection: score a payment, then approve, reject, or wait for an analyst's review.

Written in the class style (``@flow`` / ``@node`` / ``@edge``). ``score`` turns a few
signals into a risk score; low risk is approved, high risk rejected, and the middle
band goes to ``review``, which waits until an analyst resumes the run with
``{"approved": true|false, "analyst": "..."}``.

Try it::

    flowrt start fraud-detection --flows examples.fraud:ALL --wait \\
        --input '{"paymentId": "P1", "amount": 700, "country": "DE", "accountAgeDays": 3}'

Input: ``paymentId``, ``amount``, ``country`` (ISO code), ``accountAgeDays``.
"""

from __future__ import annotations

from typing import Any

from flowrt import Context, Ok, Wait, edge, entry, flow, node, ok, wait

HIGH_RISK_COUNTRIES = frozenset({"XX", "ZZ"})


@flow("fraud-detection", "1.0.0", description="Score a payment; approve, reject, or wait for an analyst.")
class FraudDetection:
    def signals(self, payment: dict[str, Any]) -> dict[str, int]:
        """Each signal's contribution to the risk score (0-100)."""
        amount = payment.get("amount", 0)
        return {
            "amount": 40 if amount > 1000 else 20 if amount > 500 else 0,
            "country": 40 if payment.get("country") in HIGH_RISK_COUNTRIES else 0,
            "newAccount": 20 if payment.get("accountAgeDays", 365) < 7 else 0,
        }

    @entry
    @node("score")
    @edge("approve", when=lambda ctx: ctx.state["risk"] < 30, priority=1)
    @edge("review", when=lambda ctx: 30 <= ctx.state["risk"] < 70, priority=1)
    @edge("reject", when=lambda ctx: ctx.state["risk"] >= 70, priority=1)
    def score(self, ctx: Context) -> Ok:
        signals = self.signals(ctx.input)
        risk = min(100, sum(signals.values()))
        return ok(output={"risk": risk, "signals": signals}, patch={"risk": risk})

    @node("review")
    @edge("approve", when=lambda ctx: ctx.state["review"]["approved"], priority=1)
    @edge("reject", when=lambda ctx: not ctx.state["review"]["approved"], priority=1)
    def review(self, ctx: Context) -> Ok | Wait:
        verdict = ctx.resume_payload
        if isinstance(verdict, dict) and isinstance(verdict.get("approved"), bool):
            review = {"approved": verdict["approved"], "analyst": verdict.get("analyst"), "note": verdict.get("note")}
            return ok(output=review, patch={"review": review})
        reason = f"analyst review (risk {ctx.state['risk']})"
        if verdict is not None:
            reason += ': resume with {"approved": true|false, "analyst": "..."}'
        return wait(reason=reason)

    @node("approve")
    def approve(self, ctx: Context) -> Ok:
        return ok(output={"decision": "approved", "risk": ctx.state["risk"]})

    @node("reject")
    def reject(self, ctx: Context) -> Ok:
        return ok(output={"decision": "rejected", "risk": ctx.state["risk"]})


ALL = [FraudDetection]
