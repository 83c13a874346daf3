"""Order processing: validate -> reserve -> charge -> ship, with a failure branch.

``charge`` is the interesting node: the payment gateway is flaky, so it retries with
exponential backoff, gives up on a call after ``timeout_ms``, and carries an
idempotency key so one order is never charged twice, even when a run is retried or
a worker crashes after the gateway said yes. A declined card is not an error: the run
takes the failure branch, releases the stock it reserved, and ends FAILED with
``PAYMENT_DECLINED``.

Try it (README.md in this folder has more)::

    flowrt start order-flow --flows examples.orders:ALL --wait \\
        --input '{"orderId": "A1", "sku": "book", "qty": 2}'

Input: ``orderId`` (also the idempotency key), ``sku``, ``qty`` (1-100), and to see
the failure modes, ``card: "declined"``, ``gatewayFailures: N`` (the first N charge
attempts hit a network error) or ``gatewayDelayMs`` (a slow gateway; over 2000 ms the
attempt times out).
"""

from __future__ import annotations

import asyncio
import hashlib
from typing import Any

from flowrt import Context, Fail, Flow, Ok, Retry, fail, ok

PRICES = {"book": 12, "mug": 8, "poster": 5}
MAX_QTY = 100


class GatewayError(Exception):
    """A transient payment-gateway failure; flowrt retries it."""

    code = "NETWORK_ERROR"
    retryable = True


class FakeGateway:
    """Stands in for a payment provider; a real one comes in through ``services``."""

    async def charge(self, order_id: str, amount: int, card: str, attempt: int, behaviour: dict[str, Any]) -> dict[str, Any]:
        await asyncio.sleep(behaviour.get("gatewayDelayMs", 0) / 1000)
        if attempt <= behaviour.get("gatewayFailures", 0):
            raise GatewayError(f"gateway unreachable (attempt {attempt})")
        if card == "declined":
            return {"paid": False, "reason": "card declined"}
        receipt = hashlib.sha1(f"{order_id}:{amount}".encode()).hexdigest()[:10]
        return {"paid": True, "amount": amount, "receipt": f"rcpt_{receipt}"}


orders = Flow("order-flow", "1.0.0", description="Validate, reserve stock, charge (retried, idempotent), ship.")


@orders.node(entry=True)
def validate(ctx: Context) -> Ok | Fail:
    order = ctx.input
    if not isinstance(order.get("orderId"), str) or not order["orderId"]:
        return fail("INVALID_ORDER", "orderId is required", retryable=False)
    if order.get("sku") not in PRICES:
        return fail("INVALID_ORDER", f"unknown sku {order.get('sku')!r}; one of {', '.join(PRICES)}", retryable=False)
    qty = order.get("qty")
    if not isinstance(qty, int) or qty <= 0:
        return fail("INVALID_ORDER", "qty must be a positive integer", retryable=False)
    return ok(output={"valid": True}, patch={"total": PRICES[order["sku"]] * qty})


@orders.node
def reserve(ctx: Context) -> Ok | Fail:
    if ctx.input["qty"] > MAX_QTY:
        return fail("OUT_OF_STOCK", f"only {MAX_QTY} {ctx.input['sku']} in stock", retryable=False)
    reservation = f"res_{ctx.input['orderId']}"
    return ok(output={"reservation": reservation}, patch={"reservation": reservation})


@orders.node(
    retry=Retry(max_attempts=3, backoff="exponential", base_delay_ms=100, max_delay_ms=2000),
    timeout_ms=2000,
    idempotency_key=lambda ctx: f"charge:{ctx.input['orderId']}",
)
async def charge(ctx: Context) -> Ok:
    gateway = ctx.services.get("payments") or FakeGateway()
    receipt = await gateway.charge(
        ctx.input["orderId"], ctx.state["total"], ctx.input.get("card", "ok"), ctx.attempt, ctx.input
    )
    return ok(output=receipt, patch={"paid": receipt["paid"]})


@orders.node
def ship(ctx: Context) -> Ok:
    tracking = "trk_" + hashlib.sha1(ctx.input["orderId"].encode()).hexdigest()[:8]
    return ok(output={"trackingId": tracking}, patch={"orderStatus": "SHIPPED"})


@orders.node
def release_stock(ctx: Context) -> Ok:
    """The failure branch: undo the reservation before giving up."""
    return ok(output={"released": ctx.state["reservation"]}, patch={"reservation": None, "orderStatus": "DECLINED"})


@orders.node
def decline(ctx: Context) -> Fail:
    reason = ctx.outputs["charge"].get("reason", "payment failed")
    return fail("PAYMENT_DECLINED", f"order {ctx.input['orderId']}: {reason}", retryable=False)


orders.edge("validate", "reserve")
orders.edge("reserve", "charge")
orders.edge("charge", "ship", when=lambda ctx: ctx.state["paid"], priority=1)
orders.edge("charge", "release_stock", when=lambda ctx: not ctx.state["paid"], priority=1)
orders.edge("release_stock", "decline")

ALL = [orders]
