"""Parameter coercion without Pydantic, so a command starts in a tenth of a second less.

Typer (0.29, pinned) converts every option's value through a Pydantic ``TypeAdapter``
built on first use; importing Pydantic and building the adapters is about 100 ms of
every ``flowrt`` call, more than the HTTP request of a remote command. The CLI's
options are all plain (str, int, float, bool, lists of them, optional), so
:func:`install` gives each such parameter a small converter with the same checks
(type, ``min``/``max``) before Typer would build its adapter. Any other annotation
keeps Typer's own coercion.
"""

from __future__ import annotations

import types
from dataclasses import dataclass
from typing import Any, Union, get_args, get_origin

from typer._click import Context
from typer._click.exceptions import BadParameter
from typer._coercion import RuntimeParam

TRUE = {"1", "true", "yes", "y", "on", "t"}
FALSE = {"0", "false", "no", "n", "off", "f", ""}
SIMPLE = (str, int, float, bool)


def _plain(annotation: Any) -> tuple[type, bool] | None:
    """``(leaf type, is_list)`` for the annotations handled here; None for anything else."""
    origin = get_origin(annotation)
    if origin in (Union, types.UnionType):
        rest = [a for a in get_args(annotation) if a is not type(None)]
        return _plain(rest[0]) if len(rest) == 1 else None
    if origin is list:
        (leaf,) = get_args(annotation) or (None,)
        return (leaf, True) if leaf in SIMPLE else None
    return (annotation, False) if annotation in SIMPLE else None


@dataclass(frozen=True)
class PlainRuntimeParam(RuntimeParam):
    """str / int / float / bool (and lists of them), with Typer's ``min`` / ``max``."""

    leaf: type = str
    is_list: bool = False

    def _coerce_value(self, value: Any, param: Any, ctx: Context) -> Any:
        if self.is_list:
            items = value if isinstance(value, (list, tuple)) else [value]
            return [self._one(item, param, ctx) for item in items]
        return self._one(value, param, ctx)

    def _one(self, value: Any, param: Any, ctx: Context) -> Any:
        leaf = self.leaf
        if leaf is bool:
            if isinstance(value, bool):
                return value
            text = str(value).strip().lower()
            if text in TRUE or text in FALSE:
                return text in TRUE
            raise BadParameter(f"{value!r} is not a boolean (use 1/0, true/false or yes/no)", ctx=ctx, param=param)
        if leaf is str:
            return value if isinstance(value, str) else str(value)
        try:
            number = leaf(value)
        except (TypeError, ValueError):
            kind = "an integer" if leaf is int else "a number"
            raise BadParameter(f"{value!r} is not {kind}", ctx=ctx, param=param) from None
        low, high = self.parameter_info.min, self.parameter_info.max
        if low is not None and number < low:
            raise BadParameter(f"{value} is below the minimum {low}", ctx=ctx, param=param)
        if high is not None and number > high:
            raise BadParameter(f"{value} is above the maximum {high}", ctx=ctx, param=param)
        return number


def plain_runtime_param(param: Any) -> RuntimeParam | None:
    """The converter above for ``param``, or None where Typer's own is needed."""
    descriptor = getattr(param, "type_descriptor", None)
    if descriptor is None:
        return None
    info = descriptor.parameter_info
    if getattr(info, "clamp", False) or getattr(info, "parser", None) or getattr(info, "click_type", None):
        return None
    plain = _plain(descriptor.annotation)
    if plain is None:
        return None
    return PlainRuntimeParam(parameter_info=info, annotation=descriptor.annotation, leaf=plain[0], is_list=plain[1])


def install() -> None:
    """Make every Typer parameter in this process try the plain converter first (idempotent)."""
    from typer.core import _TyperParameter

    if getattr(_TyperParameter.get_runtime_param, "flowrt_plain", False):
        return
    typers_own = _TyperParameter.get_runtime_param

    def get_runtime_param(self: Any) -> RuntimeParam:
        if self._runtime_param is None:
            self._runtime_param = plain_runtime_param(self)
        return self._runtime_param or typers_own(self)

    get_runtime_param.flowrt_plain = True  # type: ignore[attr-defined]
    _TyperParameter.get_runtime_param = get_runtime_param  # type: ignore[method-assign]
