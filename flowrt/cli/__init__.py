"""The ``flowrt`` command line: local (on the database) or remote (against a server).

Commands live in :mod:`.commands`, talk to a :mod:`.backends` backend and print
through :mod:`.output`. :class:`FlowrtGroup` is the one place where failures become
a line on stderr and an exit code (:mod:`.errors`).
"""

from __future__ import annotations

import sys
import traceback
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.text import Text
from typer._click import Context as ClickContext  # the Context type Typer's own classes use
from typer.core import TyperGroup
from typer.exceptions import TyperException

from .. import __version__
from . import commands
from ..errors import FlowLoadError
from .errors import describe, exit_code_for


class FlowrtGroup(TyperGroup):
    """Runs a command and maps whatever it raises to one line on stderr and an exit code."""

    def invoke(self, ctx: ClickContext) -> Any:
        try:
            return super().invoke(ctx)
        except (typer.Exit, typer.Abort, BrokenPipeError):
            raise  # BrokenPipeError: `flowrt ... | head`; Typer silences it
        except KeyboardInterrupt:
            raise typer.Exit(130) from None
        except TyperException as exc:  # click's usage errors: bad option, missing argument
            where = getattr(getattr(exc, "ctx", None), "command_path", None) or ctx.command_path
            message = exc.format_message() if hasattr(exc, "format_message") else str(exc)
            _error_line(f"{message} (see '{where} --help')")
            raise typer.Exit(getattr(exc, "exit_code", 2)) from None
        except FlowLoadError as exc:  # the user's own traceback is the point: keep its lines
            first, _, rest = exc.message.partition("\n")
            _error_line(f"{first} ({exc.code})")
            print(rest.rstrip(), file=sys.stderr)
            raise typer.Exit(exit_code_for(exc)) from None
        except Exception as exc:  # noqa: BLE001 - this is the top-level handler
            if ctx.meta.get("flowrt.debug"):
                traceback.print_exc(file=sys.stderr)
            _error_line(describe(exc))
            raise typer.Exit(exit_code_for(exc)) from None


def _error_line(message: str) -> None:
    err = Console(stderr=True, highlight=False, soft_wrap=True)
    # Driver messages (psycopg's, for one) span lines; a script reading stderr gets one.
    err.print(Text.assemble(("error:", "bold red"), " ", " ".join(message.split())))


app = typer.Typer(
    name="flowrt",
    cls=FlowrtGroup,
    help="Durable workflows: start, drive, inspect and serve flowrt runs.\n\n"
    "Every command works locally, on the database of --db / DATABASE_URL (default sqlite:///flowrt.db), "
    "or remotely against `flowrt serve` with --url / FLOWRT_URL. Add --json for the HTTP API's JSON.",
    epilog="Exit codes: 0 ok, 1 run FAILED/CANCELLED (--wait), 2 usage, 3 not found, 4 conflict, "
    "5 server or database unreachable. Docs: docs/cli.md",
    no_args_is_help=True,
    add_completion=False,
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
    from .bench import bench
    from .serve import serve

    commands.register(app)
    app.command("serve", rich_help_panel="Operate")(serve)
    app.command("bench", rich_help_panel="Operate")(bench)


_register()


def main() -> None:
    app()
