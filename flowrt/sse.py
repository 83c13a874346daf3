"""The ``text/event-stream`` wire format (server-sent events), both ways.

The server writes messages with :func:`message` and :func:`comment`; the CLI (and
any Python client) reads a stream with :func:`parse`. Kept apart from the server so a
client need not import Litestar, and so both ends agree on one reading of the format
(https://html.spec.whatwg.org/multipage/server-sent-events.html, "Interpreting an event stream").
"""

from __future__ import annotations

import urllib.parse
from dataclasses import dataclass
from typing import Any, Iterable, Iterator

import msgspec

_encode = msgspec.json.Encoder().encode


@dataclass(frozen=True, slots=True)
class Message:
    """One dispatched event: ``event`` defaults to ``"message"`` as in browsers; ``id`` is the last seen id."""

    event: str
    data: str
    id: str | None = None

    def json(self) -> object:
        return msgspec.json.decode(self.data)


def message(event: str, data: object, id: int | str | None = None) -> bytes:
    """One SSE message whose data is ``data`` as compact JSON (always a single line)."""
    head = b"" if id is None else b"id: %s\n" % str(id).encode()
    return head + b"event: " + event.encode() + b"\ndata: " + _encode(data) + b"\n\n"


def comment(text: str) -> bytes:
    """A comment line: ignored by readers, keeps proxies and idle connections alive."""
    return b": " + text.encode() + b"\n\n"


def parse(lines: Iterable[str]) -> Iterator[Message]:
    """The messages in a stream given as lines without their line breaks (``httpx``'s ``iter_lines``).

    Follows the spec: ``data`` lines join with newlines, comments and unknown fields are
    ignored, a message without data is not dispatched, and ``id`` persists across messages.
    """
    event, last_id = "", None
    data: list[str] = []
    for line in lines:
        if line == "":
            if data:
                yield Message(event or "message", "\n".join(data), last_id)
            event, data = "", []
            continue
        if line.startswith(":"):
            continue
        name, sep, value = line.partition(":")
        if sep and value.startswith(" "):
            value = value[1:]
        if name == "data":
            data.append(value)
        elif name == "event":
            event = value
        elif name == "id" and "\x00" not in value:
            last_id = value


class StreamUnavailable(Exception):
    """The server offers no event stream here (404/405, another status), or it closed before ``end``."""


def follow_run(client: Any, run_id: str, after: int = 0) -> Iterator[dict[str, Any]]:
    """The events of a run as ``GET /v1/runs/{runId}/events`` sends them, until the run ends.

    ``client`` is an ``httpx.Client`` with the server's base URL and auth headers. Raises
    :class:`StreamUnavailable` when the server does not stream (the caller falls back to
    polling ``/timeline``, which also reports a missing run or a wrong token properly)
    or the stream closed before ``event: end``; ``httpx.TransportError`` when it dropped.
    """
    import httpx

    path = f"/v1/runs/{urllib.parse.quote(run_id, safe='')}/events"
    # Read timeout: the server sends a keepalive every 15 s, so a minute of silence is a dead link.
    timeout = httpx.Timeout(30.0, read=60.0)
    with client.stream("GET", path, params={"after": after}, headers={"Accept": "text/event-stream"}, timeout=timeout) as response:
        if response.status_code != 200 or not response.headers.get("content-type", "").startswith("text/event-stream"):
            raise StreamUnavailable(f"{response.status_code} from {path}")
        for item in parse(response.iter_lines()):
            if item.event == "end":
                return
            event = item.json()
            if isinstance(event, dict):
                yield event
    raise StreamUnavailable("the event stream closed before the run ended")
