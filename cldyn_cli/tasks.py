"""The task-backend interface: what a task plugin hands the core.

The closed loop needs four things from a downstream task network (docs/method.md): its features of a
fused image, a differentiable loss of a fused image, its dataset, and its metrics. A plugin wraps
its library (Ultralytics, MMSegmentation, ...) in a :class:`TaskBackend` so the core never imports
that library. Plugins announce backends with :class:`TaskSpec` records (see ``hookspecs.py``).
"""

from __future__ import annotations

import difflib
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

import torch
from torch import Tensor, nn

from cldyn_cli.data.images import read_image
from cldyn_cli.data.pairs import index_images
from cldyn_cli.errors import UserError


@dataclass
class TaskOptions:
    """What the user passed about the task network (``--task-weights``, ``--task-config``, ...)."""

    weights: Path | None = None  # --task-weights; None asks for a small untrained network (tests)
    config: Path | None = None  # --task-config (YAML or the library's own config file)
    device: torch.device = torch.device("cpu")
    feature_layer: str | None = None  # overrides the backend's default tapped layer
    trust: bool = False  # --trust-checkpoint: the user allows full unpickling of the task weights


@dataclass
class Sample:
    """One dataset item: a registered IR/visible pair and its ground truth."""

    ir: Tensor  # (1, H, W) in [0, 1]
    vis: Tensor  # (3, H, W) RGB in [0, 1]
    target: Any  # task-specific ground truth
    name: str  # relative stem, used to name outputs


@dataclass
class Batch:
    """Collated samples; ``targets`` is in whatever form the backend's ``loss`` expects."""

    ir: Tensor  # (B, 1, H, W) in [0, 1]
    vis: Tensor  # (B, 3, H, W) RGB in [0, 1]
    targets: Any
    names: list[str]


class TaskBackend(ABC):
    """A frozen downstream task network seen through the closed loop's eyes.

    Every image argument is a fused RGB batch (B, 3, H, W) in [0, 1]; the backend does its own
    resizing and normalisation. The network never trains: gradients flow only to the image.
    """

    name: str  # task name, e.g. "det"
    feature_layer: str  # dotted name of the module whose activation is the task feature

    @abstractmethod
    def features(self, fused_rgb: Tensor) -> Tensor:
        """The activation of ``feature_layer`` (B, C, ...), captured with a forward hook (FeatureTap)."""

    @abstractmethod
    def loss(self, fused_rgb: Tensor, targets: Any) -> Tensor:
        """Scalar task loss, differentiable with respect to ``fused_rgb``."""

    @abstractmethod
    def dataset(self, root: Path, split: str) -> torch.utils.data.Dataset:
        """The task's dataset layout under ``root``; items are :class:`Sample`."""

    @abstractmethod
    def collate(self, samples: list[Sample]) -> Batch:
        """Stack samples into a :class:`Batch` (the DataLoader's ``collate_fn``)."""

    @abstractmethod
    def evaluate(self, fused_batches: Iterable[tuple[Tensor, Any]]) -> dict[str, float]:
        """Named metrics of the task network on (fused RGB, targets) batches against ground truth."""

    def fused_dataset(self, fused: Path, root: Path, split: str) -> torch.utils.data.Dataset:
        """What `cldyn eval --task` scores: the split's samples with ``vis`` replaced by the fused
        image of the same name in folder ``fused`` (batched by ``collate``, then ``evaluate``).

        This default reads ``dataset(root, split)`` and needs its samples at their files' size;
        a backend whose ``dataset`` resizes or crops overrides it to prepare fused images the same way.
        """
        return FusedInPlace(self.dataset(root, split), fused)

    def feature_network(self) -> TappedNetwork:
        """What :meth:`features` computes, as one exportable module (for `cldyn export --task`).

        Optional: a task that cannot be traced into an ONNX graph keeps this default, which says so.
        """
        raise UserError(f"task {self.name!r} cannot be exported to ONNX: its plugin offers no exportable "
                        "feature network; export the base network alone (without --task)")


@dataclass(frozen=True)
class TaskSpec:
    """A task a plugin offers; ``load`` is called only when the task is used, so imports stay lazy."""

    name: str  # what users pass to --task, e.g. "det"
    description: str  # one line for `cldyn plugins`
    load: Callable[[TaskOptions], TaskBackend]
    plugin: str = ""  # set by the plugin manager to the registering plugin's name
    hidden: bool = False  # left out of listings unless asked for (reference and test tasks)


class FusedInPlace(torch.utils.data.Dataset):
    """A dataset's samples with the visible image replaced by the fused image of the same name."""

    def __init__(self, dataset: torch.utils.data.Dataset, fused: Path) -> None:
        if not fused.is_dir():
            raise UserError(f"fused folder {fused} does not exist; check the path")
        self.dataset, self.fused = dataset, index_images(fused)
        if not self.fused:
            raise UserError(f"no images in fused folder {fused}")

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> Sample:
        sample = self.dataset[index]
        if sample.name not in self.fused:
            raise UserError(f"no fused image named {sample.name!r} in the fused folder; fuse the same split first")
        image = torch.from_numpy(read_image(self.fused[sample.name]))
        image = image.expand(3, *image.shape) if image.ndim == 2 else image.permute(2, 0, 1)
        if image.shape[-2:] != sample.vis.shape[-2:]:
            raise UserError(f"fused image {self.fused[sample.name]} is {image.shape[-1]}x{image.shape[-2]}, but the "
                            f"sample is {sample.vis.shape[-1]}x{sample.vis.shape[-2]}; the task's dataset resizes "
                            "images, so its plugin must define fused_dataset")
        return Sample(sample.ir, image.contiguous(), sample.target, sample.name)


def freeze(module: nn.Module) -> nn.Module:
    """Evaluation mode without parameter gradients: task networks are fixed judges, not learners.

    The module must stay outside any model whose ``.train()`` is called later, or it leaves eval mode.
    """
    module.requires_grad_(False)
    return module.eval()


def find_module(model: nn.Module, name: str) -> nn.Module:
    """The submodule called ``name``; an unknown name is a UserError suggesting close matches."""
    modules = dict(model.named_modules())
    if name in modules:
        return modules[name]
    close = difflib.get_close_matches(name, [n for n in modules if n], n=5, cutoff=0.5)
    hint = f"similar: {', '.join(close)}" if close else f"e.g. {', '.join(list(modules)[1:6])}"
    raise UserError(f"layer {name!r} not found in {type(model).__name__} ({hint}); "
                    f"pass --feature-layer with one of its {len(modules) - 1} module names")


class FeatureTap:
    """Captures the output of one named submodule while the network runs.

    >>> with FeatureTap(net, "backbone.norm4") as tap:
    ...     net(images)
    >>> tap.output.shape
    """

    def __init__(self, model: nn.Module, layer: str) -> None:
        self.layer = layer
        self._module = find_module(model, layer)
        self._output: Tensor | None = None
        self._handle: torch.utils.hooks.RemovableHandle | None = None

    def _hook(self, module: nn.Module, inputs: tuple[Any, ...], output: Any) -> None:
        if not isinstance(output, Tensor):
            raise TypeError(f"layer {self.layer!r} returns {type(output).__name__}, not a tensor; "
                            "tap a layer whose output is a single tensor")
        self._output = output

    def __enter__(self) -> FeatureTap:
        self._output = None
        self._handle = self._module.register_forward_hook(self._hook)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._handle is not None:
            self._handle.remove()
            self._handle = None

    @property
    def output(self) -> Tensor:
        """The activation from the last forward pass inside the ``with`` block."""
        if self._output is None:
            raise RuntimeError(f"layer {self.layer!r} did not run during the forward pass")
        return self._output


class _Reached(Exception):
    """Raised by :class:`TappedNetwork`'s hook to stop the forward pass at the tapped layer."""

    def __init__(self, output: Tensor) -> None:
        super().__init__()
        self.output = output


class TappedNetwork(nn.Module):
    """A task network run up to its tapped layer: fused RGB (B, 3, H, W) in [0, 1] -> the features.

    The forward pass stops as soon as the layer has produced its output, so the layers after it
    are neither computed nor exported. ``prepare`` maps fused RGB to the network's input (resizing,
    normalising); ``dynamic_size`` tells whether the traced graph holds for other image sizes than
    the one it was traced at (False when ``prepare`` computes padding from the size, for example).
    """

    def __init__(self, network: nn.Module, layer: str, prepare: Callable[[Tensor], Tensor] | None = None,
                 dynamic_size: bool = True) -> None:
        super().__init__()
        find_module(network, layer)
        self.network, self.layer, self.prepare, self.dynamic_size = network, layer, prepare, dynamic_size

    def forward(self, fused_rgb: Tensor) -> Tensor:
        def stop(module: nn.Module, inputs: tuple[Any, ...], output: Any) -> None:
            raise _Reached(output)

        handle = find_module(self.network, self.layer).register_forward_hook(stop)
        try:
            self.network(fused_rgb if self.prepare is None else self.prepare(fused_rgb))
        except _Reached as reached:
            return reached.output
        finally:
            handle.remove()
        raise RuntimeError(f"layer {self.layer!r} did not run during the forward pass")
