"""Ultralytics, imported offline and with settings of its own, never the user's global ones.

Every module of this plugin imports Ultralytics through :func:`ultralytics_ready`, which first sets

- ``YOLO_CONFIG_DIR`` to ``$CLDYN_YOLO_DIR/config`` (default ``~/.cache/cldyn/yolo/config``), so the
  settings file, fonts and anything else Ultralytics keeps lands there;
- ``YOLO_OFFLINE=1``: Ultralytics' online check answers "offline", so no analytics, update checks or
  downloads are attempted;
- ``ULTRALYTICS_SAFE_LOAD=1``, whatever it was: ``.pt`` checkpoints that Ultralytics itself opens
  are read with ``torch.load(weights_only=True)`` against its allow-list of model classes, and model
  YAMLs are built without ``eval`` (the task loader checks both itself too, see ``loading``; full
  unpickling is ``--trust-checkpoint`` there);

and, after the import, points the datasets/weights/runs folders of those settings into the same
directory and switches analytics (``sync``) and the logger integrations off. Ultralytics' dataset check
looks for the font ``Arial.ttf`` and downloads it when missing; a copy of the DejaVu Sans font that
ships with matplotlib (an Ultralytics dependency) is put in its place so that nothing is fetched.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
import warnings
from pathlib import Path
from types import ModuleType

from cldyn_cli.plugin_api import atomic_path

_ready: ModuleType | None = None

_SETTINGS = {"sync": False, "clearml": False, "comet": False, "dvc": False, "mlflow": False, "raytune": False,
             "tensorboard": False, "wandb": False, "vscode_msg": False, "openvino_msg": False}
_FONTS = ("Arial.ttf", "Arial.Unicode.ttf")


def home() -> Path:
    """Where Ultralytics' settings and runs go: ``$CLDYN_YOLO_DIR`` or ``~/.cache/cldyn/yolo``."""
    value = os.environ.get("CLDYN_YOLO_DIR", "").strip()
    return Path(value).expanduser() if value else Path.home() / ".cache" / "cldyn" / "yolo"


def runs_dir() -> Path:
    return home() / "runs"


def _set_environment(root: Path) -> None:
    os.environ["YOLO_CONFIG_DIR"] = str(root / "config")
    os.environ["YOLO_OFFLINE"] = "1"
    os.environ["ULTRALYTICS_SAFE_LOAD"] = "1"


def _provide_fonts(config_dir: Path) -> None:
    """Put a local font where Ultralytics would otherwise download Arial (see the module docstring)."""
    if all((config_dir / name).exists() for name in _FONTS):
        return
    spec = importlib.util.find_spec("matplotlib")
    locations = list(spec.submodule_search_locations or []) if spec else []
    source = next((Path(p) / "mpl-data" / "fonts" / "ttf" / "DejaVuSans.ttf" for p in locations
                   if (Path(p) / "mpl-data" / "fonts" / "ttf" / "DejaVuSans.ttf").is_file()), None)
    if source is None:
        return
    config_dir.mkdir(parents=True, exist_ok=True)
    for name in _FONTS:
        target = config_dir / name
        if not target.exists():
            with atomic_path(target) as tmp:  # unique temporary names: processes may race here
                shutil.copyfile(source, tmp)


def ultralytics_ready() -> ModuleType:
    """The ``ultralytics`` module, imported offline with our settings directory (idempotent)."""
    global _ready
    if _ready is not None:
        return _ready
    root = home()
    already = "ultralytics" in sys.modules
    if not already:
        _set_environment(root)
    try:
        import ultralytics
        from ultralytics.utils import SETTINGS, USER_CONFIG_DIR
    except Exception as exc:  # a broken install must read as one line, not a traceback
        from cldyn_cli.plugin_api import UserError

        raise UserError(f"cannot import ultralytics ({type(exc).__name__}: {exc}); "
                        "reinstall the plugin with pip install cldyn-plugin-yolo") from None
    if Path(USER_CONFIG_DIR).resolve() != (root / "config" / "Ultralytics").resolve():
        # Imported earlier by someone else (a notebook, a test): leave those settings alone.
        warnings.warn(f"ultralytics was imported before cldyn-plugin-yolo; it uses the settings in {USER_CONFIG_DIR} "
                      "instead of $CLDYN_YOLO_DIR", stacklevel=2)
    else:
        wanted = {**_SETTINGS, "datasets_dir": str(root / "datasets"), "weights_dir": str(root / "weights"),
                  "runs_dir": str(runs_dir())}
        changed = {k: v for k, v in wanted.items() if k in SETTINGS and SETTINGS[k] != v}
        if changed:
            SETTINGS.update(changed)
        _provide_fonts(Path(USER_CONFIG_DIR))
    _ready = ultralytics
    return ultralytics
