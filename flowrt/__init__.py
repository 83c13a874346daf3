"""flowrt: durable, inspectable, resumable workflows for Python.

Define a :class:`Flow` of nodes and edges, then drive it with an :class:`Engine`
in-process, over HTTP (``flowrt serve``) or from the ``flowrt`` CLI.

The names below are loaded on first use (PEP 562): ``import flowrt`` stays cheap, so
the CLI's remote commands never pay for the engine, Peewee and the database drivers.
``from flowrt import Engine`` works as before.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # what mypy and editors see; at run time __getattr__ imports on demand
    from .definitions import Fail, Flow, Ok, Retry, Wait, edge, entry, fail, flow, node, ok, wait
    from .engine import Context, Engine
    from .client import AsyncClient, Client
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
        RunNotRepairable,
        RunNotWaiting,
        RewindUnavailable,
        StorageUnavailable,
    )
    from .loader import load_flows
    from .runs import Event, Run, RunStatus

__version__ = "0.1.0"

#: Public name -> the submodule that defines it.
_WHERE = {
    **dict.fromkeys(("Fail", "Flow", "Ok", "Retry", "Wait", "edge", "entry", "fail", "flow", "node", "ok", "wait"), "definitions"),
    **dict.fromkeys(("Context", "Engine"), "engine"),
    **dict.fromkeys(("AsyncClient", "Client"), "client"),
    **dict.fromkeys(
        (
            "DefinitionError", "FlowLoadError", "FlowNotFound", "FlowNotRegistered", "FlowrtError",
            "IdempotencyConflict", "InvalidInput", "PayloadTooLarge", "RunBusy", "RunFinished", "RunNotFound",
            "RunNotRepairable", "RunNotWaiting", "RewindUnavailable", "StorageUnavailable",
        ),
        "errors",
    ),
    "load_flows": "loader",
    **dict.fromkeys(("Event", "Run", "RunStatus"), "runs"),
}

__all__ = sorted([*_WHERE, "__version__"])


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'flowrt' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value  # the next lookup is a plain attribute
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_WHERE])
