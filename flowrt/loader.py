"""Find flows by import path, for the CLI and the server: ``pkg.module:NAME`` or ``pkg.module``."""

from __future__ import annotations

import importlib
import os
import sys
import sysconfig
import traceback
from typing import Any, Iterable

from .definitions import Flow, as_flow
from .errors import DefinitionError, FlowLoadError
from .execution import format_traceback


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
    except ModuleNotFoundError as exc:
        if exc.name is not None and (module_name == exc.name or module_name.startswith(exc.name + ".")):
            raise DefinitionError(
                f"cannot import flows module {module_name!r}: no module named {exc.name!r} "
                f"(looked in the working directory {os.getcwd()} and on sys.path)"
            ) from exc
        raise _load_error(module_name, exc) from exc
    except Exception as exc:  # noqa: BLE001 - the user's module failed while importing
        raise _load_error(module_name, exc) from exc
    if attr:
        if not hasattr(module, attr):
            raise DefinitionError(f"module {module_name!r} has no attribute {attr!r}")
        return _collect(getattr(module, attr), path)
    found = [as_flow(v) for v in vars(module).values() if _is_flow(v)]
    if not found:
        raise DefinitionError(f"module {module_name!r} defines no flows at its top level")
    unique: dict[int, Flow] = {id(f): f for f in found}
    return list(unique.values())


def _load_error(module_name: str, exc: BaseException) -> FlowLoadError:
    """The user's file and line up front, then the traceback (flowrt's and importlib's frames left out)."""
    where = ""
    if isinstance(exc, SyntaxError) and exc.filename:
        where = f" ({exc.filename}, line {exc.lineno})"
    else:
        stdlib = sysconfig.get_paths()["stdlib"]
        frames = [  # the deepest frame of the user's own code
            f for f in traceback.extract_tb(exc.__traceback__)
            if not f.filename.startswith(("<", stdlib, os.path.dirname(__file__)))
        ]  # fmt: skip
        if frames:
            where = f" ({frames[-1].filename}, line {frames[-1].lineno})"
    detail = format_traceback(exc, skip=(os.path.dirname(importlib.__file__), "<frozen importlib"))
    return FlowLoadError(
        f"flows module {module_name!r} failed to import{where}: {type(exc).__name__}: {exc}\n{detail}",
        module=module_name,
    )


def load_all(paths: Iterable[str]) -> list[Flow]:
    """Flows from many paths; a comma-separated string also counts as many paths."""
    flows: list[Flow] = []
    for path in paths:
        for part in path.split(","):
            if part.strip():
                flows.extend(load_flows(part))
    return flows
