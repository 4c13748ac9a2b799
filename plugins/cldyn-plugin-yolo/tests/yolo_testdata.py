"""Constants shared by the plugin's tests (a uniquely named module, unlike ``conftest``)."""

from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).parent
TINY_YAML = HERE / "tiny-det.yaml"  # a ~220k-parameter detector for CPU tests
TINY_RTDETR_YAML = HERE / "tiny-rtdetr.yaml"  # a ~130k-parameter RT-DETR for CPU tests
NAMES = ["People", "Car", "Bus", "Motorcycle", "Lamp", "Truck"]


@dataclass(frozen=True)
class Family:
    """A tiny detector of one family and what the tests expect of it on 64x64 images."""

    name: str  # also the name of its conftest .pt fixture: tiny_<name>_pt
    yaml: Path
    feature_layer: str  # the default: the deepest neck output feeding the head (stride 32)
    feature_shape: tuple[int, int, int]  # (C, H, W) of the default layer on 64x64
    inner_layer: str  # a stride-16 layer for --feature-layer
    inner_shape: tuple[int, int, int]


FAMILIES = [Family("yolo", TINY_YAML, "model.19", (32, 2, 2), "model.16", (16, 4, 4)),
            Family("rtdetr", TINY_RTDETR_YAML, "model.25", (32, 2, 2), "model.22", (32, 4, 4))]
COCO_LIKE = ["person", "car", "bus", "truck", "dog"]  # classes of a detector trained on other data
