"""What a handler (and an edge condition) sees of its run: :class:`Context`."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .clock import Clock


class Context:
    """What a handler (and an edge condition) sees of its run."""

    __slots__ = (
        "run_id",
        "flow_id",
        "flow_version",
        "tenant_id",
        "node_id",
        "input",
        "state",
        "outputs",
        "attempt",
        "attempts",
        "started_at",
        "services",
        "resume_payload",
        "_clock",
    )

    def __init__(
        self,
        run_id: str,
        flow_id: str,
        flow_version: str,
        tenant_id: str | None,
        node_id: str | None,
        input: Any,  # noqa: A002
        state: dict[str, Any],
        outputs: dict[str, Any],
        attempt: int,
        attempts: dict[str, int],
        started_at: datetime | None,
        services: dict[str, Any],
        resume_payload: Any,
        clock: Clock | None = None,
    ) -> None:
        self.run_id, self.flow_id, self.flow_version, self.tenant_id = run_id, flow_id, flow_version, tenant_id
        self.node_id, self.input, self.state, self.outputs = node_id, input, state, outputs
        self.attempt, self.attempts, self.started_at = attempt, attempts, started_at
        self.services, self.resume_payload = services, resume_payload
        self._clock = clock

    def now(self) -> datetime:
        """The engine's current time (aware, UTC). Use it rather than ``datetime.now()`` in a node
        that compares the time with a deadline: under :mod:`flowrt.testing`'s virtual clock it is
        the time the timers see, so a fired timer's node finds its deadline passed."""
        if self._clock is None:
            return datetime.now(UTC)
        return datetime.fromtimestamp(self._clock.now_ms() / 1000, UTC)

    def _with(self, state: dict[str, Any], outputs: dict[str, Any]) -> Context:
        """The same context after a step: edge conditions see the updated state and outputs."""
        return Context(
            self.run_id, self.flow_id, self.flow_version, self.tenant_id, self.node_id, self.input,
            state, outputs, self.attempt, self.attempts, self.started_at, self.services, self.resume_payload,
            self._clock,
        )

    def __repr__(self) -> str:
        return f"<Context run={self.run_id} node={self.node_id} attempt={self.attempt}>"
