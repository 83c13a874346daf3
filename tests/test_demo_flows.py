"""examples/demo.py gives the reference's outcomes for the same inputs.

Each expectation was read off the reference's demo flow source and checked against the
running reference (``../shared/peer/start.sh``); tests/test_compat_reference.py replays
some of them against both servers when Node is installed.
"""

from __future__ import annotations

from typing import Any

import pytest

from examples.demo import DemoFraud, DemoSupport, js_number
from flowrt.testing import run_flow


@pytest.mark.parametrize(
    ("input_", "decision"),
    [
        (None, "approved"),  # the reference starts with input {}: amount undefined, NaN > 1000 is false
        ({}, "approved"),
        ({"amount": 50}, "approved"),
        ({"amount": 1000}, "approved"),
        ({"amount": 1000.5}, "rejected"),
        ({"amount": 5000}, "rejected"),
        ({"amount": "5000"}, "rejected"),  # a numeric string compares as its number
        ({"amount": " 2e3 "}, "rejected"),
        ({"amount": [5000]}, "rejected"),  # [5000] -> "5000" -> 5000
        ({"amount": "abc"}, "approved"),
        ({"amount": None}, "approved"),
        ({"amount": {"value": 5000}}, "approved"),
        ({"amount": [5000, 1]}, "approved"),
        ({"amount": True}, "approved"),
        ("not an object", "approved"),
        ([1, 2], "approved"),
    ],
)
def test_demo_fraud_decides_as_the_reference(input_: Any, decision: str) -> None:
    result = run_flow(DemoFraud, input_)
    assert result.status == "COMPLETED", result.error
    branch = {"approved": "approve", "rejected": "reject"}[decision]
    risk = 20 if decision == "approved" else 80
    assert result.outputs == {"score": {"riskScore": risk}, branch: {"decision": decision}}
    assert result.state == {"riskScore": risk}


@pytest.mark.parametrize(
    ("payload", "create"),
    [
        ({"ticketId": "T-7"}, {"ticketId": "T-7"}),
        ({"approved": True}, {}),  # any object moves it on; no ticketId, none in the output
        ({}, {}),
        ({"ticketId": None}, {"ticketId": None}),
        ([1, 2], {}),  # a list is an object in JavaScript
    ],
)
def test_demo_support_goes_on_for_any_object_payload(payload: Any, create: dict[str, Any]) -> None:
    result = run_flow(DemoSupport, resumes=[payload])
    assert result.status == "COMPLETED"
    # notify nests create's whole output under ticketId, as the reference does
    assert result.outputs == {"create": create, "notify": {"notified": True, "ticketId": create}}
    assert result.state == create


@pytest.mark.parametrize("payload", [None, "T-7", 7, True])
def test_demo_support_keeps_waiting_for_anything_else(payload: Any) -> None:
    result = run_flow(DemoSupport, resumes=[payload])
    assert result.status == "WAITING" and result.run.wait_reason == "awaiting_ticket_creation"
    assert result.outputs == {}


def test_js_number_follows_javascript() -> None:
    cases = {"": 0.0, " 12\n": 12.0, "0x10": 16.0, "+5": 5.0, ".5": 0.5, "5.": 5.0, "-Infinity": float("-inf")}
    for text, number in cases.items():
        assert js_number(text) == number, text
    for text in ("inf", "1_000", "-0x10", "0b2", "0x", "abc", "1e"):
        assert js_number(text) != js_number(text), text  # NaN
    assert js_number([]) == 0.0 and js_number([None]) == 0.0 and js_number([[2000]]) == 2000.0
