"""flowrt: durable, inspectable, resumable workflows for Python.

Define a :class:`Flow` of nodes and edges, then drive it with an :class:`Engine`
in-process, over HTTP (``flowrt serve``) or from the ``flowrt`` CLI.
"""

from typing import TYPE_CHECKING, Any

from .definitions import Fail, Flow, Ok, Retry, Wait, edge, entry, fail, flow, node, ok, wait
from .errors import (
    DefinitionError,
    FlowLoadError,
    FlowNotFound,
    FlowNotRegistered,
    FlowrtError,
    IdempotencyConflict,
    InvalidInput,
    PayloadTooLarge,
    RunBusy,
    RunFinished,
    RunNotFound,
    RunNotWaiting,
    StorageUnavailable,
)
from .loader import load_flows
from .runs import Event, Run, RunStatus

if TYPE_CHECKING:
    from .client import AsyncClient, Client
    from .engine import Context, Engine

# Imported on first use, so `import flowrt.client` (an app that only talks to a server)
# does not load the engine, Peewee or the database drivers.
_LAZY = {"Engine": "engine", "Context": "engine", "Client": "client", "AsyncClient": "client"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'flowrt' has no attribute {name!r}")

__version__ = "0.1.0"

__all__ = [
    "AsyncClient",
    "Client",
    "Context",
    "DefinitionError",
    "Engine",
    "Event",
    "Fail",
    "Flow",
    "FlowLoadError",
    "FlowNotFound",
    "FlowNotRegistered",
    "FlowrtError",
    "IdempotencyConflict",
    "InvalidInput",
    "Ok",
    "PayloadTooLarge",
    "Retry",
    "Run",
    "RunBusy",
    "RunFinished",
    "RunNotFound",
    "RunNotWaiting",
    "RunStatus",
    "StorageUnavailable",
    "Wait",
    "__version__",
    "edge",
    "entry",
    "fail",
    "flow",
    "load_flows",
    "node",
    "ok",
    "wait",
]
