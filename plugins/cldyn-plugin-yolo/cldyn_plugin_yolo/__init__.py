"""cldyn plugin "yolo": task ``det``, an Ultralytics detector (YOLO or RT-DETR) as a frozen task network.

Kept light on purpose: this module is imported whenever the cldyn CLI starts, so Ultralytics is
imported only when the task is loaded or a ``cldyn yolo`` command runs (see ``_env`` for how it is
kept offline and out of the user's global Ultralytics settings).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

from cldyn_cli.plugin_api import TaskOptions, TaskSpec, hookimpl

if TYPE_CHECKING:
    import typer

    from cldyn_plugin_yolo.backend import YoloBackend

__version__ = "0.1.0"


def load(options: TaskOptions) -> YoloBackend:
    """Load the det backend (imports Ultralytics)."""
    from cldyn_plugin_yolo.backend import load as load_backend

    return load_backend(options)


@hookimpl
def register_tasks(register: Callable[[TaskSpec], None]) -> None:
    register(TaskSpec(name="det", description="Object detection with an Ultralytics detector "
                                              "(YOLOv5u/v8/11 or RT-DETR .pt, or model .yaml)", load=load))


@hookimpl
def register_commands(cli: typer.Typer) -> None:
    from cldyn_plugin_yolo.cli import app

    cli.add_typer(app, name="yolo")
