"""`cldyn plugins`: list installed task plugins; and the hand-over of the CLI to plugins' commands."""

from __future__ import annotations

import dataclasses
import json
import sys
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from cldyn_cli import plugins as registry
from cldyn_cli.ui import user_errors


@user_errors
def plugins_command(
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON list of {name, package, version, "
                                                         "tasks, error, hooks}.")] = False,
    show_all: Annotated[bool, typer.Option("--all", help="Include hidden plugins and tasks (reference/test "
                                                         "tasks such as toyseg).")] = False,
) -> None:
    """List installed task plugins, their tasks and hooks, and any that failed to load."""
    infos = registry.list_plugins(include_hidden=show_all or None)
    if as_json:
        typer.echo(json.dumps([dataclasses.asdict(info) for info in infos], indent=2))
        return
    if not infos:
        typer.echo("no task plugins installed (e.g. pip install cldyn-plugin-yolo)")
        return
    table = Table("plugin", "package", "version", "tasks", "hooks", "status")
    for info in infos:
        status = f"[red]failed: {info.error}[/red]" if info.error else "[green]ok[/green]"
        table.add_row(info.name, info.package or "-", info.version or "-", ", ".join(info.tasks) or "-",
                      ", ".join(info.hooks) or "-", status)
    Console().print(table)


def register(app: typer.Typer) -> None:
    app.command("plugins")(plugins_command)


def register_plugin_commands(app: typer.Typer) -> None:
    """Let plugins add their commands; whatever goes wrong, the built-in commands keep working.

    Every command a plugin adds turns a UserError into one line and exit status 2, as the
    built-in commands do, without the plugin having to ask for it.
    """
    before = _commands(app)
    try:
        registry.register_commands(app)
    except Exception as exc:
        if registry.strict():
            raise
        print(f"warning: plugin commands are unavailable: {type(exc).__name__}: {exc}", file=sys.stderr)
    for command in _commands(app) - before:
        command.callback = user_errors(command.callback)


def _commands(app: typer.Typer) -> set:
    """Every command of ``app`` and of its groups, at any depth."""
    found = {info for info in app.registered_commands if info.callback is not None}
    for group in app.registered_groups:
        if group.typer_instance is not None:
            found |= _commands(group.typer_instance)
    return found
