"""Everything a task plugin may use from cldyn, in one place; plugins import only from here.

The names below are the declared plugin API: they keep their meaning across cldyn releases of
one major version, while everything else in ``cldyn_cli`` may move. ``docs/writing-a-plugin.md``
explains each group; signatures are in each name's docstring (``help(plugin_api.read_image)``).

- Hooks and the task contract: ``hookimpl``, ``TaskSpec``, ``TaskBackend``, ``TaskOptions``,
  ``Sample``, ``Batch``, ``FeatureTap``, ``find_module``, ``freeze``, ``TappedNetwork`` (what
  ``TaskBackend.feature_network`` returns for `cldyn export --task`).
- Image I/O and pairing: ``read_image``, ``read_infrared``, ``write_png``, ``is_image``,
  ``image_size``, ``find_pairs``, ``Pair``, ``IMAGE_SUFFIXES``.
- Fusion, for plugins that train their task network on fused images: ``load_vfn``, ``VFN``,
  ``luminance``, ``task_rgb``.
- Errors and commands: ``UserError``, ``user_errors``, ``progress``, ``resolve_device``, and the
  shared option types ``Device``, ``Quiet``, ``Seed``, ``Overwrite``, ``TrustCheckpoint``.
- Files: ``atomic_path``, ``all_or_nothing``, ``check_new_files``, ``read_yaml``, ``build_config``.
- Checkpoints and resumable training: ``atomic_save``, ``load_checkpoint``, ``read_metadata``,
  ``metadata_json``, ``train_state_path``, ``existing_train_state``, ``resumed_step``,
  ``TrainState``, ``batch_indices``, ``plugin_versions``.
- Tests: ``use_plugin`` (register a plugin in-process for a ``with`` block), ``write_dataset``
  (synthetic scenes in the pairs, M3FD, FMB and VT5000 layouts), ``DET_CLASSES``, ``SEG_CLASSES``.
"""

from __future__ import annotations

from cldyn_cli import hookimpl
from cldyn_cli.checkpoint import (atomic_save, existing_train_state, load_checkpoint, metadata_json, read_metadata,
                                  resumed_step, train_state_path)
from cldyn_cli.colour import luminance
from cldyn_cli.config import build as build_config
from cldyn_cli.config import read_yaml
from cldyn_cli.data.images import IMAGE_SUFFIXES, image_size, is_image, read_image, read_infrared, write_png
from cldyn_cli.data.pairs import Pair, find_pairs
from cldyn_cli.data.synth import CLASSES as SEG_CLASSES
from cldyn_cli.data.synth import DET_CLASSES, write_dataset
from cldyn_cli.errors import UserError
from cldyn_cli.fusion import task_rgb
from cldyn_cli.models.loading import load_vfn
from cldyn_cli.models.vfn import VFN
from cldyn_cli.outputs import all_or_nothing, atomic_path, check_new_files
from cldyn_cli.plugins import plugin_versions, use_plugin
from cldyn_cli.tasks import (Batch, FeatureTap, Sample, TappedNetwork, TaskBackend, TaskOptions, TaskSpec, find_module,
                             freeze)
from cldyn_cli.training.base import batch_indices
from cldyn_cli.training.state import TrainState
from cldyn_cli.ui import Device, Overwrite, Quiet, Seed, TrustCheckpoint, progress, resolve_device, user_errors

__all__ = [
    "hookimpl", "TaskSpec", "TaskBackend", "TaskOptions", "Sample", "Batch", "FeatureTap", "find_module", "freeze",
    "TappedNetwork",
    "read_image", "read_infrared", "write_png", "is_image", "image_size", "find_pairs", "Pair", "IMAGE_SUFFIXES",
    "load_vfn", "VFN", "luminance", "task_rgb",
    "UserError", "user_errors", "progress", "resolve_device", "Device", "Quiet", "Seed", "Overwrite", "TrustCheckpoint",
    "atomic_path", "all_or_nothing", "check_new_files", "read_yaml", "build_config",
    "atomic_save", "load_checkpoint", "read_metadata", "metadata_json", "train_state_path", "existing_train_state",
    "resumed_step", "TrainState", "batch_indices", "plugin_versions", "use_plugin",
    "write_dataset", "DET_CLASSES", "SEG_CLASSES",
]
