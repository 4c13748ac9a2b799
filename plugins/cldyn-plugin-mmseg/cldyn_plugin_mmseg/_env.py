"""Importing MMSegmentation (and MMCV with its compiled ops) with one-line errors, offline and quiet.

MMSegmentation 1.2.2 imports ``mmcv.ops`` (compiled C++) at import time, so the light ``mmcv-lite``
is not enough; PyPI has only a source distribution of MMCV 2.1.0 for current PyTorch, which
``scripts/build_mmcv.sh`` builds into a cached wheel. A missing or broken install is reported as a
:class:`UserError` naming that script instead of a traceback from deep inside the import.
"""

from __future__ import annotations

import logging
from types import ModuleType

from cldyn_cli.plugin_api import UserError

_ready: ModuleType | None = None

_BUILD_HINT = ("build MMCV with its ops by running scripts/build_mmcv.sh PYTHON from the cldyn repository, then "
               "pip install --find-links ~/.cache/cldyn/wheels mmcv==2.1.0 (see the cldyn-plugin-mmseg README)")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def quiet_logs(level: int = logging.WARNING) -> None:
    """MMEngine's logger prints INFO lines on stdout; keep it to warnings (created first, so it stays)."""
    from mmengine.logging import MMLogger

    if MMLogger.check_instance_created("mmengine"):
        logger = MMLogger.get_instance("mmengine")
    else:
        logger = MMLogger.get_instance("mmengine", log_level=logging.getLevelName(level))
    logger.setLevel(level)
    for handler in logger.handlers:
        handler.setLevel(level)


def mmseg_ready() -> ModuleType:
    """The ``mmseg`` module, imported with its models registered (idempotent)."""
    global _ready
    if _ready is not None:
        return _ready
    try:
        import mmcv
    except Exception as exc:
        raise UserError(f"cannot import mmcv ({_first_line(exc)}); {_BUILD_HINT}") from None
    try:
        import mmcv.ops  # noqa: F401  (compiled; mmseg needs it)
    except Exception as exc:
        raise UserError(f"mmcv {getattr(mmcv, '__version__', '?')} has no working compiled ops "
                        f"({_first_line(exc)}); mmcv-lite is not enough: {_BUILD_HINT}") from None
    try:
        quiet_logs()
        import mmseg
        from mmseg.utils import register_all_modules
    except Exception as exc:
        raise UserError(f"cannot import mmseg ({_first_line(exc)}); reinstall the plugin with "
                        "pip install cldyn-plugin-mmseg") from None
    register_all_modules(init_default_scope=False)
    _ready = mmseg
    return mmseg
