"""The JSON values a run stores (input, state, outputs, payloads): encoding, size, merging.

User values must be plain JSON (no NaN, datetimes or objects) and are checked with the
standard library's strict encoder; values the engine built itself from already-checked
parts go through msgspec, which is several times faster.
"""

from __future__ import annotations

import json
from typing import Any

import msgspec

DEFAULT_MAX_VALUE_BYTES = 1 << 20
"""Default bound of one stored value: a step's output or patch, a resume payload, a run's input."""

_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.decode


def dumps(value: Any) -> str:
    """Engine-built JSON (already validated parts): the fast encoder."""
    return _encode(value).decode()


# One encoder for every user value: json.dumps with options builds a new encoder per call.
_encode_user = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode


def dumps_user(value: Any) -> str:
    """User-supplied values must be plain JSON: no NaN, no datetimes, no objects."""
    if value is None:
        return "null"
    return _encode_user(value)


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
