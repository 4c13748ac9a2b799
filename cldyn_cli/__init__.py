"""cldyn: task-aware infrared-visible image fusion (CLDyN, CVPR 2026)."""

__version__ = "0.1.0"
