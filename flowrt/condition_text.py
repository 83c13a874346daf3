"""What an edge's condition says, for people: a lambda's expression, or a function's name.

Why: conditions are Python callables, so a graph whose conditional edges read only "if"
sends its reader to the code to learn which way a run goes. The flow's definition JSON
carries this text per edge (``condition``), and the dashboard and ``flowrt graph`` show it.

It is read from the flow's source when the flow is defined, best effort: a lambda whose
source cannot be found (typed into a REPL, built by ``eval``, installed without ``.py``
files) has no text, and the edge shows as conditional, as before. Nothing here runs the
condition or depends on what it returns.
"""

from __future__ import annotations

import ast
import functools
import linecache
from types import CodeType
from typing import Any, Callable

MAX_CHARS = 120
"""Longer texts are cut, with an ellipsis: a label, not a listing."""


def condition_text(when: Callable[..., Any] | None) -> str | None:
    """``ctx.state.get("approved")`` for ``lambda ctx: ctx.state.get("approved")``,
    ``is_approved`` for a function of that name, None when there is nothing to say."""
    if when is None:
        return None
    code = getattr(when, "__code__", None)
    if not isinstance(code, CodeType):  # a callable object, a functools.partial, a builtin
        name = getattr(when, "__qualname__", None) or type(when).__qualname__
        return _shorten(str(name))
    if getattr(when, "__name__", None) != "<lambda>":
        return _shorten(str(getattr(when, "__qualname__", when.__name__)))
    text = _lambda_body(code)
    return None if text is None else _shorten(text)


def _shorten(text: str) -> str:
    text = " ".join(text.split())  # a lambda over several lines reads as one
    return text if len(text) <= MAX_CHARS else text[: MAX_CHARS - 1] + "…"


@functools.lru_cache(maxsize=32)
def _parsed(filename: str) -> tuple[str, ast.Module] | None:
    """A source file's text and tree, once per file (flows define many edges in one)."""
    source = "".join(linecache.getlines(filename))
    if not source:
        return None
    try:
        return source, ast.parse(source)
    except (SyntaxError, ValueError):
        return None


def _lambda_body(code: CodeType) -> str | None:
    """The source of the lambda whose code this is, found by its position in its file."""
    parsed = _parsed(code.co_filename)
    if parsed is None:
        return None
    source, tree = parsed
    on_line = [node for node in ast.walk(tree) if isinstance(node, ast.Lambda) and node.lineno == code.co_firstlineno]
    if len(on_line) > 1:  # several lambdas start on that line: where its body's code is says which
        where = next(
            ((line, col) for line, _end, col, end_col in code.co_positions()
             if line is not None and col is not None and end_col is not None and end_col > col),
            None,
        )  # fmt: skip
        on_line = [node for node in on_line if where is not None and _contains(node.body, where)]
    if len(on_line) != 1:
        return None
    return ast.get_source_segment(source, on_line[0].body)


def _contains(node: ast.expr, where: tuple[int, int]) -> bool:
    end_line, end_col = node.end_lineno or node.lineno, node.end_col_offset or 0
    return (node.lineno, node.col_offset) <= where < (end_line, end_col)
