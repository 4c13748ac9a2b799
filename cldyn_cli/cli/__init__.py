"""The `cldyn` command line: one module per command, assembled by :func:`create_app`.

Importing this package builds nothing and loads no plugin; `create_app()` does both, so that
tests and other programs get a fresh app that sees the plugins installed at that moment.
"""

from __future__ import annotations

import typer

from cldyn_cli import __version__


def _version(value: bool) -> None:
    if value:
        typer.echo(f"cldyn {__version__}")
        raise typer.Exit()


def _root(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                       help="Print the version and exit.")) -> None:
    """Task-aware infrared-visible image fusion (CLDyN)."""


def create_app() -> typer.Typer:
    """The `cldyn` app: the built-in commands, then the commands of every working plugin."""
    from cldyn_cli.cli import compensate, eval as eval_, export, fuse, info, plugins, synth, train_base
    from cldyn_cli.ui import OneLineErrors

    app = typer.Typer(
        name="cldyn",
        help="Task-aware infrared-visible image fusion (CLDyN). Fuse image pairs, train the base network, "
             "train task compensation, evaluate and export.",
        no_args_is_help=True,
        pretty_exceptions_enable=False,
        rich_markup_mode=None,
        cls=OneLineErrors,
    )
    app.callback()(_root)
    for module in (compensate, eval_, export, fuse, info, plugins, synth, train_base):
        module.register(app)
    plugins.register_plugin_commands(app)  # last, so plugins add to the built-in commands
    return app


def main() -> None:
    """Console-script entry point."""
    create_app()()
