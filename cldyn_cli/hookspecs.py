"""The plugin contract: the hooks a cldyn plugin may implement.

A plugin is a module (or object) whose functions are marked with ``cldyn_cli.hookimpl`` and
named like the specifications below; it is found through the entry-point group ``cldyn``.
``docs/writing-a-plugin.md`` walks through a complete plugin.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

import pluggy

if TYPE_CHECKING:
    import typer

    from cldyn_cli.tasks import TaskSpec

hookspec = pluggy.HookspecMarker("cldyn")


@hookspec
def register_tasks(register: Callable[[TaskSpec], None]) -> None:
    """Announce the downstream tasks this plugin provides, one ``register(TaskSpec(...))`` each.

    Import the task library inside ``load``, not at module level, so that listing plugins stays
    fast and a missing library only breaks the task that needs it::

        @hookimpl
        def register_tasks(register):
            register(TaskSpec(name="det", description="Ultralytics YOLO detector", load=load_yolo))
    """


@hookspec
def register_commands(cli: typer.Typer) -> None:
    """Add commands or a command group to the ``cldyn`` CLI (after the built-in commands)::

        @hookimpl
        def register_commands(cli):
            group = typer.Typer(help="CTDNet tools.")
            group.command()(train)  # -> `cldyn ctdnet train`
            cli.add_typer(group, name="ctdnet")
    """
