"""The runtime service (SPEC section 4): settings, engine, recovery, drivers and uvicorn.

:func:`run_flow_runtime` is what ``flowrt serve`` calls. :class:`FlowRuntime` holds the
pieces that live as long as the server (engine, drivers, background recovery, the app)
so tests can run the very same thing inside a thread.

Shutdown (SIGTERM, or Ctrl-C) has one deadline, ``shutdown_grace`` seconds away: uvicorn
stops accepting and lets in-flight requests finish, recovery and drivers stop claiming and
finish the step in hand (so it commits), and only then does the engine close the database.
A step still running at the deadline is abandoned: its lease is expired, so the next start
(or another process) recovers it at once; an interruption is not the node's failure. A
second signal abandons at once.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import signal
import socket
import threading
import time
from dataclasses import dataclass, field
from types import FrameType
from typing import Any, Iterable, Iterator, Mapping

import uvicorn
from litestar import Litestar

from ..driver import Drivers, recover
from ..engine import Engine
from ..errors import FlowrtError, InvalidInput, StorageUnavailable
from ..leases import MAX_LEASE_TTL
from ..loader import load_all
from ..storage import DEFAULT_URL, describe_url
from ..values import DEFAULT_MAX_VALUE_BYTES
from . import connections
from .app import DEFAULT_MAX_BODY, ApiState, api_state, create_app
from ..retention import RetentionLoop, parse_age
from .auth import Token, load_tokens
from .busy_poll import DEFAULT_LIMIT_US as DEFAULT_BUSY_POLL_US
from .busy_poll import MAX_LIMIT_US as MAX_BUSY_POLL_US

log = logging.getLogger("flowrt.server")

DEFAULT_SHUTDOWN_GRACE = 30.0
"""How long shutdown waits for the steps in flight (requests and drivers) before abandoning them."""

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


class CannotListen(FlowrtError):
    """The server cannot bind its address (port in use, no permission, unknown host)."""

    code = "CANNOT_LISTEN"
    http_status = 400  # a usage problem for the CLI: pick another --host/--port


def default_workers() -> int:
    """Drivers per process: twice the cores (handlers often wait on I/O), between 2 and 16."""
    return max(2, min(16, 2 * (os.cpu_count() or 1)))


def _env_bool(env: Mapping[str, str], name: str) -> bool | None:
    raw = env.get(name)
    if raw is None:
        return None
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise InvalidInput(f"{name}={raw!r}: expected 1/0, true/false, yes/no or on/off")


def _env_number(env: Mapping[str, str], name: str, kind: type[int] | type[float]) -> Any:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return None
    try:
        return kind(raw)
    except ValueError:
        raise InvalidInput(f"{name}={raw!r}: expected a number") from None


@dataclass
class Settings:
    """Everything the runtime needs, resolved: explicit argument, else environment, else default."""

    flows: list[Any] = field(default_factory=list)
    host: str = "127.0.0.1"
    port: int = 3000
    database_url: str = DEFAULT_URL
    services: dict[str, Any] = field(default_factory=dict)
    api_token: str | None = None
    tokens: list[Token] = field(default_factory=list)
    """Named, scoped tokens (FLOWRT_API_TOKENS, --tokens-file); see :mod:`flowrt.server.auth`."""
    drive: bool = True
    retention: float | None = None
    """Seconds after which finished runs are pruned in the background (--retention); None: never."""
    workers: int = field(default_factory=default_workers)
    strict_db: bool = False
    lease_ttl: float = 30.0
    max_body_bytes: int = DEFAULT_MAX_BODY
    recovery_concurrency: int = 8
    log_level: str = "info"
    shutdown_grace: float = DEFAULT_SHUTDOWN_GRACE
    max_value_bytes: int = DEFAULT_MAX_VALUE_BYTES
    max_connections: int = connections.DEFAULT_MAX_CONNECTIONS
    keep_alive: float = connections.DEFAULT_KEEP_ALIVE
    read_timeout: float = connections.DEFAULT_READ_TIMEOUT
    """Seconds a request may take to arrive, from its first byte; then 408 and the connection closed."""
    busy_poll_us: float = DEFAULT_BUSY_POLL_US
    """The longest busy-poll window after an answer, in µs (:mod:`flowrt.server.busy_poll`); 0: none."""
    fast_path: bool = True
    """Serve ordinary start/tick/get/resume requests in front of Litestar (FLOWRT_FAST_PATH=0: off)."""

    @classmethod
    def resolve(
        cls,
        *,
        flows: Iterable[Any] | str | None = None,
        host: str | None = None,
        port: int | None = None,
        database_url: str | None = None,
        services: Mapping[str, Any] | None = None,
        api_token: str | None = None,
        api_tokens: str | None = None,
        tokens_file: str | None = None,
        retention: str | float | None = None,
        drive: bool | None = None,
        workers: int | None = None,
        strict_db: bool | None = None,
        lease_ttl: float | None = None,
        max_body_bytes: int | None = None,
        log_level: str | None = None,
        shutdown_grace: float | None = None,
        max_value_bytes: int | None = None,
        max_connections: int | None = None,
        keep_alive: float | None = None,
        read_timeout: float | None = None,
        busy_poll_us: float | None = None,
        fast_path: bool | None = None,
        env: Mapping[str, str] | None = None,
    ) -> Settings:
        """Apply SPEC 4's environment (PORT, HOST, DATABASE_URL, FLOWRT_*) under explicit arguments.

        ``flows`` entries may be Flows, ``@flow`` classes or ``"module:NAME"`` paths.
        Raises :class:`InvalidInput` (or :class:`DefinitionError` for flows) on bad values.
        """
        env = os.environ if env is None else env
        if flows is None or flows == "" or flows == []:
            flows = env.get("FLOWRT_FLOWS") or []
        if isinstance(flows, str):
            flows = [flows]
        loaded: list[Any] = []
        paths = [item for item in flows if isinstance(item, str)]
        loaded.extend(item for item in flows if not isinstance(item, str))
        if paths:
            loaded.extend(load_all(paths))

        url = database_url or env.get("DATABASE_URL") or None
        if port is None:
            port = _env_number(env, "PORT", int)
        if port is None:
            port = 3000
        if not 0 <= port <= 65535:
            raise InvalidInput(f"--port / PORT {port} is out of range 0-65535")
        if workers is None:
            workers = _env_number(env, "FLOWRT_WORKERS", int)
        if workers is not None and workers < 1:
            raise InvalidInput("--workers / FLOWRT_WORKERS must be at least 1")
        if lease_ttl is None:
            lease_ttl = _env_number(env, "FLOWRT_LEASE_TTL", float)
        if lease_ttl is not None and not 0 < lease_ttl <= MAX_LEASE_TTL:
            raise InvalidInput(f"--lease-ttl / FLOWRT_LEASE_TTL must be above 0 and at most {MAX_LEASE_TTL:g} seconds")
        if max_body_bytes is None:
            max_body_bytes = _env_number(env, "FLOWRT_MAX_BODY_BYTES", int)
        if max_body_bytes is not None and max_body_bytes < 1:
            raise InvalidInput("--max-body-bytes / FLOWRT_MAX_BODY_BYTES must be at least 1 byte")
        if shutdown_grace is None:
            shutdown_grace = _env_number(env, "FLOWRT_SHUTDOWN_GRACE", float)
        if shutdown_grace is not None and not shutdown_grace >= 0:
            raise InvalidInput("--shutdown-grace / FLOWRT_SHUTDOWN_GRACE must be a number of seconds >= 0")
        if max_value_bytes is None:
            max_value_bytes = _env_number(env, "FLOWRT_MAX_VALUE_BYTES", int)
        if max_value_bytes is not None and max_value_bytes < 1:
            raise InvalidInput("--max-value-bytes / FLOWRT_MAX_VALUE_BYTES must be at least 1 byte")
        if max_connections is None:
            max_connections = _env_number(env, "FLOWRT_MAX_CONNECTIONS", int)
        if max_connections is not None and max_connections < 1:
            raise InvalidInput("--max-connections / FLOWRT_MAX_CONNECTIONS must be at least 1")
        if keep_alive is None:
            keep_alive = _env_number(env, "FLOWRT_KEEP_ALIVE", float)
        if keep_alive is not None and not keep_alive > 0:
            raise InvalidInput("--keep-alive / FLOWRT_KEEP_ALIVE must be a positive number of seconds")
        if read_timeout is None:
            read_timeout = _env_number(env, "FLOWRT_READ_TIMEOUT", float)
        if read_timeout is not None and not read_timeout > 0:
            raise InvalidInput("--read-timeout / FLOWRT_READ_TIMEOUT must be a positive number of seconds")
        if busy_poll_us is None:
            busy_poll_us = _env_number(env, "FLOWRT_BUSY_POLL", float)
        if busy_poll_us is not None and not 0 <= busy_poll_us <= MAX_BUSY_POLL_US:
            raise InvalidInput(f"--busy-poll / FLOWRT_BUSY_POLL must be 0 (off) to {MAX_BUSY_POLL_US} microseconds")
        if strict_db is None:
            strict_db = _env_bool(env, "FLOWRT_STRICT_DB")
        if drive is None:
            no_drive = _env_bool(env, "FLOWRT_NO_DRIVE")
            drive = None if no_drive is None else not no_drive
        tokens = load_tokens(
            tokens=api_tokens or env.get("FLOWRT_API_TOKENS") or None,
            tokens_file=tokens_file or env.get("FLOWRT_TOKENS_FILE") or None,
        )
        if fast_path is None:
            fast_path = _env_bool(env, "FLOWRT_FAST_PATH")
        if retention is None or retention == "":
            retention = env.get("FLOWRT_RETENTION") or None
        return cls(
            flows=loaded,
            tokens=tokens,
            retention=None if retention is None else parse_age(str(retention), "--retention / FLOWRT_RETENTION"),
            host=host or env.get("HOST") or "127.0.0.1",
            port=port,
            database_url=url or DEFAULT_URL,
            services=dict(services or {}),
            api_token=api_token or env.get("FLOWRT_API_TOKEN") or None,
            drive=True if drive is None else drive,
            workers=workers or default_workers(),
            strict_db=bool(strict_db),
            lease_ttl=30.0 if lease_ttl is None else lease_ttl,
            max_body_bytes=max_body_bytes or DEFAULT_MAX_BODY,
            log_level=(log_level or env.get("FLOWRT_LOG_LEVEL") or "info").lower(),
            shutdown_grace=DEFAULT_SHUTDOWN_GRACE if shutdown_grace is None else shutdown_grace,
            max_value_bytes=max_value_bytes or DEFAULT_MAX_VALUE_BYTES,
            max_connections=max_connections or connections.DEFAULT_MAX_CONNECTIONS,
            keep_alive=keep_alive or connections.DEFAULT_KEEP_ALIVE,
            read_timeout=read_timeout or connections.DEFAULT_READ_TIMEOUT,
            busy_poll_us=DEFAULT_BUSY_POLL_US if busy_poll_us is None else busy_poll_us,
            fast_path=True if fast_path is None else fast_path,
        )


def open_engine(settings: Settings) -> tuple[Engine, str | None]:
    """``(engine, fallback_reason)``: the configured database, or memory when it cannot be reached.

    The fallback is the reference's behaviour and keeps a demo alive, but every run
    is lost on restart, so it is logged loudly and shown in ``/health``. With
    ``strict_db`` the :class:`StorageUnavailable` propagates instead.
    """
    kwargs: dict[str, Any] = {
        "flows": settings.flows,
        "services": settings.services,
        "lease_ttl": settings.lease_ttl,
        "max_value_bytes": settings.max_value_bytes,
    }
    try:
        return Engine(settings.database_url, **kwargs), None
    except StorageUnavailable as exc:
        if settings.strict_db:
            raise
        reason = " ".join(exc.message.split())  # names the URL (no password) and the driver's why
        log.error("!" * 72)
        log.error("DATABASE UNREACHABLE: %s", reason)
        log.error("FALLING BACK TO IN-MEMORY STORAGE: runs are NOT durable and are lost on restart.")
        log.error("Use --strict-db (FLOWRT_STRICT_DB=1) to refuse to start instead.")
        log.error("!" * 72)
        return Engine("memory://", **kwargs), reason


class FlowRuntime:
    """Engine, drivers, startup recovery and the app: the service without its HTTP listener."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.engine, self.fallback_reason = open_engine(settings)
        self.drivers = Drivers(self.engine, workers=settings.workers) if settings.drive else None
        self.app: Litestar = create_app(
            self.engine,
            api_token=settings.api_token,
            tokens=settings.tokens,
            max_body_bytes=settings.max_body_bytes,
            drivers=self.drivers,
            fallback_reason=self.fallback_reason,
            fast_path=settings.fast_path,
        )
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._background: threading.Thread | None = None
        self._closed = False
        self._deadline: float | None = None  # monotonic time at which shutdown abandons steps
        self._abandon = threading.Event()
        self.retention = (
            None if settings.retention is None else RetentionLoop(self.engine.pruner, settings.retention)
        )
        if not settings.flows:
            log.warning("no flows registered: pass --flows module:NAME (or FLOWRT_FLOWS)")

    @property
    def state(self) -> ApiState:
        return api_state(self.app)

    def start(self) -> FlowRuntime:
        """Run startup recovery and start the drivers.

        With drivers, recovery runs in the background while the server answers and the
        drivers work beside it from the start: a run started now, or one whose short
        backoff ends, does not wait for the whole backlog to be recovered. Without (``--no-drive``), only
        tick/resume may move a run once the server is up, so recovery finishes first;
        otherwise a client's first tick could meet a recovery worker (RUN_BUSY).
        """
        threading.Thread(target=self._report_shutdown, name="flowrt-shutdown", daemon=True).start()
        # Everything loaded so far (flows, Litestar, the app) lives as long as the server:
        # move it out of the collector's sight so full collections stay short (tail latency).
        gc.collect()
        gc.freeze()
        if self.retention is not None:
            self.retention.start()
        if self.drivers is None:
            self._recover()
            return self
        with self._lock:
            if not self._stop.is_set():
                self.drivers.start()
        self._background = threading.Thread(target=self._recover, name="flowrt-recovery", daemon=True)
        self._background.start()
        return self

    def _recover(self) -> None:
        try:
            recover(self.engine, concurrency=self.settings.recovery_concurrency, stop=self._stop)
        except Exception:  # noqa: BLE001 - serving goes on; drivers or ticks continue the runs later
            log.exception("startup recovery failed")

    def begin_shutdown(self) -> None:
        """Signal-safe (no locks, no logging here): long-polls answer now, recovery and
        drivers stop claiming, and the shutdown deadline starts."""
        if self._deadline is not None:
            return
        self._deadline = time.monotonic() + self.settings.shutdown_grace
        self.state.stopping = True
        self._stop.set()  # wakes _report_shutdown, started beforehand: no thread starts in a signal handler

    def abandon_now(self) -> None:
        """Signal-safe: the second signal. Steps still running are abandoned at once."""
        self.begin_shutdown()
        self._abandon.set()

    def _report_shutdown(self) -> None:
        """Say what shutdown is waiting for, and again every 10 s while it waits."""
        self._stop.wait()
        assert self._deadline is not None
        first = True
        while not self._closed:
            steps = self.engine.steps_in_flight()
            left = max(0.0, self._deadline - time.monotonic())
            if steps:
                listed = ", ".join(f"run {run_id} at {node_id} ({age:.0f}s)" for run_id, node_id, age in steps[:8])
                more = f" and {len(steps) - 8} more" if len(steps) > 8 else ""
                log.warning(
                    "shutting down: waiting up to %.0fs for %d step(s): %s%s (a second Ctrl-C abandons them now; "
                    "abandoned steps are recovered at the next start)",
                    left, len(steps), listed, more,
                )  # fmt: skip
            elif first:
                log.info("shutting down: no step in flight")
            first = False
            if self._abandon.wait(10.0 if steps else 0.5):
                log.warning("second signal: abandoning the steps in flight now; they are recovered at the next start")
                return

    def close(self, timeout: float | None = None) -> None:
        """Stop claiming, let steps in hand commit until the deadline, then close the database
        (expiring the leases of steps still running, so they are recovered at the next start)."""
        if self._closed:
            return
        self.begin_shutdown()
        assert self._deadline is not None
        deadline = self._deadline if timeout is None else min(self._deadline, time.monotonic() + timeout)

        def left() -> float:
            return 0.0 if self._abandon.is_set() else max(0.0, deadline - time.monotonic())

        with self._lock:
            if self.drivers is not None:  # first: they work beside a startup recovery still under way
                self.drivers.stop(0)  # stop claiming; the steps in hand go on
        # Waits in short slices, so a second signal (abandon_now) ends them at once.
        background = self._background
        while background is not None and background.is_alive() and left() > 0:
            background.join(min(0.05, left()))
        while self.drivers is not None and self.drivers.alive() and left() > 0:
            time.sleep(0.05)
        if self.retention is not None:
            self.retention.stop()  # it stops between two batches
        self._closed = True
        self.engine.close()
        log.info("flowrt runtime stopped")


class _Server(uvicorn.Server):
    """uvicorn, telling the runtime as soon as a shutdown signal arrives."""

    def __init__(self, config: uvicorn.Config, runtime: FlowRuntime) -> None:
        super().__init__(config)
        self.runtime = runtime

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        """Ours stay installed for the whole run (see run_flow_runtime); uvicorn's own would
        re-raise each signal after serving, which would look like a second Ctrl-C."""
        yield

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        second = self.should_exit
        super().handle_exit(sig, frame)
        if second:
            self.runtime.abandon_now()
            self.force_exit = True  # uvicorn stops waiting for requests too (it only does so for SIGINT)
        else:
            self.runtime.begin_shutdown()


def _configure_logging(level: str) -> None:
    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        raise InvalidInput(f"--log-level / FLOWRT_LOG_LEVEL: unknown level {level!r} (debug, info, warning or error)")
    root = logging.getLogger()
    if not root.handlers:
        logging.basicConfig(level=numeric, format="%(asctime)s %(levelname)-7s %(name)s: %(message)s")
    logging.getLogger("flowrt").setLevel(numeric)


def _check_can_listen(host: str, port: int) -> None:
    """Fail fast on a busy or forbidden address, before startup recovery moves any run."""
    if port == 0:
        return
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        family, kind, proto, _, address = infos[0]
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
            probe.bind(address)
    except OSError as exc:
        raise CannotListen(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None


def uvicorn_config(app: Litestar, settings: Settings, **overrides: Any) -> uvicorn.Config:
    options: dict[str, Any] = {
        "host": settings.host,
        "port": settings.port,
        "log_level": settings.log_level,
        "access_log": False,  # a log line per request costs about as much as the request
        "lifespan": "off",  # the runtime's lifecycle is managed around the server, not inside it
        "timeout_graceful_shutdown": settings.shutdown_grace,
        "server_header": False,
        # Nothing here reads the client's address or scheme (no access log, no absolute URLs),
        # so uvicorn's X-Forwarded-* middleware would be one more layer on every request for nothing.
        "proxy_headers": False,
        **connections.uvicorn_options(
            settings.max_connections, settings.keep_alive, settings.read_timeout, settings.busy_poll_us
        ),
    }
    options.update(overrides)
    return uvicorn.Config(app, **options)


def _auth_summary(settings: Settings) -> str:
    """How the API is guarded, naming tokens and scopes, never a secret."""
    named = [f"{t.name} ({t.scope})" for t in settings.tokens]
    if settings.api_token:
        named.insert(0, "FLOWRT_API_TOKEN (admin)")
    return "bearer tokens: " + ", ".join(named) if named else "off"


def run_flow_runtime(
    flows: Iterable[Any] | str | None = None,
    *,
    port: int | None = None,
    host: str | None = None,
    database_url: str | None = None,
    services: Mapping[str, Any] | None = None,
    api_token: str | None = None,
    api_tokens: str | None = None,
    tokens_file: str | None = None,
    retention: str | float | None = None,
    drive: bool | None = None,
    workers: int | None = None,
    strict_db: bool | None = None,
    lease_ttl: float | None = None,
    max_body_bytes: int | None = None,
    log_level: str | None = None,
    shutdown_grace: float | None = None,
    max_value_bytes: int | None = None,
    max_connections: int | None = None,
    keep_alive: float | None = None,
    read_timeout: float | None = None,
    busy_poll_us: float | None = None,
) -> None:
    """Serve ``flows`` over HTTP until SIGTERM/SIGINT, then shut down gracefully.

    Every argument left as ``None`` comes from the environment (``PORT``, ``HOST``,
    ``DATABASE_URL``, ``FLOWRT_API_TOKEN``, ``FLOWRT_FLOWS``, ``FLOWRT_WORKERS``,
    ``FLOWRT_STRICT_DB``, ``FLOWRT_NO_DRIVE``, ``FLOWRT_LEASE_TTL``,
    ``FLOWRT_MAX_BODY_BYTES``, ``FLOWRT_LOG_LEVEL``, ``FLOWRT_SHUTDOWN_GRACE``,
    ``FLOWRT_MAX_VALUE_BYTES``, ``FLOWRT_MAX_CONNECTIONS``, ``FLOWRT_KEEP_ALIVE``,
    ``FLOWRT_READ_TIMEOUT``, ``FLOWRT_BUSY_POLL``) or its default.

    Raises :class:`~flowrt.StorageUnavailable` when ``strict_db`` is set and the
    database cannot be reached, :class:`~flowrt.InvalidInput` /
    :class:`~flowrt.DefinitionError` for bad settings or flows.
    """
    settings = Settings.resolve(
        flows=flows,
        host=host,
        port=port,
        database_url=database_url,
        services=services,
        api_token=api_token,
        api_tokens=api_tokens,
        tokens_file=tokens_file,
        retention=retention,
        drive=drive,
        workers=workers,
        strict_db=strict_db,
        lease_ttl=lease_ttl,
        max_body_bytes=max_body_bytes,
        log_level=log_level,
        shutdown_grace=shutdown_grace,
        max_value_bytes=max_value_bytes,
        max_connections=max_connections,
        keep_alive=keep_alive,
        read_timeout=read_timeout,
        busy_poll_us=busy_poll_us,
    )
    _configure_logging(settings.log_level)
    connections.ensure_file_limit(settings.max_connections)
    _check_can_listen(settings.host, settings.port)  # before recovery touches the database
    runtime = FlowRuntime(settings)
    log.info(
        "flowrt serving %d flow(s) on http://%s:%d (storage: %s%s, %s, auth: %s, busy poll: %s)",
        len(runtime.engine.flows),
        settings.host,
        settings.port,
        runtime.engine.storage.kind,
        "" if runtime.engine.storage.kind == "memory" else f" {describe_url(runtime.engine.database_url)}",
        f"{settings.workers} driver(s)" if settings.drive else "no drivers (--no-drive)",
        _auth_summary(settings),
        f"up to {settings.busy_poll_us:g} µs" if settings.busy_poll_us else "off",
    )
    server = _Server(uvicorn_config(runtime.app, settings), runtime)
    # One handler for SIGTERM/SIGINT from before startup recovery until the runtime has
    # closed: a signal during recovery stops it and skips serving; the first signal while
    # serving starts the graceful shutdown, a second abandons the steps in flight; either
    # way the runtime's shutdown below completes (exit 0).
    in_main = threading.current_thread() is threading.main_thread()
    signals = (signal.SIGTERM, signal.SIGINT) if in_main else ()
    previous = {sig: signal.signal(sig, server.handle_exit) for sig in signals}
    try:
        runtime.start()
        if not server.should_exit:
            server.run()
    except SystemExit:
        if server.started:
            raise
        # uvicorn has logged why (e.g. the port is in use) and exits with its own code.
        raise CannotListen(f"cannot listen on {settings.host}:{settings.port} (see the error above)") from None
    finally:
        try:
            runtime.close()  # our handler stays installed: a second signal here abandons the steps
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
