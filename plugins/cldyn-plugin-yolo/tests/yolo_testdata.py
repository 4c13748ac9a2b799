"""Constants shared by the plugin's tests (a uniquely named module, unlike ``conftest``)."""

from pathlib import Path

HERE = Path(__file__).parent
TINY_YAML = HERE / "tiny-det.yaml"  # a ~220k-parameter detector for CPU tests
NAMES = ["People", "Car", "Bus", "Motorcycle", "Lamp", "Truck"]
