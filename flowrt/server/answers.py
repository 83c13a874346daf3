"""What the API answers, worked out once for the two ways a request reaches it.

A request to a hot route (start, tick, get, resume) is served either by Litestar
(:mod:`.app`) or by the fast path in front of it (:mod:`.fastpath`). Both ask this
module for the answer -- status, extra headers and body bytes -- and only wrap it
differently (a Litestar ``Response``, or two ASGI messages), so the two cannot drift
apart: the same engine call, the same JSON, the same ``Idempotent-Replayed`` header,
the same error bodies and the same server log lines.

:class:`ErrorAnswers` is the one mapping from an exception to its answer; the app's
exception handlers are thin adapters over it. It owns the app's :class:`OutageLog`,
so a database outage is logged at the same rate whichever path met it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import msgspec

from ..errors import FlowNotFound, FlowrtError, InvalidInput, RunNotFound, StorageUnavailable
from ..runs import Run
from .outages import CLIENT_MESSAGE, OutageLog
from .wire import RUN_ID, StartRequest

if TYPE_CHECKING:
    from ..engine import Engine
    from .app import ApiState

log = logging.getLogger("flowrt.server")

encode = msgspec.json.Encoder().encode

_JSON = (b"content-type", b"application/json")


@dataclass(frozen=True, slots=True)
class Answer:
    """A JSON answer: status, the headers beyond content-type/length, and the encoded body."""

    body: bytes
    status: int = 200
    headers: tuple[tuple[str, str], ...] = ()

    def asgi_headers(self) -> list[tuple[bytes, bytes]]:
        """The header list exactly as Litestar's ``Response`` encodes it: extra headers, type, length."""
        extra = [(name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in self.headers]
        return [*extra, _JSON, (b"content-length", b"%d" % len(self.body))]

    def head_lines(self) -> bytes:
        """:meth:`asgi_headers` as the lines of a response head (what :mod:`.direct` writes),
        built without the list of pairs: most answers have no extra header."""
        length = b"content-type: application/json\r\ncontent-length: %d\r\n" % len(self.body)
        if not self.headers:
            return length
        extra = b"".join(b"%s: %s\r\n" % (n.lower().encode("latin-1"), v.encode("latin-1")) for n, v in self.headers)
        return extra + length


def json_answer(content: Any, status: int = 200, headers: tuple[tuple[str, str], ...] = ()) -> Answer:
    return Answer(encode(content), status, headers)


def error_answer(status: int, code: str, message: str, headers: tuple[tuple[str, str], ...] = ()) -> Answer:
    return json_answer({"error": message, "code": code}, status, headers)


# What an HTTP client can do next, after the engine's statement of what is wrong.
_HINTS = {
    "RUN_NOT_WAITING": "only a WAITING run can be resumed (a resume is never dropped silently)",
    "RUN_FINISHED": "only a RUNNING or WAITING run can be cancelled",
    "RUN_BUSY": "retry once its step has committed",
    "RUN_NOT_REPAIRABLE": "see docs/concepts.md, 'Repairing runs'",
}

_OUTAGE_BODY = encode({"error": CLIENT_MESSAGE, "code": StorageUnavailable.code})


class ErrorAnswers:
    """The answer to an exception raised while serving a request, and what the server logs about it."""

    def __init__(self, outages: OutageLog | None = None) -> None:
        self.outages = outages or OutageLog()

    def for_exception(self, exc: BaseException, method: str, path: str) -> Answer:
        """As Litestar picks a handler (the most specific class first): outage, flowrt error, deep JSON, else 500."""
        if isinstance(exc, StorageUnavailable):
            return self.storage_unavailable(exc, method, path)
        if isinstance(exc, FlowrtError):
            return self.flowrt_error(exc)
        if isinstance(exc, RecursionError):
            return self.too_deep()
        return self.unexpected(exc, method, path)

    def flowrt_error(self, exc: FlowrtError) -> Answer:
        if exc.http_status >= 500:
            log.error("%s: %s", exc.code, exc.message)
        body = exc.to_json()
        hint = _HINTS.get(exc.code)
        if hint is not None:
            body["error"] = f"{exc.message}; {hint}"
        return json_answer(body, exc.http_status)

    def storage_unavailable(self, exc: StorageUnavailable, method: str, path: str) -> Answer:
        """A fixed 503 for the client; the database's details go to the rate-limited outage log."""
        self.outages.failed(method, path, " ".join(exc.message.split()))
        return Answer(_OUTAGE_BODY, StorageUnavailable.http_status, (("Retry-After", "1"),))

    @staticmethod
    def too_deep() -> Answer:
        # Only client JSON nests deep enough to get here (msgspec caps decoding depth a
        # little below what the engine's encoder can re-encode under a deep stack).
        return error_answer(400, "BAD_REQUEST", "JSON value is nested too deeply")

    @staticmethod
    def unexpected(exc: BaseException, method: str, path: str) -> Answer:
        log.exception("unhandled error in %s %s", method, path, exc_info=exc)
        return error_answer(500, "INTERNAL_ERROR", "internal server error")


# --------------------------------------------------------------------------- the hot calls


def check_run_id(run_id: str) -> None:
    """An id that could never have been issued is simply not found (and never reaches SQL)."""
    if RUN_ID.match(run_id) is None:
        raise RunNotFound(f"run {run_id[:80]!r} not found")


def with_registered_flows(engine: Engine, exc: FlowNotFound) -> FlowNotFound:
    """FLOW_NOT_FOUND naming what the client could start instead."""
    flows = [f"{f.flow_id}@{f.version}" for f in engine.flows]
    if not flows:
        known = "none are registered (start the server with --flows module:NAME)"
    else:
        more = f" and {len(flows) - 20} more" if len(flows) > 20 else ""
        known = f"registered here: {', '.join(flows[:20])}{more} (GET /v1/flows)"
    return FlowNotFound(f"{exc.message}; {known}", **exc.details)


def unwrap_payload(body: Any) -> Any:
    """The resume payload of a request body: the reference's rule, and its docs' form too.

    The reference's code reads ``body.payload``, so an object with a ``payload`` key is
    unwrapped whatever else it carries (``{"payload": {...}, "note": "x"}`` moves its
    demo-support on); its docs send the payload itself, so any other body (an object
    without ``payload``, a list, a scalar, nothing) is the payload.
    """
    if isinstance(body, dict) and "payload" in body:
        return body["payload"]
    return body


_REPLAYED = (("Idempotent-Replayed", "true"),)


async def start(state: ApiState, data: StartRequest, header_key: str | None, wait: float | None) -> Answer:
    """``POST /v1/runs/start``: ``{runId, status}``, or with ``wait`` the run once settled."""
    if header_key and data.idempotency_key and header_key != data.idempotency_key:
        raise InvalidInput("the Idempotency-Key header and body field idempotencyKey differ; send one key")
    engine = state.engine
    # The new run is created holding its lease, parked for whoever moves it next here: this
    # request (?wait=), the client's ticks (--no-drive), or else this server's drivers.
    key = header_key or data.idempotency_key
    keep: bool | Literal["drivers"] = True if wait is not None or state.drivers is None else "drivers"
    try:
        if wait is None:  # the answer is {runId, status}: the run's JSON need not be decoded
            row, replayed = await engine.start_stored_async(
                data.flow_id, data.version, data.input, tenant_id=data.tenant_id,
                initial_state=data.initial_state, idempotency_key=key, keep_lease=keep,
            )  # fmt: skip
            return json_answer({"runId": row.run_id, "status": row.status}, headers=_REPLAYED if replayed else ())
        run, replayed = await engine.start_async(
            data.flow_id, data.version, data.input, tenant_id=data.tenant_id,
            initial_state=data.initial_state, idempotency_key=key, keep_lease=keep,
        )  # fmt: skip
    except FlowNotFound as exc:
        raise with_registered_flows(engine, exc) from None
    return json_answer((await state.settle(run, wait)).to_json(), headers=_REPLAYED if replayed else ())


async def tick(state: ApiState, run_id: str) -> Answer:
    """``POST /v1/runs/{runId}/tick``: one step, then the run."""
    check_run_id(run_id)
    row = await state.engine.tick_stored_async(run_id)
    state.hand_on(row.run_id, row.status)
    return json_answer(Run.stored_to_json(row))


async def get(state: ApiState, run_id: str, wait: float | None) -> Answer:
    """``GET /v1/runs/{runId}``; with ``wait`` and drivers, once it has left RUNNING."""
    check_run_id(run_id)
    if wait is None or state.drivers is None:
        row = await state.engine.get_stored_async(run_id)
        if row is None:
            raise RunNotFound(f"run {run_id} not found", run_id=run_id)
        return json_answer(Run.stored_to_json(row))
    run: Run | None = await state.engine.get_async(run_id)
    if run is None:
        raise RunNotFound(f"run {run_id} not found", run_id=run_id)
    # Only watches: a GET never moves a run (on --no-drive, tick it).
    return json_answer((await state.settle(run, wait, move=False)).to_json())


async def resume(state: ApiState, run_id: str, body: Any, wait: float | None, by: str) -> Answer:
    """``POST /v1/runs/{runId}/resume``: ``by`` is who resumed (the token's name, or ``api``)."""
    check_run_id(run_id)
    run = await state.engine.resume_async(run_id, unwrap_payload(body), by=by)
    if wait is not None:
        run = await state.settle(run, wait)
    else:
        state.hand_on(run.run_id, run.status)
    return json_answer(run.to_json())
