"""The JSON values a run stores (input, state, outputs, payloads): encoding, size, merging.

User values must be plain JSON (no NaN, datetimes or objects) and are checked with the
standard library's strict encoder; values the engine built itself from already-checked
parts go through msgspec, which is several times faster.
"""

from __future__ import annotations

import json
from json.encoder import encode_basestring
from typing import Any, Callable

import msgspec

try:
    from json.encoder import c_make_encoder  # type: ignore[attr-defined]
except ImportError:  # pragma: no cover - CPython always has it
    c_make_encoder = None

DEFAULT_MAX_VALUE_BYTES = 1 << 20
"""Default bound of one stored value: a step's output or patch, a resume payload, a run's input."""

_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.decode


def dumps(value: Any) -> str:
    """Engine-built JSON (already validated parts): the fast encoder."""
    return _encode(value).decode()


def _strict_encoder() -> Callable[[Any], str]:
    """The standard library's strict encoder (no NaN, no datetimes, no objects), built once.

    ``JSONEncoder.encode`` builds a new C encoder on every call: a dict of markers for cycles,
    a closure, the object itself -- about half the cost of encoding a small value, 3 a request
    on the server. Without cycle markers the C encoder keeps no state between calls (so one
    serves every thread); a value that refers to itself then ends in RecursionError, as one
    nested too deep always did, and :func:`dumps_user` says which it may be."""
    strict = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    if c_make_encoder is None:  # a Python without the _json accelerator
        return strict.encode
    # The arguments JSONEncoder.iterencode passes, taken from ``strict``, but no cycle markers.
    iterencode = c_make_encoder(
        None, strict.default, encode_basestring, strict.indent, strict.key_separator, strict.item_separator,
        strict.sort_keys, strict.skipkeys, strict.allow_nan,
    )  # fmt: skip
    return lambda value: "".join(iterencode(value, 0))


_encode_user = _strict_encoder()


def dumps_user(value: Any) -> str:
    """User-supplied values must be plain JSON: no NaN, no datetimes, no objects. Raises
    TypeError or ValueError (also for a value nested too deep, or one that refers to itself)."""
    if value is None:
        return "null"
    try:
        return _encode_user(value)
    except RecursionError:
        raise ValueError("the value nests too deep or refers to itself (a circular reference)") from None


def loads(text: str | None) -> Any:
    return None if text is None else _decode(text)


def too_large(text: str | None, limit: int) -> bool:
    """Whether an encoded value is over ``limit`` bytes (UTF-8). Cheap for the common small value."""
    if text is None or len(text) * 4 <= limit:
        return False
    return len(text) > limit or len(text.encode()) > limit


def deep_merge(base: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    """Merge ``patch`` into ``base`` in place: dicts merge recursively, anything else replaces."""
    for key, value in patch.items():
        current = base.get(key)
        if isinstance(value, dict) and isinstance(current, dict):
            deep_merge(current, value)
        else:
            base[key] = value
    return base
