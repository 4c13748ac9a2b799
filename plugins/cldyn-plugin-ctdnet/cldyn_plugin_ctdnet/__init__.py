"""cldyn plugin "ctdnet": task ``sod``, a CTDNet-18 salient-object detector as a frozen task network.

The plugin owns the network (``network``), its loss (``loss``), the VT5000 / ir-vis-gt datasets
(``data``), PySODMetrics evaluation (``metrics``), the task backend (``backend``), a resumable
trainer (``training``) and the ``cldyn ctdnet`` commands (``cli``). This module stays light: it is
imported whenever the cldyn CLI starts, so torchvision and pysodmetrics load only when used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

from cldyn_cli.plugin_api import TaskOptions, TaskSpec, hookimpl

if TYPE_CHECKING:
    import typer

    from cldyn_plugin_ctdnet.backend import CTDNetBackend

__version__ = "0.1.0"


def load(options: TaskOptions) -> CTDNetBackend:
    """Load the sod backend: CTDNet-18 from --task-weights, or a seeded untrained one."""
    from cldyn_plugin_ctdnet.backend import load as load_backend

    return load_backend(options)


@hookimpl
def register_tasks(register: Callable[[TaskSpec], None]) -> None:
    register(TaskSpec(name="sod", description="Salient object detection with CTDNet-18 (VT5000 layout)", load=load))


@hookimpl
def register_commands(cli: typer.Typer) -> None:
    from cldyn_plugin_ctdnet.cli import app

    cli.add_typer(app, name="ctdnet")
