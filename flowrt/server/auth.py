"""Bearer tokens with scopes, and who did what.

A server may know several tokens, each with a name and a scope (``FLOWRT_API_TOKENS``,
``--tokens-file``); the one ``FLOWRT_API_TOKEN`` stays and is an unnamed ``admin``.
Scopes nest: ``read`` may GET (runs, timelines, flows, event streams), ``operate`` may
also move runs (start, tick, resume, cancel, retry, rewind), ``admin`` may also prune.

A request's token is compared with every known token in constant time (``hmac``), all of
them every time, so neither timing nor the order of the list says which was close.
Tokens are never logged: a :class:`Token`'s repr shows its name and scope only. The name
of the token that made a request is what events record as ``by`` (``"api"`` without one).
"""

from __future__ import annotations

import hmac
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Literal

from litestar.connection import ASGIConnection
from litestar.exceptions import NotAuthorizedException, PermissionDeniedException
from litestar.handlers import BaseRouteHandler

from ..errors import InvalidInput

Scope = Literal["read", "operate", "admin"]
SCOPES: tuple[Scope, ...] = ("read", "operate", "admin")
_RANK = {scope: rank for rank, scope in enumerate(SCOPES)}
_NAME = re.compile(r"[A-Za-z0-9_.@-]{1,64}\Z")
ANONYMOUS = "api"
"""What ``by`` says when the request's token has no name (FLOWRT_API_TOKEN) or auth is off."""


@dataclass(frozen=True)
class Token:
    name: str | None
    scope: Scope
    secret: bytes = field(repr=False)

    def allows(self, needed: Scope) -> bool:
        return _RANK[self.scope] >= _RANK[needed]


def parse_tokens(text: str, *, source: str) -> list[Token]:
    """``name:scope:secret`` entries, separated by commas or newlines; ``#`` starts a comment line.

    The secret is everything after the second colon (it may contain colons and commas
    only in a file, one entry a line). Errors name the entry by position, never its secret.
    """
    entries: list[str] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        entries.extend(part.strip() for part in (line.split(",") if source.startswith("FLOWRT_") else [line]))
    tokens: list[Token] = []
    for index, entry in enumerate(e for e in entries if e):
        name, sep1, rest = entry.partition(":")
        scope, sep2, secret = rest.partition(":")
        where = f"{source}, entry {index + 1}"
        if not (sep1 and sep2):
            raise InvalidInput(f"{where}: expected name:scope:token")
        if not _NAME.match(name):
            raise InvalidInput(f"{where}: token name {name[:64]!r} must be 1-64 letters, digits or _.@-")
        if scope not in _RANK:
            raise InvalidInput(f"{where} ({name}): scope {scope[:20]!r} is not one of {', '.join(SCOPES)}")
        if len(secret) < 8:
            raise InvalidInput(f"{where} ({name}): the token must be at least 8 characters")
        tokens.append(Token(name, scope, secret.encode()))
    return tokens


def load_tokens(
    *, api_token: str | None = None, tokens: str | None = None, tokens_file: str | None = None
) -> list[Token]:
    """Every token a server accepts: the unnamed admin ``api_token``, then named ones."""
    found: list[Token] = []
    if api_token:
        found.append(Token(None, "admin", api_token.encode()))
    if tokens:
        found.extend(parse_tokens(tokens, source="FLOWRT_API_TOKENS"))
    if tokens_file:
        try:
            text = Path(tokens_file).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise InvalidInput(f"cannot read the tokens file {tokens_file}: {exc}") from exc
        found.extend(parse_tokens(text, source=f"tokens file {tokens_file}"))
    names = [t.name for t in found if t.name]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise InvalidInput(f"token names must be unique; repeated: {', '.join(duplicates)}")
    secrets = [t.secret for t in found]
    if len(set(secrets)) != len(secrets):
        raise InvalidInput("two tokens have the same secret; give each its own")
    return found


class TokenTable:
    """The tokens a server accepts, and the guard that checks them on every API route."""

    def __init__(self, tokens: Iterable[Token]) -> None:
        self.tokens = list(tokens)

    def __bool__(self) -> bool:
        return bool(self.tokens)

    def identify(self, authorization: str) -> Token | None:
        scheme, _sep, given = authorization.partition(" ")
        presented = given.strip().encode("utf-8", "surrogateescape")
        match: Token | None = None
        for token in self.tokens:  # all of them, whatever matched: timing names no token
            if hmac.compare_digest(presented, token.secret):
                match = token
        return match if scheme.lower() == "bearer" else None

    def authorize(self, authorization: str, needed: Scope) -> Token:
        """The token of an ``Authorization`` header if it may do what needs ``needed``; else 401 or 403.

        The one rule for every /v1 route, whether Litestar's guard or the fast path
        (:mod:`.fastpath`) asks.
        """
        token = self.identify(authorization)
        if token is None:
            raise NotAuthorizedException("missing or wrong bearer token")
        if not token.allows(needed):
            raise PermissionDeniedException(
                f"this needs a token with the {needed!r} scope; token {token.name or 'FLOWRT_API_TOKEN'!r} "
                f"has {token.scope!r}"
            )
        return token

    def guard(self) -> Any:
        async def check(connection: ASGIConnection[Any, Any, Any, Any], handler: BaseRouteHandler) -> None:
            needed = required_scope(str(connection.scope.get("method", "GET")), handler.opt.get("scope"))
            token = self.authorize(connection.headers.get("authorization", ""), needed)
            connection.scope.setdefault("state", {})["flowrt.by"] = token.name or ANONYMOUS

        return check


def required_scope(method: str, declared: object = None) -> Scope:
    """A route's declared ``opt={"scope": ...}``, else ``read`` for GET/HEAD and ``operate`` otherwise."""
    if declared in _RANK:
        return declared
    return "read" if method in ("GET", "HEAD") else "operate"


def identity(connection: ASGIConnection[Any, Any, Any, Any]) -> str:
    """Who made this request, for ``by``: the token's name, or ``"api"``."""
    state = connection.scope.get("state") or {}
    by = state.get("flowrt.by")
    return by if isinstance(by, str) else ANONYMOUS
