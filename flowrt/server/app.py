"""The HTTP API of SPEC section 5 as a Litestar app over one :class:`~flowrt.Engine`.

Wire-compatible with ``@hazeljs/flow-runtime``: same paths, field names and success
codes. Every error is ``{"error", "code"}`` with a meaningful status; no client
mistake becomes a 500, and a 500 never carries a traceback (it is logged here).

Responses are encoded once with msgspec straight from ``Run.to_json()`` /
``Event.to_json()`` (a tick's or a GET's straight from the stored row, its JSON columns
spliced in undecoded: ``Run.stored_to_json``); the msgspec structs of :mod:`.wire` describe them for the OpenAPI
document and decode request bodies. On SQLite the engine's calls run inline on the
event loop (``Engine.offload``): a thread hop per request costs more than the commit.

The hot routes (start, tick, get, resume) are served by :mod:`.fastpath` in front of
this app whenever a request is ordinary; both ask :mod:`.answers` for the answer, and
everything else -- every unusual request, every client error of the HTTP layer, the
OpenAPI schema -- is this app's.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from datetime import UTC, datetime
from typing import Any

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
from ..errors import FlowrtError, RunBusy, RunNotFound
from ..runs import Run, RunStatus
from . import answers, fastpath, middleware
from .answers import Answer, ErrorAnswers, check_run_id
from .auth import Token, TokenTable, identity, load_tokens
from .counts import counts_handler
from .operate import operate_handlers
from .probes import probe_handlers
from .stream import stream_handlers
from .ui import ui_handlers
from .wire import (
    MAX_ID,
    MAX_NAME,
    MAX_WAIT,
    NO_NUL,
    CancelRequest,
    ErrorBody,
    EventOut,
    FlowOut,
    RunOut,
    RunPage,
    StartRequest,
    StartResponse,
)

log = logging.getLogger("flowrt.server")

DEFAULT_MAX_BODY = 1 << 20
_encode = msgspec.json.Encoder().encode

SWAGGER_UI_VERSION = "5.18.2"
_SWAGGER_DIR = Path(__file__).parent / "static" / "swagger-ui"
_SWAGGER_URL = "/schema/assets/swagger-ui"


# --------------------------------------------------------------------------- helpers


def json_response(content: Any, status_code: int = 200, headers: dict[str, str] | None = None) -> Response[bytes]:
    return Response(_encode(content), status_code=status_code, media_type="application/json", headers=headers)


def error_response(status_code: int, code: str, message: str, headers: dict[str, str] | None = None) -> Response[bytes]:
    return json_response({"error": message, "code": code}, status_code, headers)


def as_response(answer: Answer) -> Response[bytes]:
    """An :class:`~.answers.Answer` as Litestar sends it (the fast path sends the same bytes)."""
    return Response(
        answer.body, status_code=answer.status, media_type="application/json", headers=dict(answer.headers) or None
    )


def _error_handler(errors: ErrorAnswers) -> Any:
    """Litestar's handler for flowrt errors, outages, deep JSON and the unexpected: :mod:`.answers` decides."""

    def on_error(request: Request[Any, Any, Any], exc: Exception) -> Response[bytes]:
        return as_response(errors.for_exception(exc, request.method, request.url.path))

    return on_error


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

    async def settle(self, run: Run, wait: float, *, move: bool = True) -> Run:
        """The run once it has left RUNNING, or as it is when ``wait`` seconds are up.

        The request moves the run itself on this event loop, so a step in flight always
        commits; the deadline is checked between steps. It does so without drivers
        (``--no-drive``), and with them when the run's lease is parked here (a run this
        request started: its steps need no claim); then a step that outlasts the deadline
        goes on in the background and the drivers continue the run. A run whose lease is
        parked here is stepped as ``run_until_blocked`` does, holding the lease from step
        to step; others a tick at a time. Otherwise the drivers move the run and this
        watches it (quickly at first: most flows are short). If another client's tick holds
        the run (RUN_BUSY), it watches for a moment and tries again. ``move=False`` (a GET)
        only ever watches.
        """
        deadline = time.monotonic() + wait
        watching = not move or (self.drivers is not None and not self.engine.leases.is_parked(run.run_id))
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
                if self.engine.leases.is_parked(run.run_id):
                    moving = self.engine.run_until_blocked_async(
                        run.run_id, should_stop=lambda: self.stopping or time.monotonic() >= deadline,
                        max_sleep=min(remaining, 0.25),  # longer backoffs: the naps above, shutdown stays prompt
                    )  # fmt: skip
                else:
                    moving = self.engine.tick_async(run.run_id)
                if self.drivers is None:
                    run = await moving
                    continue
                step = asyncio.ensure_future(moving)
                if not (await asyncio.wait({step}, timeout=remaining))[0]:
                    step.add_done_callback(_retrieved)  # commits later; the drivers go on from there
                    break
                run = step.result()
            except RunBusy:
                watching = True
        if move:
            self.hand_on(run.run_id, run.status)
        return run

    def hand_on(self, run_id: str, status: str) -> None:
        """With drivers, a run a request moved and left RUNNING is theirs to continue, at once:
        its lease, kept by the request's last step, is offered to them rather than left for a
        next tick or handed back a second later."""
        if self.drivers is not None and status == RunStatus.RUNNING:
            self.engine.leases.offer_to_drivers(run_id)
            self.engine.wake_drivers()

    async def _get(self, run_id: str) -> Run:
        run: Run | None = await self.engine.get_async(run_id)
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
    schema_extra={"maxLength": MAX_ID, "pattern": "^[!-~]{1,64}$"},
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
    fast_path: bool = True,
) -> Litestar:
    """The Litestar application serving ``engine``.

    ``drivers``: when given, runs move by themselves and long-polls watch them;
    otherwise (``--no-drive``) long-polls drive the run inline. ``fallback_reason``:
    why the configured database was replaced by memory (shown in ``/health`` and ``/ready``).
    ``api_token`` (an unnamed admin) and ``tokens`` (named, scoped: :mod:`.auth`) guard /v1.
    ``fast_path``: serve ordinary requests to the hot routes in front of Litestar (:mod:`.fastpath`).
    """
    state = ApiState(engine, drivers, fallback_reason)
    table = TokenTable([*load_tokens(api_token=api_token), *(tokens or [])])
    errors = ErrorAnswers()
    on_error = _error_handler(errors)
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
            max_length=MAX_NAME,
            pattern=NO_NUL,
            description="A retry with the same key returns the run the first request made (200, same runId); "
            "the same key with a different flow, version, input, tenant or initial state is a 409.",
        ),
    ) -> Response[bytes]:
        return as_response(await answers.start(state, data, idempotency_key, wait))

    @post("/runs/{run_id:str}/tick", status_code=200, summary="Execute one step", responses=_docs(RunOut, 404, 409, 422))
    async def tick_run(run_id: str = RunIdParam) -> Response[bytes]:
        return as_response(await answers.tick(state, run_id))

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
        return as_response(await answers.resume(state, run_id, data, wait, identity(request)))

    @post("/runs/{run_id:str}/cancel", status_code=200, summary="Cancel a run", responses=_docs(RunOut, 404, 409, 413))
    async def cancel_run(
        request: Request[Any, Any, Any],
        run_id: str = RunIdParam,
        data: CancelRequest | None = _body_doc(max_body_bytes, "Optional, the reason.", default=None),
    ) -> Response[bytes]:
        check_run_id(run_id)
        reason = data.reason if data is not None else None
        return json_response((await offload(engine.cancel, run_id, reason, by=identity(request))).to_json())

    @get("/runs/{run_id:str}", summary="Get a run", responses=_docs(RunOut, 404),
         description="With ?wait= and drivers, once the run has left RUNNING; without drivers, at once.")
    async def get_run(run_id: str = RunIdParam, wait: float | None = WaitParam) -> Response[bytes]:
        return as_response(await answers.get(state, run_id, wait))

    @get("/runs/{run_id:str}/timeline", summary="A run's events, in order", responses=_docs(list[EventOut], 404))
    async def get_timeline(
        run_id: str = RunIdParam,
        after: int = Parameter(ge=0, le=2**62, default=0, description="only events with seq > after"),
        limit: int | None = Parameter(ge=1, le=10_000, required=False),
    ) -> Response[bytes]:
        check_run_id(run_id)
        events = await offload(engine.timeline, run_id, after, limit)
        return json_response([event.to_json() for event in events])

    @get("/runs", summary="List runs, newest first", responses=_docs(RunPage))
    async def list_runs(
        # Named as on the wire, so a 400 names the parameter the client sent.
        status: RunStatus | None = Parameter(required=False),
        flowId: str | None = Parameter(required=False, max_length=MAX_NAME, pattern=NO_NUL),  # noqa: N803
        tenantId: str | None = Parameter(required=False, max_length=MAX_NAME, pattern=NO_NUL),  # noqa: N803
        limit: int = Parameter(ge=1, le=1000, default=50),
        cursor: str | None = Parameter(required=False, max_length=MAX_ID, pattern=NO_NUL),
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
            *stream_handlers(state, check_run_id),  # SSE: /v1/runs/{runId}/events, /v1/runs/changes
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
            # Flowrt errors (a 503 without connection details for an outage: those are logged),
            # too-deep JSON and the unexpected 500: the same answers as on the fast path.
            FlowrtError: on_error,
            RecursionError: on_error,
            Exception: on_error,
            ValidationException: _on_validation_error,
            HTTPException: _http_exception_handler(max_body_bytes),
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
        on_shutdown=[errors.outages.flush],  # the 503s of an outage's tail, counted but not yet logged
        logging_config=None,
        debug=False,
    )
    app.state["flowrt"] = state
    middleware.install(app)  # HEAD wherever GET works; invalid UTF-8 in a body is a 400
    if fast_path:  # outermost: an ordinary start/tick/get/resume never enters Litestar
        fastpath.install(app, state, table=table, errors=errors, max_body_bytes=max_body_bytes)
    return app


def api_state(app: Litestar) -> ApiState:
    """The shared state of an app made by :func:`create_app` (for the runtime's shutdown)."""
    return app.state["flowrt"]  # type: ignore[no-any-return]
