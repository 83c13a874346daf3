"""Every error flowrt raises, each with a stable machine ``code`` and HTTP status.

    FlowrtError
    ├── DefinitionError        DEFINITION_ERROR      a flow is malformed (found when it is built)
    │   └── FlowLoadError      FLOW_LOAD_ERROR       a flows module does not import (syntax error, ...)
    ├── InvalidInput           BAD_REQUEST           an argument is missing, ill-typed or not JSON
    │   └── PayloadTooLarge    PAYLOAD_TOO_LARGE     a value is over the configured size limit
    ├── FlowNotFound           FLOW_NOT_FOUND        no such flow/version is registered
    ├── FlowNotRegistered      FLOW_NOT_REGISTERED   a stored run's flow version is not loaded here
    ├── RunNotFound            RUN_NOT_FOUND
    ├── RunBusy                RUN_BUSY              another executor holds the run's lease
    ├── RunNotWaiting          RUN_NOT_WAITING       resume of a run that is not WAITING
    ├── RunFinished            RUN_FINISHED          cancel of a run that already ended
    ├── RunNotRepairable       RUN_NOT_REPAIRABLE    retry/rewind of a run in a state that does not allow it
    │   └── RewindUnavailable  REWIND_UNAVAILABLE    rewind to a point the run's stored history cannot rebuild
    ├── IdempotencyConflict    IDEMPOTENCY_CONFLICT  a start key reused for a different start
    ├── StorageUnavailable     STORAGE_UNAVAILABLE   the database cannot be reached
    ├── ServerUnreachable      SERVER_UNREACHABLE    (client) no answer: refused, reset, timed out
    └── HttpError              the server's code     (client) an error answer with no class above
        └── Unsupported        NOT_SUPPORTED         (client) the server does not offer that call

The HTTP API and the CLI map ``code`` and ``http_status`` straight through, so a
Python caller, a curl user and a shell script all see the same names; the last three
are raised only by :mod:`flowrt.client`, on the caller's side of the wire.
"""

from __future__ import annotations


class FlowrtError(Exception):
    """A flowrt error."""

    code = "FLOWRT_ERROR"
    http_status = 500

    def __init__(self, message: str | None = None, **details: object) -> None:
        self.message = message or (self.__doc__ or self.code).strip()
        self.details = details
        super().__init__(self.message)

    def to_json(self) -> dict[str, object]:
        return {"error": self.message, "code": self.code}


class DefinitionError(FlowrtError):
    """The flow definition is invalid."""

    code = "DEFINITION_ERROR"
    http_status = 400


class FlowLoadError(DefinitionError):
    """A flows module could not be imported: the user's file, line and traceback are in the message."""

    code = "FLOW_LOAD_ERROR"


class InvalidInput(FlowrtError):
    """The request is malformed."""

    code = "BAD_REQUEST"
    http_status = 400


class PayloadTooLarge(InvalidInput):
    """A value is larger than the configured limit."""

    code = "PAYLOAD_TOO_LARGE"
    http_status = 413


class FlowNotFound(FlowrtError):
    """No such flow is registered."""

    code = "FLOW_NOT_FOUND"
    http_status = 404


class FlowNotRegistered(FlowrtError):
    """The run's flow version is not loaded in this process."""

    code = "FLOW_NOT_REGISTERED"
    http_status = 422


class RunNotFound(FlowrtError):
    """No such run."""

    code = "RUN_NOT_FOUND"
    http_status = 404


class RunBusy(FlowrtError):
    """The run is being executed by another worker; try again shortly."""

    code = "RUN_BUSY"
    http_status = 409


class RunNotWaiting(FlowrtError):
    """The run is not waiting, so it cannot be resumed."""

    code = "RUN_NOT_WAITING"
    http_status = 409


class RunFinished(FlowrtError):
    """The run has already ended."""

    code = "RUN_FINISHED"
    http_status = 409


class RunNotRepairable(FlowrtError):
    """The run's status does not allow this repair (retry a COMPLETED or active run, rewind a RUNNING one)."""

    code = "RUN_NOT_REPAIRABLE"
    http_status = 409


class RewindUnavailable(RunNotRepairable):
    """The run never started that node, or was stored before flowrt kept each step's changes."""

    code = "REWIND_UNAVAILABLE"


class IdempotencyConflict(FlowrtError):
    """The idempotency key was already used for a different start."""

    code = "IDEMPOTENCY_CONFLICT"
    http_status = 409


class StorageUnavailable(FlowrtError):
    """The database cannot be reached."""

    code = "STORAGE_UNAVAILABLE"
    http_status = 503
    public_message = (
        "the database is unavailable right now; retry shortly (details are in the server log; "
        "a start with an Idempotency-Key is safe to retry)"
    )
    """What HTTP clients are told: the full message names the database and goes to the server log."""


class ServerUnreachable(FlowrtError):
    """The server cannot be reached (connection refused or reset, or no answer in time)."""

    code = "SERVER_UNREACHABLE"
    http_status = 503


class HttpError(FlowrtError):
    """The server answered with an error that no other class describes (401, 413, a 5xx, ...).

    ``code`` is the answer's ``code`` (or ``HTTP_<status>`` when it has none) and
    ``http_status`` its status, both set on the instance.
    """

    code = "HTTP_ERROR"
    http_status = 500

    def __init__(self, message: str | None = None, *, code: str | None = None, http_status: int | None = None,
                 **details: object) -> None:
        super().__init__(message, **details)
        if code is not None:
            self.code = code
        if http_status is not None:
            self.http_status = http_status


class Unsupported(HttpError):
    """The server does not offer this call (the reference runtime has no listing, cancel or long-poll)."""

    code = "NOT_SUPPORTED"
    http_status = 501


__all__ = [
    "DefinitionError",
    "FlowLoadError",
    "FlowNotFound",
    "FlowNotRegistered",
    "FlowrtError",
    "HttpError",
    "IdempotencyConflict",
    "InvalidInput",
    "PayloadTooLarge",
    "RunBusy",
    "RunFinished",
    "RunNotFound",
    "RunNotWaiting",
    "ServerUnreachable",
    "StorageUnavailable",
    "Unsupported",
]
