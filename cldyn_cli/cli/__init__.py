"""The `cldyn` command line: one module per command, assembled here."""

from __future__ import annotations

import typer

from cldyn_cli import __version__
from cldyn_cli.ui import OneLineErrors

app = typer.Typer(
    name="cldyn",
    help="Task-aware infrared-visible image fusion (CLDyN). Fuse image pairs, train the base network, "
         "train task compensation, evaluate and export.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    cls=OneLineErrors,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"cldyn {__version__}")
        raise typer.Exit()


@app.callback()
def _root(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                       help="Print the version and exit.")) -> None:
    """Task-aware infrared-visible image fusion (CLDyN)."""


def _register() -> None:
    from cldyn_cli.cli import compensate, eval as eval_, export, fuse, plugins, synth, train_base

    for module in (compensate, eval_, export, fuse, plugins, synth, train_base):
        module.register(app)
    plugins.register_plugin_commands(app)  # last, so plugins add to the built-in commands


_register()


def main() -> None:
    """Console-script entry point."""
    app()
