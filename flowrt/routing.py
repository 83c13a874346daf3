"""What a node's result means for where its run goes: the edge taken, and when a wait ends."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from .context import Context
from .definitions import Flow
from .execution import is_interrupt


class EdgeError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def select_edge(
    flow: Flow, node_id: str, ctx: Context, state: dict[str, Any], outputs: dict[str, Any]
) -> str | None:
    """The single highest-priority edge whose condition holds; None completes the run."""
    best = None
    view: Context | None = None
    for edge in flow.outgoing(node_id):
        if best is not None and edge.priority < best.priority:
            break
        if view is None and edge.when is not None:
            view = ctx._with(state, outputs)
        try:
            matches = edge.when is None or bool(edge.when(view))
        except BaseException as exc:  # noqa: BLE001 - user code
            if is_interrupt(exc):
                raise
            raise EdgeError(
                "EDGE_CONDITION_ERROR",
                f"condition of edge {edge.source}->{edge.target} raised {type(exc).__name__}: {exc}",
            ) from exc
        if matches:
            if best is not None:
                raise EdgeError(
                    "AMBIGUOUS_EDGE",
                    f"edges {best.source}->{best.target} and {edge.source}->{edge.target} both match at priority {edge.priority}",
                )
            best = edge
    return None if best is None else best.target


def parse_until(until: Any, now_ms: int) -> tuple[int | None, str | None]:
    """``(wake_at_ms, until_as_text)``: an instant becomes a durable timer; other text is a label."""
    if until is None:
        return None, None
    if isinstance(until, timedelta):
        moment = datetime.fromtimestamp(now_ms / 1000, UTC) + until
    elif isinstance(until, datetime):
        moment = until if until.tzinfo else until.replace(tzinfo=UTC)
    elif isinstance(until, str):
        try:
            moment = datetime.fromisoformat(until.replace("Z", "+00:00"))
        except ValueError:
            return None, until  # e.g. the reference's until: "manual"
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
    else:
        raise TypeError(f"until must be an ISO-8601 string, datetime or timedelta, not {type(until).__name__}")
    ms = int(moment.timestamp() * 1000)
    text = datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return ms, text
