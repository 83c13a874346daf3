"""The HTTP API of SPEC section 5 as a Litestar app over one :class:`~flowrt.Engine`.

Wire-compatible with ``@hazeljs/flow-runtime``: same paths, field names and success
codes. Every error is ``{"error", "code"}`` with a meaningful status; no client
mistake becomes a 500, and a 500 never carries a traceback (it is logged here).

Responses are encoded once with msgspec straight from ``Run.to_json()`` /
``Event.to_json()``; the msgspec structs below describe them for the OpenAPI
document and decode request bodies. On SQLite the engine's calls run inline on the
event loop (``Engine.offload``): a thread hop per request costs more than the commit.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

import msgspec
from litestar import Litestar, Request, Response, Router, get, post
from litestar.datastructures import CacheControlHeader
from litestar.exceptions import HTTPException, ValidationException
from litestar.openapi import OpenAPIConfig
from litestar.openapi.datastructures import ResponseSpec
from litestar.openapi.plugins import JsonRenderPlugin, SwaggerRenderPlugin
from litestar.openapi.spec import Components, SecurityRequirement, SecurityScheme
from litestar.params import Body, Parameter
from litestar.static_files import create_static_files_router

from .. import __version__
from ..driver import Drivers
from ..engine import Engine
from ..errors import FlowNotFound, FlowrtError, InvalidInput, RunBusy, RunNotFound
from ..runs import Run, RunStatus
from . import middleware, outages
from .auth import Token, TokenTable, identity, load_tokens
from .counts import counts_handler
from .operate import operate_handlers
from .probes import probe_handlers
from .stream import stream_handlers
from .ui import ui_handlers

log = logging.getLogger("flowrt.server")

DEFAULT_MAX_BODY = 1 << 20
MAX_WAIT = 300.0
"""Upper bound of ``?wait=`` in seconds: a long-poll must not pin a connection forever."""

# Stored in VARCHAR columns on Postgres: longer or NUL-carrying values would be a
# database error (a 500), so they are refused (or known absent) at the door.
_MAX_ID = 64
_MAX_NAME = 200
_MAX_VERSION = 100
_NO_NUL = "^[^\x00]*$"
_RUN_ID = re.compile(r"[\x21-\x7e]{1,64}\Z")
Name = Annotated[str, msgspec.Meta(max_length=_MAX_NAME, pattern=_NO_NUL)]
StartKey = Annotated[str, msgspec.Meta(min_length=1, max_length=_MAX_NAME, pattern=_NO_NUL)]

_encode = msgspec.json.Encoder().encode

SWAGGER_UI_VERSION = "5.18.2"
_SWAGGER_DIR = Path(__file__).parent / "static" / "swagger-ui"
_SWAGGER_URL = "/schema/assets/swagger-ui"


# --------------------------------------------------------------------------- wire types


class StartRequest(msgspec.Struct, rename="camel"):
    """Body of ``POST /v1/runs/start``; ``version`` defaults to the highest registered."""

    flow_id: Name
    version: Annotated[str, msgspec.Meta(max_length=_MAX_VERSION, pattern=_NO_NUL)] | None = None
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


# --------------------------------------------------------------------------- helpers


def json_response(content: Any, status_code: int = 200, headers: dict[str, str] | None = None) -> Response[bytes]:
    return Response(_encode(content), status_code=status_code, media_type="application/json", headers=headers)


def error_response(status_code: int, code: str, message: str, headers: dict[str, str] | None = None) -> Response[bytes]:
    return json_response({"error": message, "code": code}, status_code, headers)


_HTTP_CODES = {
    400: "BAD_REQUEST",
    401: "UNAUTHORIZED",
    403: "FORBIDDEN",
    404: "NOT_FOUND",
    405: "METHOD_NOT_ALLOWED",
    413: "PAYLOAD_TOO_LARGE",
    415: "UNSUPPORTED_MEDIA_TYPE",
    429: "TOO_MANY_REQUESTS",
    503: "SERVICE_UNAVAILABLE",
}


# What an HTTP client can do next, after the engine's statement of what is wrong.
_HINTS = {
    "RUN_NOT_WAITING": "only a WAITING run can be resumed (a resume is never dropped silently)",
    "RUN_FINISHED": "only a RUNNING or WAITING run can be cancelled",
    "RUN_BUSY": "another executor is stepping it; retry in a moment",
    "RUN_NOT_REPAIRABLE": "see docs/concepts.md, 'Repairing runs'",
}


def _on_flowrt_error(_: Request[Any, Any, Any], exc: FlowrtError) -> Response[bytes]:
    # StorageUnavailable has a handler of its own (outages.py): its message names the database.
    if exc.http_status >= 500:
        log.error("%s: %s", exc.code, exc.message)
    body = exc.to_json()
    hint = _HINTS.get(exc.code)
    if hint is not None:
        body["error"] = f"{exc.message}; {hint}"
    return json_response(body, exc.http_status)


def _on_validation_error(_: Request[Any, Any, Any], exc: ValidationException) -> Response[bytes]:
    """Litestar's parameter errors, reduced to one readable line."""
    parts = []
    for item in exc.extra if isinstance(exc.extra, list) else ():
        if not isinstance(item, dict):
            continue
        key, message = item.get("key"), str(item.get("message"))
        if key == "data":  # Litestar's name for the request body
            key = "body"
            if message == "'data'":
                message = "a JSON body is required"
        if key == "status":  # the list filter: say which values exist
            message += f"; use one of {', '.join(RunStatus)}"
        parts.append(f"{key}: {message}" if key else message)
    return error_response(400, "BAD_REQUEST", "; ".join(parts) or exc.detail)


def _size(n: int) -> str:
    for unit, factor in (("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= factor:
            return f"{n} bytes ({n / factor:g} {unit})"
    return f"{n} bytes"


def _http_exception_handler(max_body_bytes: int) -> Any:
    """Litestar's HTTP errors as ``{error, code}``; a 413 says the limit and how to raise it."""

    def on_http_exception(_: Request[Any, Any, Any], exc: HTTPException) -> Response[bytes]:
        status = exc.status_code
        if status >= 500:
            log.error("HTTP %d: %s", status, exc.detail)
            return error_response(status, "INTERNAL_ERROR", "internal server error")
        headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
        if status == 405 and exc.headers:
            headers = dict(exc.headers)
        detail = exc.detail
        if status == 413:
            detail = (
                f"request body is larger than this server's limit of {_size(max_body_bytes)}; "
                "start the server with --max-body-bytes N (or FLOWRT_MAX_BODY_BYTES=N) to accept more"
            )
        return error_response(status, _HTTP_CODES.get(status, "HTTP_ERROR"), detail, headers)

    return on_http_exception


def _with_registered_flows(engine: Engine, exc: FlowNotFound) -> FlowNotFound:
    """FLOW_NOT_FOUND naming what the client could start instead."""
    flows = [f"{f.flow_id}@{f.version}" for f in engine.flows]
    if not flows:
        known = "none are registered (start the server with --flows module:NAME)"
    else:
        more = f" and {len(flows) - 20} more" if len(flows) > 20 else ""
        known = f"registered here: {', '.join(flows[:20])}{more} (GET /v1/flows)"
    return FlowNotFound(f"{exc.message}; {known}", **exc.details)


def _on_recursion(_: Request[Any, Any, Any], exc: RecursionError) -> Response[bytes]:
    # Only client JSON nests deep enough to get here (msgspec caps decoding depth a
    # little below what the engine's encoder can re-encode under a deep stack).
    return error_response(400, "BAD_REQUEST", "JSON value is nested too deeply")


def _on_unexpected(request: Request[Any, Any, Any], exc: Exception) -> Response[bytes]:
    log.exception("unhandled error in %s %s", request.method, request.url.path, exc_info=exc)
    return error_response(500, "INTERNAL_ERROR", "internal server error")


def _check_run_id(run_id: str) -> None:
    """An id that could never have been issued is simply not found (and never reaches SQL)."""
    if _RUN_ID.match(run_id) is None:
        raise RunNotFound(f"run {run_id[:80]!r} not found")


def _unwrap_payload(body: Any) -> Any:
    """The resume payload of a request body: the reference's rule, and its docs' form too.

    The reference's code reads ``body.payload``, so an object with a ``payload`` key is
    unwrapped whatever else it carries (``{"payload": {...}, "note": "x"}`` moves its
    demo-support on); its docs send the payload itself, so any other body (an object
    without ``payload``, a list, a scalar, nothing) is the payload.
    """
    if isinstance(body, dict) and "payload" in body:
        return body["payload"]
    return body


# --------------------------------------------------------------------------- app


@dataclass
class ApiState:
    """What the routes share: the engine, whether drivers move runs, and shutdown."""

    engine: Engine
    drivers: Drivers | None = None
    fallback_reason: str | None = None
    started: float = field(default_factory=time.monotonic)
    stopping: bool = False
    """Set on SIGTERM/SIGINT so long-polls answer at once instead of holding shutdown."""

    async def settle(self, run: Run, wait: float) -> Run:
        """The run once it has left RUNNING, or as it is when ``wait`` seconds are up.

        The request moves the run itself, a step at a time on this event loop, so a step
        in flight always commits; the deadline is checked between steps. It does so
        without drivers (``--no-drive``), and with them when the run's lease is parked
        here (a run this request started: its steps need no claim); then a step that
        outlasts the deadline goes on in the background and the drivers continue the run.
        Otherwise the drivers move the run and this watches it (quickly at first: most
        flows are short). If another client's tick holds the run (RUN_BUSY), it watches
        for a moment and tries again.
        """
        deadline = time.monotonic() + wait
        watching = self.drivers is not None and not self.engine.leases.is_parked(run.run_id)
        interval = 0.001
        while run.status == RunStatus.RUNNING and not self.stopping:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            if watching:
                await asyncio.sleep(min(interval, remaining))
                interval = min(interval * 2, 0.02)
                run = await self._get(run.run_id)
                watching = self.drivers is not None
                continue
            if run.wake_at is not None:
                delay = run.wake_at.timestamp() - time.time()
                if delay > remaining:
                    break  # parked in a retry backoff that outlasts the wait
                if delay > 0.05:
                    await asyncio.sleep(min(delay, 0.25))  # short naps: shutdown stays prompt
                    continue
            try:
                if self.drivers is None:
                    run = await self.engine.tick_async(run.run_id)
                    continue
                step = asyncio.ensure_future(self.engine.tick_async(run.run_id))
                if not (await asyncio.wait({step}, timeout=remaining))[0]:
                    step.add_done_callback(_retrieved)  # commits later; the drivers go on from there
                    break
                run = step.result()
            except RunBusy:
                watching = True
        if self.drivers is not None and run.status == RunStatus.RUNNING:
            self.engine.leases.offer_to_drivers(run.run_id)  # parked here for this request: theirs now
            self.engine.wake_drivers()
        return run

    async def _get(self, run_id: str) -> Run:
        run: Run | None = await self.engine.offload(self.engine.get, run_id)
        if run is None:
            raise RunNotFound(f"run {run_id} not found", run_id=run_id)
        return run


def _retrieved(step: asyncio.Future[Any]) -> None:
    """A step left to finish in the background: its error is logged, not lost."""
    if not step.cancelled() and step.exception() is not None and not isinstance(step.exception(), FlowrtError):
        log.error("a step left running after a long-poll's deadline failed", exc_info=step.exception())


_E = ResponseSpec(ErrorBody, description="Error", generate_examples=False)


def _docs(ok: Any, *errors: int, description: str = "OK") -> dict[int, ResponseSpec]:
    spec = {200: ResponseSpec(ok, description=description, generate_examples=False)}
    spec.update({status: _E for status in (400, 401, *errors)})
    return spec


WaitParam = Parameter(
    query="wait",
    ge=0,
    le=MAX_WAIT,
    required=False,
    description="Long-poll: return the run once it has left RUNNING, or after this many seconds.",
    schema_extra={"minimum": 0},  # Litestar leaves out a zero lower bound
)
RunIdParam = Parameter(
    description="A run id as issued by start: printable ASCII, at most 64 characters (any other is 404).",
    schema_extra={"maxLength": _MAX_ID, "pattern": "^[!-~]{1,64}$"},
)


def _body_doc(max_body_bytes: int, what: str, **default: Any) -> Any:
    return Body(
        description=f"{what} At most {max_body_bytes} bytes of UTF-8 JSON (413 above, 400 if not UTF-8).", **default
    )


def create_app(
    engine: Engine,
    *,
    api_token: str | None = None,
    tokens: list[Token] | None = None,
    max_body_bytes: int = DEFAULT_MAX_BODY,
    drivers: Drivers | None = None,
    fallback_reason: str | None = None,
) -> Litestar:
    """The Litestar application serving ``engine``.

    ``drivers``: when given, runs move by themselves and long-polls watch them;
    otherwise (``--no-drive``) long-polls drive the run inline. ``fallback_reason``:
    why the configured database was replaced by memory (shown in ``/health`` and ``/ready``).
    ``api_token`` (an unnamed admin) and ``tokens`` (named, scoped: :mod:`.auth`) guard /v1.
    """
    state = ApiState(engine, drivers, fallback_reason)
    table = TokenTable([*load_tokens(api_token=api_token), *(tokens or [])])
    offload = engine.offload

    @post(
        "/runs/start",
        status_code=200,
        summary="Start a run",
        responses=_docs(StartResponse, 404, 413, description="{runId, status}; the full run object with ?wait="),
    )
    async def start_run(
        data: StartRequest = _body_doc(max_body_bytes, "The run to start."),
        wait: float | None = WaitParam,
        idempotency_key: str | None = Parameter(
            header="Idempotency-Key",
            required=False,
            min_length=1,
            max_length=_MAX_NAME,
            pattern=_NO_NUL,
            description="A retry with the same key returns the run the first request made (200, same runId); "
            "the same key with a different flow, version, input, tenant or initial state is a 409.",
        ),
    ) -> Response[bytes]:
        key = idempotency_key or data.idempotency_key
        if idempotency_key and data.idempotency_key and idempotency_key != data.idempotency_key:
            raise InvalidInput("the Idempotency-Key header and body field idempotencyKey differ; send one key")
        try:
            # The new run's lease stays here when this request or the client's next tick moves it;
            # else it is left to the drivers.
            run, replayed = await engine.start_async(
                data.flow_id, data.version, data.input, tenant_id=data.tenant_id, initial_state=data.initial_state,
                idempotency_key=key, keep_lease=wait is not None or state.drivers is None,
            )  # fmt: skip
        except FlowNotFound as exc:
            raise _with_registered_flows(engine, exc) from None
        headers = {"Idempotent-Replayed": "true"} if replayed else None
        if wait is None:
            return json_response({"runId": run.run_id, "status": run.status.value}, headers=headers)
        return json_response((await state.settle(run, wait)).to_json(), headers=headers)

    @post("/runs/{run_id:str}/tick", status_code=200, summary="Execute one step", responses=_docs(RunOut, 404, 409, 422))
    async def tick_run(run_id: str = RunIdParam) -> Response[bytes]:
        _check_run_id(run_id)
        return json_response((await engine.tick_async(run_id)).to_json())

    @post(
        "/runs/{run_id:str}/resume",
        status_code=200,
        summary="Resume a waiting run",
        description='An object with a "payload" key is unwrapped (other keys are ignored); any other body '
        "is the payload itself. Empty body = null.",
        responses=_docs(RunOut, 404, 409, 413, 422),
    )
    async def resume_run(
        request: Request[Any, Any, Any],
        run_id: str = RunIdParam,
        data: Any = _body_doc(max_body_bytes, "The resume payload: any JSON, or empty for null.", default=None),
        wait: float | None = WaitParam,
    ) -> Response[bytes]:
        _check_run_id(run_id)
        run = await engine.resume_async(run_id, _unwrap_payload(data), by=identity(request))
        if wait is not None:
            run = await state.settle(run, wait)
        return json_response(run.to_json())

    @post("/runs/{run_id:str}/cancel", status_code=200, summary="Cancel a run", responses=_docs(RunOut, 404, 409, 413))
    async def cancel_run(
        request: Request[Any, Any, Any],
        run_id: str = RunIdParam,
        data: CancelRequest | None = _body_doc(max_body_bytes, "Optional, the reason.", default=None),
    ) -> Response[bytes]:
        _check_run_id(run_id)
        reason = data.reason if data is not None else None
        return json_response((await offload(engine.cancel, run_id, reason, by=identity(request))).to_json())

    @get("/runs/{run_id:str}", summary="Get a run", responses=_docs(RunOut, 404),
         description="With ?wait= and drivers, once the run has left RUNNING; without drivers, at once.")
    async def get_run(run_id: str = RunIdParam, wait: float | None = WaitParam) -> Response[bytes]:
        _check_run_id(run_id)
        run = await offload(engine.get, run_id)
        if run is None:
            raise RunNotFound(f"run {run_id} not found", run_id=run_id)
        if wait is not None and state.drivers is not None:
            # Only watches: a GET never moves a run (on --no-drive, tick it).
            run = await state.settle(run, wait)
        return json_response(run.to_json())

    @get("/runs/{run_id:str}/timeline", summary="A run's events, in order", responses=_docs(list[EventOut], 404))
    async def get_timeline(
        run_id: str = RunIdParam,
        after: int = Parameter(ge=0, le=2**62, default=0, description="only events with seq > after"),
        limit: int | None = Parameter(ge=1, le=10_000, required=False),
    ) -> Response[bytes]:
        _check_run_id(run_id)
        events = await offload(engine.timeline, run_id, after, limit)
        return json_response([event.to_json() for event in events])

    @get("/runs", summary="List runs, newest first", responses=_docs(RunPage))
    async def list_runs(
        # Named as on the wire, so a 400 names the parameter the client sent.
        status: RunStatus | None = Parameter(required=False),
        flowId: str | None = Parameter(required=False, max_length=_MAX_NAME, pattern=_NO_NUL),  # noqa: N803
        tenantId: str | None = Parameter(required=False, max_length=_MAX_NAME, pattern=_NO_NUL),  # noqa: N803
        limit: int = Parameter(ge=1, le=1000, default=50),
        cursor: str | None = Parameter(required=False, max_length=_MAX_ID, pattern=_NO_NUL),
        # When the runs were started: ISO 8601 (a time without an offset is UTC); until is exclusive.
        since: datetime | None = Parameter(required=False, description="Only runs started at or after this ISO 8601 time."),
        until: datetime | None = Parameter(required=False, description="Only runs started before this ISO 8601 time."),
    ) -> Response[bytes]:
        runs, next_cursor = await offload(
            engine.list_runs,
            status=None if status is None else status.value,
            flow_id=flowId,
            tenant_id=tenantId,
            limit=limit,
            cursor=cursor,
            since=None if since is None else (since if since.tzinfo else since.replace(tzinfo=UTC)),
            until=None if until is None else (until if until.tzinfo else until.replace(tzinfo=UTC)),
        )
        return json_response({"runs": [run.to_json() for run in runs], "nextCursor": next_cursor})

    @get("/flows", summary="Registered flows", responses=_docs(list[FlowOut]))
    async def list_flows() -> Response[bytes]:
        return json_response(engine.list_flows())

    security: list[SecurityRequirement] | None = None
    components = Components()
    if table:
        components = Components(security_schemes={"bearer": SecurityScheme(type="http", scheme="bearer")})
        security = [{"bearer": []}]

    v1 = Router(
        "/v1",
        route_handlers=[
            start_run, tick_run, resume_run, cancel_run, get_run, get_timeline, list_runs, list_flows,
            *stream_handlers(state, _check_run_id),  # SSE: /v1/runs/{runId}/events, /v1/runs/changes
            counts_handler(state),  # /v1/runs/counts, for the dashboard
            *operate_handlers(state, max_body_bytes),  # retry, rewind, admin/prune
        ],
        guards=[table.guard()] if table else None,  # scopes: GET needs read, POST operate (auth.py)
        security=security,
        tags=["runs"],
    )
    # The OpenAPI page loads Swagger UI from the package, never from a CDN: it works offline
    # and behind firewalls (static/swagger-ui/README.md says where the files come from).
    swagger_assets = create_static_files_router(
        _SWAGGER_URL,
        directories=[_SWAGGER_DIR],
        name="swagger-ui",
        include_in_schema=False,
        cache_control=CacheControlHeader(max_age=86400),  # unversioned names: a day, not forever
    )
    swagger = SwaggerRenderPlugin(
        version=SWAGGER_UI_VERSION,
        js_url=f"{_SWAGGER_URL}/swagger-ui-bundle.js",
        css_url=f"{_SWAGGER_URL}/swagger-ui.css",
        standalone_preset_js_url=f"{_SWAGGER_URL}/swagger-ui-standalone-preset.js",
        favicon=f"<link rel='icon' type='image/png' href='{_SWAGGER_URL}/favicon-32x32.png'>",
    )
    app = Litestar(
        route_handlers=[v1, *probe_handlers(state), swagger_assets, *ui_handlers()],  # ui: GET /, /ui, /ui/static
        exception_handlers={
            FlowrtError: _on_flowrt_error,
            ValidationException: _on_validation_error,
            HTTPException: _http_exception_handler(max_body_bytes),
            RecursionError: _on_recursion,
            Exception: _on_unexpected,
            **outages.exception_handlers(),  # 503 without connection details; those are logged
        },
        openapi_config=OpenAPIConfig(
            title="flowrt",
            version=__version__,
            description="Durable workflow runtime; wire-compatible with @hazeljs/flow-runtime. "
            f"Request bodies: at most {max_body_bytes} bytes of UTF-8 JSON. HEAD works wherever GET does.",
            path="/schema",
            render_plugins=[JsonRenderPlugin(), swagger],
            components=components,
        ),
        request_max_body_size=max_body_bytes,
        logging_config=None,
        debug=False,
    )
    app.state["flowrt"] = state
    middleware.install(app)  # HEAD wherever GET works; invalid UTF-8 in a body is a 400
    return app


def api_state(app: Litestar) -> ApiState:
    """The shared state of an app made by :func:`create_app` (for the runtime's shutdown)."""
    return app.state["flowrt"]  # type: ignore[no-any-return]
