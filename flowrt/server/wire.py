"""The API's wire format: request and response types, and the limits on what a client may send.

Shared by the Litestar app (:mod:`.app`, which documents them in the OpenAPI schema
and decodes request bodies into them) and the fast path (:mod:`.fastpath`, which
decodes the same bodies into the same types), so both accept exactly the same input.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

import msgspec

MAX_WAIT = 300.0
"""Upper bound of ``?wait=`` in seconds: a long-poll must not pin a connection forever."""

# Stored in VARCHAR columns on Postgres: longer or NUL-carrying values would be a
# database error (a 500), so they are refused (or known absent) at the door.
MAX_ID = 64
MAX_NAME = 200
MAX_VERSION = 100
NO_NUL = "^[^\x00]*$"
RUN_ID = re.compile(r"[\x21-\x7e]{1,64}\Z")
"""What a run id may look like (printable ASCII, as issued by start): any other is simply not found."""
Name = Annotated[str, msgspec.Meta(max_length=MAX_NAME, pattern=NO_NUL)]
StartKey = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_NAME, pattern=NO_NUL)]


class StartRequest(msgspec.Struct, rename="camel"):
    """Body of ``POST /v1/runs/start``; ``version`` defaults to the highest registered."""

    flow_id: Name
    version: Annotated[str, msgspec.Meta(max_length=MAX_VERSION, pattern=NO_NUL)] | None = None
    input: Any = None
    tenant_id: Name | None = None
    initial_state: dict[str, Any] | None = None
    idempotency_key: StartKey | None = None
    """The same as the ``Idempotency-Key`` header (either may be used, not two different ones)."""


class CancelRequest(msgspec.Struct, rename="camel"):
    """Body of ``POST /v1/runs/{runId}/cancel`` (optional)."""

    reason: str | None = None


class StartResponse(msgspec.Struct, rename="camel"):
    run_id: str
    status: Literal["RUNNING", "WAITING", "COMPLETED", "FAILED", "CANCELLED"]


class RunError(msgspec.Struct):
    code: str
    message: str
    retryable: bool


class RunOut(msgspec.Struct, rename="camel"):
    """The run object: the reference's fields plus attempts, waitReason, waitUntil, wakeAt, error."""

    run_id: str
    flow_id: str
    flow_version: str
    tenant_id: str | None
    status: Literal["RUNNING", "WAITING", "COMPLETED", "FAILED", "CANCELLED"]
    current_node_id: str | None
    input_json: Any
    state_json: dict[str, Any]
    outputs_json: dict[str, Any]
    attempts: dict[str, int]
    wait_reason: str | None
    wait_until: str | None
    wake_at: str | None
    error: RunError | None
    created_at: str
    updated_at: str


class EventOut(msgspec.Struct, rename="camel"):
    run_id: str
    seq: int
    at: str
    type: str
    node_id: str | None
    attempt: int | None
    payload_json: dict[str, Any]


class RunPage(msgspec.Struct, rename="camel"):
    runs: list[RunOut]
    next_cursor: str | None


class FlowOut(msgspec.Struct, rename="camel"):
    flow_id: str
    version: str
    definition_json: dict[str, Any]


class ErrorBody(msgspec.Struct):
    error: str
    code: str
