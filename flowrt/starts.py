"""What a start writes: a new run's row, its first event and its idempotency key, checked.

Kept apart from the engine because it is pure: it reads no database and commits nothing, so
every rule a start's arguments must meet (types, sizes, the key's form) is in one place that
raises before anything is written. :meth:`flowrt.engine.Engine.start` commits what this
builds, parks the lease it may hold, and answers an idempotent replay.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

from .clock import Clock
from .definitions import Flow
from .errors import InvalidInput, PayloadTooLarge
from .runs import EventType, RunStatus, new_run_id
from .storage import RunRow
from .values import dumps, dumps_user, too_large

StartKey = tuple[str, str]
"""``(idempotency key, sha256 of what the start asked for)``: a replay must ask the same."""

_START_KEY = re.compile(r"[^\x00]{1,200}\Z")


def new_run(
    flow: Flow,
    input: Any,  # noqa: A002 - the spec's name
    tenant_id: str | None,
    initial_state: dict[str, Any] | None,
    idempotency_key: str | None,
    *,
    clock: Clock,
    lease_owner: str | None,
    lease_ttl_ms: int,
    max_value_bytes: int,
) -> tuple[RunRow, list[tuple[Any, ...]], StartKey | None]:
    """``(row, events, start key)`` of a run of ``flow`` at its entry node, RUNNING; held by
    ``lease_owner`` if given. Raises :class:`InvalidInput` or :class:`PayloadTooLarge`."""
    if initial_state is not None and not isinstance(initial_state, dict):
        raise InvalidInput("initialState must be a JSON object")
    if tenant_id is not None and not isinstance(tenant_id, str):
        raise InvalidInput("tenantId must be a string")
    if idempotency_key is not None and not (isinstance(idempotency_key, str) and _START_KEY.match(idempotency_key)):
        raise InvalidInput("idempotency key must be a string of 1 to 200 characters without NUL")
    try:
        input_json = dumps_user({} if input is None else input)
        state_json = dumps_user(initial_state or {})
    except (TypeError, ValueError) as exc:
        raise InvalidInput(f"input and initial state must be JSON values: {exc}") from exc
    for what, text in (("input", input_json), ("initial state", state_json)):
        if too_large(text, max_value_bytes):
            raise PayloadTooLarge(
                f"the run's {what} is {len(text.encode())} bytes, over the limit of {max_value_bytes} "
                "(Engine(max_value_bytes=...), flowrt serve --max-value-bytes)"
            )
    now = clock.now_ms()
    row = RunRow(
        run_id=new_run_id(),
        flow_id=flow.flow_id,
        flow_version=flow.version,
        tenant_id=tenant_id,
        status=RunStatus.RUNNING,
        current_node_id=flow.entry,
        input_json=input_json,
        state_json=state_json,
        outputs_json="{}",
        attempts_json="{}",
        failures=0,
        error_json=None,
        wait_reason=None,
        wait_until=None,
        wake_at=None,
        resume_json=None,
        last_seq=1,
        lease_owner=lease_owner,
        lease_expires_at=now + lease_ttl_ms if lease_owner else None,
        lease_epoch=0,
        stale_owner=None,
        created_at=now,
        updated_at=now,
    )
    start_key = None
    if idempotency_key is not None:
        request = dumps([flow.flow_id, flow.version, tenant_id, input_json, state_json])
        start_key = (idempotency_key, hashlib.sha256(request.encode()).hexdigest())
    # The first snapshot a rewind starts from (see flowrt.repair).
    snapshot = '{"state":' + state_json + ',"outputs":{}}'
    events: list[tuple[Any, ...]] = [(row.run_id, 1, now, EventType.RUN_STARTED, None, None, "{}", snapshot)]
    return row, events, start_key
