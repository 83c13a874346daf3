"""Trivial flows for the benchmarks: ``lin5`` is five nodes in a line that do nothing."""

from __future__ import annotations

from typing import Any

from flowrt import Flow, ok

lin5 = Flow("lin5", "1.0.0")
for _i in range(5):
    lin5.add_node(f"n{_i}", lambda ctx: ok(), entry=(_i == 0))
    if _i:
        lin5.edge(f"n{_i - 1}", f"n{_i}")


async def _async_ok(ctx: Any) -> Any:
    return ok()


ALL = [lin5]
