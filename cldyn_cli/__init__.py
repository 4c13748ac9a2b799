"""cldyn: task-aware infrared-visible image fusion (CLDyN, CVPR 2026)."""

import pluggy

__version__ = "0.1.0"

hookimpl = pluggy.HookimplMarker("cldyn")  # marks a plugin's implementations of cldyn_cli.hookspecs

__all__ = ["Fuser", "__version__", "hookimpl"]


def __getattr__(name: str):
    """``from cldyn_cli import Fuser`` loads the Python API (and torch) only when asked for."""
    if name == "Fuser":
        from cldyn_cli.api import Fuser

        return Fuser
    raise AttributeError(f"module 'cldyn_cli' has no attribute {name!r}")
