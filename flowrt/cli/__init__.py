"""The ``flowrt`` command line: local (on the database) or remote (against a server).

Commands live in :mod:`.commands` (runs and operations), :mod:`.inspect` (status,
runs, timeline, flows, graph), talk to a :mod:`.backends` backend and print through
:mod:`.output`. :class:`FlowrtGroup` and :class:`FlowrtCommand` are the one place where
failures become a line on stderr and an exit code (:mod:`.errors`), whether they come
from parsing the command line (of the top level or of a subcommand) or from the work.

Nothing heavy is imported here: the engine, Peewee, Litestar and the benchmark load
only inside the commands that use them, so ``flowrt status --url ...`` starts in the
time httpx and rich take.
"""

from __future__ import annotations

import sys
import traceback
from typing import Annotated, Any

import typer
from typer._click import Context as ClickContext  # the Context type Typer's own classes use
from typer._click.exceptions import ClickException
from typer.core import TyperArgument, TyperCommand, TyperGroup, TyperOption
from typer.exceptions import TyperException

from .. import __version__
from . import coerce
from ..errors import FlowLoadError
from .errors import describe, exit_code_for, hint_for


def _error_line(message: str, hint: str | None = None) -> None:
    # Driver messages (psycopg's, for one) span lines; a script reading stderr gets one.
    line = " ".join(message.split())
    color = sys.stderr.isatty()
    prefix = "\x1b[1;31merror:\x1b[0m" if color else "error:"
    sys.stderr.write(f"{prefix} {line}\n")
    if hint:
        sys.stderr.write(("\x1b[2mhint: " if color else "hint: ") + " ".join(hint.split()) + ("\x1b[0m\n" if color else "\n"))
    sys.stderr.flush()


def _usage_error(exc: ClickException, where: str) -> typer.Exit:
    message = exc.format_message() if hasattr(exc, "format_message") else str(exc)
    _error_line(message, f"see '{where} --help'")
    return typer.Exit(getattr(exc, "exit_code", 2))


def _plain_help(command: Any, ctx: ClickContext) -> None:
    """No ``<bool>`` placeholders: a flag's name says everything (an empty metavar hides it)."""
    for param in command.get_params(ctx):
        if isinstance(param, TyperOption) and param.is_flag and param.metavar is None:
            param.metavar = ""
        elif isinstance(param, TyperArgument):
            param.display_type_rich = lambda ctx: None  # type: ignore[method-assign]  # the name is the metavar


def _plain_usage(pieces: list[str]) -> list[str]:
    """``Usage: flowrt start [OPTIONS] FLOW``, not ``{FLOW}``."""
    return [p[1:-1] if p.startswith("{") and p.endswith("}") else p for p in pieces]


class FlowrtCommand(TyperCommand):
    """A subcommand whose own usage errors read like every other error: ``error: ...`` and a hint."""

    def make_context(self, info_name: str | None, args: list[str], parent: ClickContext | None = None, **extra: Any) -> Any:
        try:
            return super().make_context(info_name, args, parent, **extra)
        except ClickException as exc:
            where = " ".join(p for p in ((parent.command_path if parent else None), info_name) if p)
            raise _usage_error(exc, where or "flowrt") from None

    def format_help(self, ctx: ClickContext, formatter: Any) -> None:
        _plain_help(self, ctx)
        super().format_help(ctx, formatter)

    def collect_usage_pieces(self, ctx: ClickContext) -> list[str]:
        return _plain_usage(super().collect_usage_pieces(ctx))


class FlowrtGroup(TyperGroup):
    """Runs a command and maps whatever it raises to one line on stderr and an exit code."""

    def make_context(self, info_name: str | None, args: list[str], parent: ClickContext | None = None, **extra: Any) -> Any:
        try:
            return super().make_context(info_name, args, parent, **extra)
        except ClickException as exc:  # top-level usage: `flowrt --bogus`
            raise _usage_error(exc, info_name or "flowrt") from None

    def format_help(self, ctx: ClickContext, formatter: Any) -> None:
        _plain_help(self, ctx)
        super().format_help(ctx, formatter)

    def invoke(self, ctx: ClickContext) -> Any:
        try:
            return super().invoke(ctx)
        except (typer.Exit, typer.Abort, BrokenPipeError):
            raise  # BrokenPipeError: `flowrt ... | head`; Typer silences it
        except KeyboardInterrupt:
            raise typer.Exit(130) from None
        except TyperException as exc:  # usage errors raised after parsing (No such command, ...)
            where = getattr(getattr(exc, "ctx", None), "command_path", None) or ctx.command_path
            raise _usage_error(exc, where) from None  # type: ignore[arg-type]
        except FlowLoadError as exc:  # the user's own traceback is the point: keep its lines
            first, _, rest = exc.message.partition("\n")
            _error_line(f"{first} ({exc.code})")
            sys.stderr.write(rest.rstrip() + "\n")
            raise typer.Exit(exit_code_for(exc)) from None
        except Exception as exc:  # noqa: BLE001 - this is the top-level handler
            if ctx.meta.get("flowrt.debug"):
                traceback.print_exc(file=sys.stderr)
            _error_line(describe(exc), hint_for(exc))
            raise typer.Exit(exit_code_for(exc)) from None


coerce.install()

app = typer.Typer(
    name="flowrt",
    cls=FlowrtGroup,
    help="Durable workflows: start, drive, inspect and serve flowrt runs.\n\n"
    "Every command works locally, on the database of --db / DATABASE_URL (default sqlite:///flowrt.db), "
    "or remotely against `flowrt serve` with --url / FLOWRT_URL. Add --json for the HTTP API's JSON.",
    epilog="Exit codes: 0 ok, 1 run FAILED/CANCELLED (--wait), 2 usage, 3 not found, 4 conflict, "
    "5 server or database unreachable. Docs: docs/cli.md",
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
    rich_markup_mode="markdown",
)


def _show_version(value: bool) -> None:
    if value:
        typer.echo(f"flowrt {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option("--version", is_eager=True, callback=_show_version, help="Show flowrt's version and exit."),
    ] = False,
) -> None:
    """Durable workflows: start, drive, inspect and serve flowrt runs."""


def _register() -> None:
    from . import commands, inspect
    from .bench import bench
    from .serve import serve

    commands.register_runs(app, FlowrtCommand)
    inspect.register(app, FlowrtCommand)
    commands.register_operate(app, FlowrtCommand)
    app.command("serve", rich_help_panel="Operate", cls=FlowrtCommand)(serve)
    app.command("bench", rich_help_panel="Operate", cls=FlowrtCommand)(bench)


_register()

__all__ = ["FlowrtCommand", "FlowrtGroup", "app", "main"]


def main() -> None:
    app(prog_name="flowrt")  # the same name in messages for `flowrt` and `python -m flowrt.cli`
