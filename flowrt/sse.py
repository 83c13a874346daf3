"""The ``text/event-stream`` wire format (server-sent events), both ways.

The server writes messages with :func:`message` and :func:`comment`; the Python client
(:mod:`flowrt.client`, and so the CLI's ``--follow``) reads a stream with :class:`Parser`. Kept apart from the server so a
client need not import Litestar, and so both ends agree on one reading of the format
(https://html.spec.whatwg.org/multipage/server-sent-events.html, "Interpreting an event stream").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Iterator

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


class Parser:
    """Reads a stream one line at a time (lines without their line breaks), so a reader
    that gets lines asynchronously (``httpx``'s ``aiter_lines``) parses it exactly as :func:`parse`.

    Follows the spec: ``data`` lines join with newlines, comments and unknown fields are
    ignored, a message without data is not dispatched, and ``id`` persists across messages.
    """

    def __init__(self) -> None:
        self.event = ""
        self.data: list[str] = []
        self.last_id: str | None = None

    def feed(self, line: str) -> Message | None:
        """The message this line completes (a blank line dispatches), or None."""
        if line == "":
            done = Message(self.event or "message", "\n".join(self.data), self.last_id) if self.data else None
            self.event, self.data = "", []
            return done
        if line.startswith(":"):
            return None
        name, sep, value = line.partition(":")
        if sep and value.startswith(" "):
            value = value[1:]
        if name == "data":
            self.data.append(value)
        elif name == "event":
            self.event = value
        elif name == "id" and "\x00" not in value:
            self.last_id = value
        return None


def parse(lines: Iterable[str]) -> Iterator[Message]:
    """The messages in a stream given as lines without their line breaks (``httpx``'s ``iter_lines``)."""
    parser = Parser()
    for line in lines:
        message = parser.feed(line)
        if message is not None:
            yield message
