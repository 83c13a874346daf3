"""Find flows by import path, for the CLI and the server: ``pkg.module:NAME`` or ``pkg.module``."""

from __future__ import annotations

import importlib
import os
import sys
from typing import Any, Iterable

from .definitions import Flow, as_flow
from .errors import DefinitionError


def _is_flow(obj: Any) -> bool:
    return isinstance(obj, Flow) or isinstance(getattr(obj, "__flowrt_flow__", None), Flow)


def _collect(obj: Any, where: str) -> list[Flow]:
    if _is_flow(obj):
        return [as_flow(obj)]
    if isinstance(obj, (list, tuple, set, frozenset)):
        found: list[Flow] = []
        for item in obj:
            found.extend(_collect(item, where))
        return found
    raise DefinitionError(f"{where} is not a Flow, a @flow class, or a list of them")


def load_flows(path: str) -> list[Flow]:
    """Import ``pkg.module:NAME`` (a Flow, @flow class or list) or every flow of ``pkg.module``."""
    module_name, _, attr = path.strip().partition(":")
    if not module_name:
        raise DefinitionError(f"bad flows path {path!r}: expected 'package.module:NAME'")
    # Running `flowrt` from a project folder should find that folder's modules,
    # as `python -m` would.
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise DefinitionError(f"cannot import flows module {module_name!r}: {exc}") from exc
    if attr:
        if not hasattr(module, attr):
            raise DefinitionError(f"module {module_name!r} has no attribute {attr!r}")
        return _collect(getattr(module, attr), path)
    found = [as_flow(v) for v in vars(module).values() if _is_flow(v)]
    if not found:
        raise DefinitionError(f"module {module_name!r} defines no flows at its top level")
    unique: dict[int, Flow] = {id(f): f for f in found}
    return list(unique.values())


def load_all(paths: Iterable[str]) -> list[Flow]:
    """Flows from many paths; a comma-separated string also counts as many paths."""
    flows: list[Flow] = []
    for path in paths:
        for part in path.split(","):
            if part.strip():
                flows.extend(load_flows(part))
    return flows
