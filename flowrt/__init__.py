"""flowrt: durable, inspectable, resumable workflows for Python.

Define a :class:`Flow` of nodes and edges, then drive it with an :class:`Engine`
in-process, over HTTP (``flowrt serve``) or from the ``flowrt`` CLI.
"""

from .definitions import Fail, Flow, Ok, Retry, Wait, edge, entry, fail, flow, node, ok, wait
from .engine import Context, Engine
from .errors import (
    DefinitionError,
    FlowNotFound,
    FlowNotRegistered,
    FlowrtError,
    InvalidInput,
    RunBusy,
    RunFinished,
    RunNotFound,
    RunNotWaiting,
    StorageUnavailable,
)
from .loader import load_flows
from .runs import Event, Run, RunStatus

__version__ = "0.1.0"

__all__ = [
    "Context",
    "DefinitionError",
    "Engine",
    "Event",
    "Fail",
    "Flow",
    "FlowNotFound",
    "FlowNotRegistered",
    "FlowrtError",
    "InvalidInput",
    "Ok",
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
