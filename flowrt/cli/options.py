"""Options shared by the commands, and the parsing they need (JSON arguments, times).

One definition per option, so every command spells, documents and reads it from the
environment the same way.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import sys
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Iterator, Optional

import typer

from .backends import Backend, connect
from .errors import UsageProblem

CONNECTION = "Connection"
OUTPUT = "Output"


def _remember_debug(ctx: typer.Context, value: bool) -> bool:
    """Eager, so the error handler knows about --debug even when later parsing fails."""
    if value:
        ctx.meta["flowrt.debug"] = True
        logging.basicConfig(level=logging.DEBUG, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
    return value


Db = Annotated[
    Optional[str],
    typer.Option(
        "--db",
        envvar="DATABASE_URL",
        metavar="URL",
        help="Database for local mode: sqlite:///file.db, postgresql://..., memory://. Default: sqlite:///flowrt.db.",
        rich_help_panel=CONNECTION,
    ),
]
Url = Annotated[
    Optional[str],
    typer.Option(
        "--url",
        envvar="FLOWRT_URL",
        metavar="URL",
        help="Talk to a flowrt server (e.g. http://127.0.0.1:3000) instead of the local database.",
        rich_help_panel=CONNECTION,
    ),
]
Token = Annotated[
    Optional[str],
    typer.Option(
        "--token",
        envvar="FLOWRT_API_TOKEN",
        metavar="TOKEN",
        help="Bearer token for the server (remote mode).",
        rich_help_panel=CONNECTION,
    ),
]
Flows = Annotated[
    Optional[list[str]],
    typer.Option(
        "--flows",
        envvar="FLOWRT_FLOWS",
        metavar="MODULE:NAME",
        help="Flows to load in local mode, e.g. examples.orders:ALL (repeatable or comma-separated). "
        "Not needed with --url: the server has its own.",
        rich_help_panel=CONNECTION,
    ),
]
AsJson = Annotated[
    bool,
    typer.Option("--json", envvar="FLOWRT_JSON", help="Print the HTTP API's JSON, for scripts and jq.", rich_help_panel=OUTPUT),
]
LocalTime = Annotated[
    bool,
    typer.Option(
        "--local-time",
        envvar="FLOWRT_LOCAL_TIME",
        help="Show times in this machine's time zone instead of UTC (--json stays UTC).",
        rich_help_panel=OUTPUT,
    ),
]
Debug = Annotated[
    bool,
    typer.Option(
        "--debug",
        envvar="FLOWRT_DEBUG",
        is_eager=True,
        callback=_remember_debug,
        help="Show tracebacks and debug logs.",
        rich_help_panel=OUTPUT,
    ),
]
RunId = Annotated[str, typer.Argument(metavar="RUN", help="The run id (as printed by start or runs).")]
Wait = Annotated[
    bool,
    typer.Option("--wait", envvar="FLOWRT_WAIT", help="Return when the run waits or ends; exit 1 if it FAILED or was CANCELLED."),
]
Interval = Annotated[
    float,
    typer.Option(
        "--interval", envvar="FLOWRT_POLL_INTERVAL", min=0.05, metavar="SECONDS",
        help="How often --follow / --watch look again.",
    ),
]


@contextlib.contextmanager
def session(
    db: str | None,
    url: str | None,
    token: str | None,
    flows: list[str] | None = None,
    *,
    needs_flows: str | None = None,
    creates_db: bool = False,
) -> Iterator[Backend]:
    """A backend for one command, closed afterwards (releasing any lease it holds)."""
    backend = connect(db=db, url=url, token=token, flows=flows, needs_flows=needs_flows, creates_db=creates_db)
    try:
        yield backend
    finally:
        backend.close()


def read_json(value: str | None, option: str) -> Any:
    """``--input`` / ``--payload``: inline JSON, ``@file.json``, or ``-`` for stdin."""
    if value is None:
        return None
    if value == "-":
        text, source = sys.stdin.read(), " (from stdin)"
    elif value.startswith("@"):
        path = value[1:]
        try:
            with open(path, encoding="utf-8") as handle:
                text = handle.read()
        except OSError as exc:
            raise UsageProblem(f"{option}: cannot read {path}: {exc.strerror or exc}") from exc
        source = f" (from {path})"
    else:
        text, source = value, ""
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise UsageProblem(f"{option} is not valid JSON{source}: {exc}") from exc
    except RecursionError:
        raise UsageProblem(f"{option}: the JSON{source} is nested too deeply") from None


_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_when(value: str | None, option: str, *, now: datetime | None = None) -> datetime | None:
    """``--since 1h`` (that long ago), ``--since 2d12h``, or an ISO time (``2026-05-01``,
    ``2026-05-01T12:00``, ``...Z`` or with an offset; without one it is this machine's time)."""
    if value is None:
        return None
    text = value.strip()
    if text and _DURATION.sub("", text) == "":
        seconds = sum(float(n) * _UNITS[unit] for n, unit in _DURATION.findall(text))
        return (now or datetime.now(UTC)) - timedelta(seconds=seconds)
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise UsageProblem(
            f"{option} {value!r} is neither a duration (30m, 1h, 2d, 1w) nor an ISO time (2026-05-01T12:00Z)"
        ) from None
    return moment if moment.tzinfo else moment.astimezone()
