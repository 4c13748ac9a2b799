"""Constants shared by the tests (a uniquely named module: plugin test folders may run in one pytest)."""

from __future__ import annotations

from pathlib import Path

TINY_YAML = Path(__file__).resolve().parents[1] / "cldyn_plugin_mmseg" / "configs" / "segformer_mit-tiny_64.yaml"
CLASSES = ["background", "person", "car", "bus", "motorcycle", "lamp", "truck"]
