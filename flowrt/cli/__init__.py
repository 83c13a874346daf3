"""The ``flowrt`` command line: local (on the database) or remote (against a server)."""

from __future__ import annotations

import typer

app = typer.Typer(
    name="flowrt",
    help="Durable workflows: start, drive, inspect and serve flowrt runs.",
    no_args_is_help=True,
    add_completion=False,
)


def _register() -> None:
    from .serve import serve

    app.command("serve")(serve)


_register()


def main() -> None:
    app()
