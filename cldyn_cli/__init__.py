"""cldyn: task-aware infrared-visible image fusion (CLDyN, CVPR 2026)."""

import pluggy

__version__ = "0.1.0"

hookimpl = pluggy.HookimplMarker("cldyn")  # marks a plugin's implementations of cldyn_cli.hookspecs

__all__ = ["__version__", "hookimpl"]
