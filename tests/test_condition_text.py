"""An edge's condition as text (flowrt/condition_text.py): what the dashboard and `flowrt graph` show."""

from __future__ import annotations

import functools
from typing import Any

from flowrt import Flow, ok
from flowrt.condition_text import MAX_CHARS, condition_text


def is_big(ctx: Any) -> bool:
    return True


class Threshold:
    def __call__(self, ctx: Any) -> bool:
        return True


def test_a_lambda_reads_as_its_expression() -> None:
    assert condition_text(lambda ctx: ctx.state["riskScore"] < 30) == 'ctx.state["riskScore"] < 30'


def test_several_lambdas_on_one_line_each_read_as_their_own() -> None:
    first, second = (lambda ctx: ctx.state["n"] > 1, lambda ctx: ctx.state.get("name") == "zoë")
    assert (condition_text(first), condition_text(second)) == ('ctx.state["n"] > 1', 'ctx.state.get("name") == "zoë"')


def test_a_lambda_over_several_lines_reads_as_one() -> None:
    when = lambda ctx: (  # noqa: E731
        ctx.state.get("paid")
        and not ctx.state.get("refunded")
    )  # fmt: skip
    assert condition_text(when) == 'ctx.state.get("paid") and not ctx.state.get("refunded")'


def test_functions_and_callables_read_as_their_names() -> None:
    assert condition_text(is_big) == "is_big"
    assert condition_text(Threshold()) == "Threshold"
    assert condition_text(functools.partial(is_big)) == "partial"
    assert condition_text(None) is None


def test_a_lambda_without_source_has_no_text_and_a_long_one_is_cut() -> None:
    assert condition_text(eval("lambda ctx: ctx.state['x']")) is None  # noqa: S307 - no file to read
    long = lambda ctx: (  # noqa: E731
        ctx.state["a_rather_long_key_name"] > 1
        and ctx.state["another_long_key_name"] < 2
        and ctx.state["yet_another_long_key_name"] != "something"
    )  # fmt: skip
    text = condition_text(long)
    assert text is not None and len(text) == MAX_CHARS and text.endswith("…")


def test_the_definition_json_carries_it_per_edge() -> None:
    flow = Flow("cond-text", "1.0.0")
    for name in ("a", "b", "c"):
        flow.add_node(name, lambda ctx: ok(), entry=name == "a")
    flow.edge("a", "b", when=lambda ctx: ctx.state.get("go"), priority=1).edge("a", "c")
    assert [(e["to"], e["hasCondition"], e["condition"]) for e in flow.to_dict()["edges"]] == [
        ("b", True, 'ctx.state.get("go")'),
        ("c", False, None),
    ]
