"""``flowrt serve``: the HTTP runtime (SPEC 4 and 5) from the command line."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from ..errors import InvalidInput
from .errors import UsageProblem


def serve(
    flows: Annotated[
        Optional[list[str]],
        typer.Option(
            "--flows",
            envvar="FLOWRT_FLOWS",
            metavar="MODULE:NAME",
            help="Flows to serve, as module:NAME (a Flow, @flow class or list) or module. "
            "Repeatable; comma-separated also works.",
        ),
    ] = None,
    host: Annotated[
        str, typer.Option("--host", envvar="HOST", metavar="HOST", help="Interface to listen on.")
    ] = "127.0.0.1",
    port: Annotated[
        int,
        typer.Option("--port", envvar="PORT", min=0, max=65535, metavar="PORT", help="TCP port."),
    ] = 3000,
    db: Annotated[
        Optional[str],
        typer.Option(
            "--db",
            envvar="DATABASE_URL",
            metavar="URL",
            help="sqlite:///file.db, postgresql://... or memory://. "
            "(default: sqlite:///flowrt.db in the working directory)",
        ),
    ] = None,
    strict_db: Annotated[
        bool,
        typer.Option(
            "--strict-db",
            envvar="FLOWRT_STRICT_DB",
            help="Refuse to start (exit 5) when the database cannot be reached, instead of "
            "falling back to in-memory storage.",
        ),
    ] = False,
    token: Annotated[
        Optional[str],
        typer.Option(
            "--token",
            envvar="FLOWRT_API_TOKEN",
            metavar="TOKEN",
            help="Require 'Authorization: Bearer TOKEN' on every /v1 route (an admin token).",
        ),
    ] = None,
    tokens: Annotated[
        Optional[str],
        typer.Option(
            "--tokens",
            envvar="FLOWRT_API_TOKENS",
            metavar="NAME:SCOPE:TOKEN,...",
            help="Named tokens with a scope each (read, operate, admin); events record the name as 'by'.",
        ),
    ] = None,
    tokens_file: Annotated[
        Optional[str],
        typer.Option(
            "--tokens-file",
            envvar="FLOWRT_TOKENS_FILE",
            metavar="FILE",
            help="Named tokens, one name:scope:token a line ('#' comments).",
        ),
    ] = None,
    retention: Annotated[
        Optional[str],
        typer.Option(
            "--retention",
            envvar="FLOWRT_RETENTION",
            metavar="AGE",
            help="Prune finished runs that ended over AGE ago (30d, 12h, 1w) in the background, in small "
            "batches; RUNNING and WAITING runs are never touched. (default: keep everything)",
        ),
    ] = None,
    no_drive: Annotated[
        bool,
        typer.Option(
            "--no-drive",
            envvar="FLOWRT_NO_DRIVE",
            help="No background drivers: only tick/resume calls move runs (the reference's behaviour).",
        ),
    ] = False,
    workers: Annotated[
        Optional[int],
        typer.Option(
            "--workers",
            envvar="FLOWRT_WORKERS",
            metavar="N",
            min=1,
            help="Driver threads. (default: twice the CPU cores, 2-16)",
        ),
    ] = None,
    lease_ttl: Annotated[
        Optional[float],
        typer.Option(
            "--lease-ttl",
            envvar="FLOWRT_LEASE_TTL",
            metavar="SECONDS",
            min=0.1,
            # leases.MAX_LEASE_TTL, written out: the CLI starts without the engine (a test keeps them equal)
            max=86_400,
            help="Seconds before a dead process's runs may be reclaimed. (default: 30)",
        ),
    ] = None,
    max_body_bytes: Annotated[
        Optional[int],
        typer.Option(
            "--max-body-bytes",
            envvar="FLOWRT_MAX_BODY_BYTES",
            metavar="BYTES",
            min=1,
            help="Largest request body accepted (413 above). (default: 1048576)",
        ),
    ] = None,
    shutdown_grace: Annotated[
        Optional[float],
        typer.Option(
            "--shutdown-grace",
            envvar="FLOWRT_SHUTDOWN_GRACE",
            metavar="SECONDS",
            min=0,
            help="Seconds a shutdown (SIGTERM, Ctrl-C) waits for steps in flight; steps still running then "
            "are recovered at the next start. (default: 30)",
        ),
    ] = None,
    max_value_bytes: Annotated[
        Optional[int],
        typer.Option(
            "--max-value-bytes",
            envvar="FLOWRT_MAX_VALUE_BYTES",
            metavar="BYTES",
            min=1,
            help="Largest stored value: a run's input, a step's output or patch, a resume payload. "
            "(default: 1048576)",
        ),
    ] = None,
    max_connections: Annotated[
        Optional[int],
        typer.Option(
            "--max-connections",
            envvar="FLOWRT_MAX_CONNECTIONS",
            metavar="N",
            min=1,
            help="Open connections plus requests in progress (long-polls included); past it, new "
            "requests get 503. (default: 1000)",
        ),
    ] = None,
    keep_alive: Annotated[
        Optional[float],
        typer.Option(
            "--keep-alive",
            envvar="FLOWRT_KEEP_ALIVE",
            metavar="SECONDS",
            min=0.1,
            help="Seconds an idle connection stays open (before its first request and between "
            "requests). (default: 5)",
        ),
    ] = None,
    read_timeout: Annotated[
        Optional[float],
        typer.Option(
            "--read-timeout",
            envvar="FLOWRT_READ_TIMEOUT",
            metavar="SECONDS",
            min=0.1,
            help="Seconds a request may take to arrive, head and body, from its first byte; past "
            "it, 408 and the connection is closed. (default: 30)",
        ),
    ] = None,
    busy_poll: Annotated[
        Optional[float],
        typer.Option(
            "--busy-poll",
            envvar="FLOWRT_BUSY_POLL",
            metavar="MICROSECONDS",
            min=0,
            # server.busy_poll.MAX_LIMIT_US, written out: the CLI starts without the server (a test keeps them equal)
            max=1_000,
            help="Longest time the server keeps polling after an answer instead of sleeping, so a "
            "client calling in a loop is read at once; adapts to how soon requests come, 0 turns it "
            "off. (default: 300)",
        ),
    ] = None,
    log_level: Annotated[
        str,
        typer.Option(
            "--log-level",
            envvar="FLOWRT_LOG_LEVEL",
            metavar="LEVEL",
            help="debug, info, warning or error.",
        ),
    ] = "info",
) -> None:
    """Serve flows over HTTP (wire-compatible with @hazeljs/flow-runtime), driving runs in the background."""
    # Imported here: the rest of the CLI should not pay for Litestar and uvicorn.
    from ..server.runtime import run_flow_runtime

    try:
        run_flow_runtime(
            flows or [],
            port=port,
            host=host,
            database_url=db,
            api_token=token,
            api_tokens=tokens,
            tokens_file=tokens_file,
            retention=retention,
            drive=not no_drive,
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
            busy_poll_us=busy_poll,
        )
    except KeyboardInterrupt:  # Ctrl-C is how a foreground server is stopped: not a failure
        raise typer.Exit(0) from None
    except InvalidInput as exc:  # a setting the options' own checks let through (NaN, a bad env var)
        raise UsageProblem(exc.message, hint="see 'flowrt serve --help'") from exc
