"""How a failure reaches the shell: one line on stderr and a documented exit code.

Exit codes (docs/cli.md):

    0  success
    1  the run ended FAILED or CANCELLED (commands with --wait)
    2  usage: bad option or argument, invalid JSON, missing --flows, bad token,
       or a command the server does not offer
    3  not found: run, flow, the run's flow version is not loaded, or the database file
    4  conflict: the run is busy, not waiting, or already finished
    5  the server or the database cannot be reached (or the server failed)
   70  an unexpected internal error (a bug: rerun with --debug and report it)
  130  stopped by Ctrl-C (the run is never failed by it: the message says how to continue)

The mapping follows the error's HTTP status, so a local :class:`~flowrt.FlowrtError`
and the same error coming back from a server give the same exit code. Peewee is not
imported here: remote commands never load it, and a driver error can only come from
a local command that did.
"""

from __future__ import annotations

import sys

from ..errors import FlowrtError

OK = 0
RUN_FAILED = 1
USAGE = 2
NOT_FOUND = 3
CONFLICT = 4
UNAVAILABLE = 5
INTERNAL = 70
INTERRUPTED = 130


class Stopped(Exception):
    """A ``--wait`` that Ctrl-C ended; the run goes on when someone continues it (see .interrupts)."""

    def __init__(self, run_id: str, node_id: str | None, *, abandoned: bool, run: dict[str, object] | None = None) -> None:
        super().__init__(run_id)
        self.run_id, self.node_id, self.abandoned, self.run = run_id, node_id, abandoned, run


class UsageProblem(FlowrtError):
    """The command line is incomplete or malformed."""

    code = "USAGE"
    http_status = 400

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.hint = hint


class Unreachable(FlowrtError):
    """The flowrt server cannot be reached."""

    code = "UNREACHABLE"
    http_status = 503


class NotOffered(FlowrtError):
    """The server has no route for what the command needs (the reference has no run list, no cancel)."""

    code = "NOT_OFFERED"
    http_status = 400


class DatabaseMissing(FlowrtError):
    """A read on a SQLite file that is not there: the user is in the wrong folder, or mistyped --db."""

    code = "DATABASE_NOT_FOUND"
    http_status = 404

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.hint = hint


class RemoteError(FlowrtError):
    """An error answered by a server whose code this client has no class for."""

    def __init__(self, message: str, code: str, http_status: int) -> None:
        super().__init__(message)
        self.code = code
        self.http_status = http_status


def _driver_error(exc: BaseException) -> bool:
    peewee = sys.modules.get("peewee")
    return peewee is not None and isinstance(exc, (peewee.OperationalError, peewee.InterfaceError))


def exit_code_for(exc: BaseException) -> int:
    """The exit code a script sees for ``exc``."""
    if isinstance(exc, FlowrtError):
        status = exc.http_status
        if status in (404, 422):
            return NOT_FOUND
        if status == 409:
            return CONFLICT
        if status >= 500:
            return UNAVAILABLE
        return USAGE
    # The engine wraps connection failures when it opens the database; a
    # database that goes away later surfaces as the driver's error.
    if _driver_error(exc):
        return UNAVAILABLE
    return INTERNAL


def describe(exc: BaseException) -> str:
    """One line for stderr, naming the machine code so scripts and people agree."""
    if isinstance(exc, UsageProblem):
        return exc.message
    if isinstance(exc, FlowrtError):
        return f"{exc.message} ({exc.code})"
    if _driver_error(exc):
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return f"database error: {first} (STORAGE_UNAVAILABLE)"
    return f"internal error: {type(exc).__name__}: {exc} (rerun with --debug for the traceback)"


def hint_for(exc: BaseException) -> str | None:
    """A second line saying what to do, for the errors where one helps."""
    hint = getattr(exc, "hint", None)
    return hint if isinstance(hint, str) else None
