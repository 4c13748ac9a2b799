"""cldyn plugin "mmseg": task ``seg``, an MMSegmentation segmentor (e.g. SegFormer) as a frozen task network.

Kept light on purpose: this module is imported whenever the cldyn CLI starts, so MMSegmentation,
MMEngine and MMCV are imported only when the task is loaded or a ``cldyn mmseg`` command runs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

from cldyn_cli.plugin_api import TaskOptions, TaskSpec, hookimpl

if TYPE_CHECKING:
    import typer

    from cldyn_plugin_mmseg.backend import MMSegBackend

__version__ = "0.1.0"


def load(options: TaskOptions) -> MMSegBackend:
    """Load the seg backend (imports MMSegmentation)."""
    from cldyn_plugin_mmseg.backend import load as load_backend

    return load_backend(options)


@hookimpl
def register_tasks(register: Callable[[TaskSpec], None]) -> None:
    register(TaskSpec(name="seg", description="Semantic segmentation with an MMSegmentation segmentor "
                                              "(SegFormer config + checkpoint)", load=load))


@hookimpl
def register_commands(cli: typer.Typer) -> None:
    from cldyn_plugin_mmseg.cli import app

    cli.add_typer(app, name="mmseg")
