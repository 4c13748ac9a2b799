"""Loading a frozen Ultralytics detector: a ``.pt`` checkpoint or a model YAML, plus ``--task-config``.

Two detector families: YOLO (``DetectionModel`` with a ``Detect`` head) and RT-DETR
(``RTDETRDetectionModel`` with an ``RTDETRDecoder`` head); :attr:`Detector.rtdetr` tells them apart.

- ``.pt`` (YOLOv5u, YOLOv8, YOLO11, ..., RT-DETR detection checkpoints) is read with
  ``torch.load(weights_only=True)`` against Ultralytics' allow-list of its own and torch's module
  classes, whatever ``ULTRALYTICS_SAFE_LOAD`` says, so a checkpoint cannot run code. Full unpickling
  (checkpoints with custom modules) needs ``--trust-checkpoint`` and prints a warning. The file must
  exist locally, nothing is downloaded.
- ``.yaml`` builds an untrained network from a model definition: a file, or a name shipped inside the
  ultralytics package such as ``yolov8n.yaml`` / ``yolo11n.yaml`` (the letter picks the scale) or
  ``rtdetr-l.yaml`` (an ``RTDETRDecoder`` head builds an RT-DETR). Every layer must name a network
  module class and the activation a plain ``nn.X(literals)`` call (:func:`check_definition`);
  nothing in the file is evaluated. Its weights are initialised from ``seed``. Without
  ``--task-weights`` an untrained ``yolov8n.yaml`` is built (for tests and smoke runs; a warning
  says so).

``--task-config`` is a small YAML (or an Ultralytics data YAML, whose path/train/val/test keys are
ignored) with ``nc`` and/or ``names`` (a list, or a mapping 0: name, ...): the data's classes, which
the labels number; optionally ``class_map`` (data class name -> detector class name, see
:mod:`classes`), ``imgsz``, ``rect``, ``conf``, ``iou``, ``max_det`` and ``seed``; see :class:`DetConfig`.
"""

from __future__ import annotations

import ast
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cldyn_cli.plugin_api import DET_CLASSES, UserError, build_config as build, read_yaml

from cldyn_plugin_yolo._env import ultralytics_ready
from cldyn_plugin_yolo.classes import ClassMapping, identity, match_classes, read_class_map

DEFAULT_MODEL = "yolov8n.yaml"
DEFAULT_IMGSZ = 640
# Keys of an Ultralytics data YAML that say where images are; they mean nothing here and are skipped.
DATA_YAML_KEYS = {"path", "train", "val", "test", "minival", "download", "yaml_file", "channels"}
LOSS_GAINS = ("box", "cls", "dfl")


@dataclass
class DetConfig:
    """``--task-config`` settings of the det task."""

    nc: int | None = None  # number of data classes (default: the checkpoint's, or M3FD's 6 for a YAML model)
    names: Any = None  # the data's class names: a list, or a mapping {0: name, ...}
    class_map: Any = None  # data class name -> detector class name, where the names differ
    imgsz: int | None = None  # letterbox size (default: the checkpoint's training imgsz, else 640)
    rect: bool = False  # pad only to a multiple of the stride instead of a square
    conf: float = 0.001  # evaluation: confidence threshold before NMS (Ultralytics' val default)
    iou: float = 0.7  # evaluation: NMS IoU threshold (Ultralytics' val default)
    max_det: int = 300  # evaluation: detections kept per image
    seed: int = 0  # initialisation of a YAML (untrained) model


@dataclass
class Detector:
    """A loaded detector and the settings the backend needs around it."""

    model: nn.Module  # Ultralytics' DetectionModel or RTDETRDetectionModel, eval mode, frozen by the backend
    names: list[str]  # the detector's classes
    classes: ClassMapping  # the data's classes -> the detector's
    imgsz: int
    rect: bool
    conf: float
    iou: float
    max_det: int
    source: str  # what was loaded, for messages

    @property
    def stride(self) -> int:
        return int(max(self.model.stride.max().item(), 32))

    @property
    def rtdetr(self) -> bool:
        """An RT-DETR: its head returns ranked boxes and scores (no NMS), its loss matches queries to boxes."""
        from ultralytics.nn.tasks import RTDETRDetectionModel

        return isinstance(self.model, RTDETRDetectionModel)


def _number(value: Any, kind: type, key: str, source: Path) -> Any:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (kind is int and value != int(value)):
        raise UserError(f"{key} in {source} must be a{'n integer' if kind is int else ' number'}, got {value!r}")
    return kind(value)


def _names(raw: Any, source: Path) -> list[str] | None:
    if raw is None:
        return None
    if isinstance(raw, dict):
        try:
            keys = sorted(int(k) for k in raw)
        except (TypeError, ValueError):
            raise UserError(f"names in {source} must map class numbers 0, 1, ... to names") from None
        if keys != list(range(len(keys))):
            raise UserError(f"names in {source} must number the classes 0..{len(keys) - 1} without gaps")
        return [str(raw[k] if k in raw else raw[str(k)]) for k in keys]
    if isinstance(raw, list) and raw:
        return [str(n) for n in raw]
    raise UserError(f"names in {source} must be a non-empty list or a mapping 0: name, 1: name, ...")


def read_det_config(path: Path | None) -> tuple[DetConfig, list[str] | None]:
    """The task config and the data's class names (None when it gives neither names nor nc)."""
    if path is None:
        return DetConfig(), None
    values = {k: v for k, v in read_yaml(path).items() if k not in DATA_YAML_KEYS}
    config = build(DetConfig, values, f"--task-config {path}")
    config.class_map = read_class_map(config.class_map, str(path))
    names = _names(config.names, path)
    if config.nc is not None:
        nc = _number(config.nc, int, "nc", path)
        if nc < 1:
            raise UserError(f"nc in {path} must be at least 1, got {nc}")
        if names is not None and len(names) != nc:
            raise UserError(f"{path} gives nc={nc} but {len(names)} names; make them agree")
        names = names or [f"class{i}" for i in range(nc)]
    if config.imgsz is not None:
        config.imgsz = _number(config.imgsz, int, "imgsz", path)
        if config.imgsz < 32:
            raise UserError(f"imgsz in {path} must be at least 32, got {config.imgsz}")
    for key in ("conf", "iou"):
        value = _number(getattr(config, key), float, key, path)
        if not 0 <= value <= 1:
            raise UserError(f"{key} in {path} must lie in [0, 1], got {value}")
        setattr(config, key, value)
    config.max_det = _number(config.max_det, int, "max_det", path)
    config.seed = _number(config.seed, int, "seed", path)
    if not isinstance(config.rect, bool):
        raise UserError(f"rect in {path} must be true or false, got {config.rect!r}")
    return config, names


def _reason(exc: BaseException) -> str:
    """The first meaningful line of an Ultralytics error (they are long and decorated)."""
    for line in str(exc).splitlines():
        line = line.replace("ERROR ❌️", "").replace("ERROR ❌", "").strip()
        if line:
            return f"{type(exc).__name__}: {line}"
    return type(exc).__name__


def _module_class(name: Any, namespace: dict[str, Any]) -> type | None:
    """The network module class a model YAML layer names, or None when it names anything else."""
    if not isinstance(name, str):
        return None
    if name.startswith("nn."):
        found = getattr(torch.nn, name[3:], None)
    elif name.startswith("torchvision.ops."):
        import torchvision

        found = getattr(torchvision.ops, name[16:], None)
    else:
        found = namespace.get(name)
    return found if isinstance(found, type) and issubclass(found, nn.Module) else None


def _plain_activation(text: Any) -> bool:
    """True for ``nn.SiLU()`` / ``torch.nn.LeakyReLU(0.1)``: a torch.nn class called with literals only."""
    try:
        call = ast.parse(str(text).strip(), mode="eval").body
    except SyntaxError:
        return False
    if not isinstance(call, ast.Call):
        return False

    def literal(node: ast.AST) -> bool:
        return isinstance(node, ast.Constant) or isinstance(node, ast.UnaryOp) and isinstance(node.operand, ast.Constant)

    name = ast.unparse(call.func).removeprefix("torch.").removeprefix("nn.")
    return (ast.unparse(call.func) in (f"nn.{name}", f"torch.nn.{name}") and "." not in name
            and _module_class(f"nn.{name}", {}) is not None
            and all(literal(a) for a in call.args) and all(literal(k.value) for k in call.keywords))


def check_definition(definition: dict, source: str) -> None:
    """Refuse a model definition that names anything but network modules, so building it runs no code."""
    from ultralytics.nn import tasks

    layers = [*(definition.get("backbone") or []), *(definition.get("head") or [])]
    if not layers:
        raise UserError(f"model YAML {source!r} has no backbone/head layers")
    for i, layer in enumerate(layers):
        if not isinstance(layer, list) or len(layer) != 4 or _module_class(layer[2], vars(tasks)) is None:
            shown = layer[2] if isinstance(layer, list) and len(layer) == 4 else layer
            raise UserError(f"layer {i} of model YAML {source!r} names {shown!r}, which is not a network module; "
                            "only Ultralytics and torch.nn layers are built")
    act = definition.get("activation")
    if act is not None and not _plain_activation(act):
        raise UserError(f"activation {act!r} in model YAML {source!r} is not a plain nn.X(...) call; "
                        "it is never evaluated")


def _build_from_yaml(source: str, names: list[str], seed: int) -> nn.Module:
    from ultralytics.nn.tasks import DetectionModel, RTDETRDetectionModel, yaml_model_load

    try:
        definition = yaml_model_load(source)
    except Exception as exc:
        raise UserError(f"cannot read the model YAML {source!r} ({_reason(exc)}); give a file or a name shipped "
                        "with ultralytics such as yolov8n.yaml or yolo11n.yaml") from None
    check_definition(definition, source)
    definition["nc"] = len(names)
    head = definition["head"][-1][2] if definition.get("head") else None
    family = RTDETRDetectionModel if head == "RTDETRDecoder" else DetectionModel
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = family(definition, verbose=False)
    except Exception as exc:
        raise UserError(f"cannot build a detector from {source!r}: {_reason(exc)}") from None
    return model


def _load_pt(path: Path, trust: bool) -> tuple[nn.Module, dict]:
    """Model and checkpoint dict of a ``.pt``: allow-listed classes only unless ``trust``."""
    from ultralytics.nn.tasks import _SafeLoad, torch_safe_load
    from ultralytics.utils.checks import check_yolov5u_filename

    if not path.is_file():
        raise UserError(f"task weights {path} do not exist; give a local Ultralytics .pt file "
                        "(nothing is downloaded)")
    if trust:
        print(f"warning: --trust-checkpoint: unpickling {path} in full; this runs any code stored in it",
              file=sys.stderr)
    elif not _SafeLoad.SUPPORTED:
        raise UserError(f"this torch/ultralytics cannot load {path} safely (weights_only); pass "
                        "--trust-checkpoint only if you trust the file")
    with tempfile.TemporaryDirectory(prefix="cldyn-yolo-") as tmp:
        target = str(path)
        if check_yolov5u_filename(target, verbose=False) != target:
            # Ultralytics would rename yolov5s.pt to yolov5su.pt and try to download that: load via a neutral name.
            link = Path(tmp) / "weights.pt"
            os.symlink(path.resolve(), link)
            target = str(link)
        try:
            ckpt, _ = torch_safe_load(target, safe_only=not trust)
        except Exception as exc:
            hint = "" if trust else "; it was loaded safely (weights only): --trust-checkpoint unpickles a " \
                                    "file you trust in full"
            raise UserError(f"{path} is not a loadable Ultralytics checkpoint ({_reason(exc)}){hint}") from None
    candidate = (ckpt.get("ema") or ckpt.get("model")) if isinstance(ckpt, dict) else None
    if not isinstance(candidate, nn.Module):
        raise UserError(f"{path} holds no Ultralytics model ('model' or 'ema' entry); give a detection checkpoint")
    model = candidate.float()
    if not hasattr(model, "stride"):
        model.stride = torch.tensor([32.0])
    for module in model.modules():
        if hasattr(module, "inplace"):
            module.inplace = False
    return model, ckpt


def _hyperparameters(model: nn.Module) -> Any:
    """The model's training arguments as Ultralytics' loss expects them, the loss gains filled in."""
    from ultralytics.cfg import DEFAULT_CFG_DICT
    from ultralytics.utils import IterableSimpleNamespace

    args = getattr(model, "args", None) or {}
    args = dict(vars(args)) if not isinstance(args, dict) else dict(args)
    merged = {**DEFAULT_CFG_DICT, **{k: v for k, v in args.items() if v is not None}}
    for key in LOSS_GAINS:
        if not isinstance(merged.get(key), (int, float)):
            merged[key] = DEFAULT_CFG_DICT[key]
    return IterableSimpleNamespace(**merged)


def _check_detector(model: Any, source: str) -> None:
    from ultralytics.nn.tasks import DetectionModel, RTDETRDetectionModel

    if not isinstance(model, nn.Module) or type(model) not in (DetectionModel, RTDETRDetectionModel):
        task = getattr(model, "task", None) or type(model).__name__
        raise UserError(f"{source} holds a {task} model ({type(model).__name__}), not an Ultralytics detection "
                        "model; the det task takes YOLOv5u, YOLOv8, YOLO11 (and later) and RT-DETR detectors")


def _rtdetr_as_such(model: nn.Module) -> nn.Module:
    """An RT-DETR saved as a plain ``DetectionModel`` (what ``YOLO("rtdetr-l.yaml").save()`` writes) gets the
    class Ultralytics' RT-DETR trainer gives it: the same modules, with RT-DETR's forward pass and loss."""
    from ultralytics.nn.modules import RTDETRDecoder
    from ultralytics.nn.tasks import DetectionModel, RTDETRDetectionModel

    if type(model) is DetectionModel and isinstance(model.model[-1], RTDETRDecoder):
        model.__class__ = RTDETRDetectionModel
    return model


def default_feature_layer(model: nn.Module) -> str:
    """The deepest neck output feeding the detection head: the input of its largest-stride branch.

    YOLOv8 -> ``model.21`` (C2f), YOLO11 -> ``model.22`` (C3k2), YOLOv5u -> ``model.23`` (C3, whose
    output is that of its ``cv3``: the paper's ``model.23.cv3``), RT-DETR-l -> ``model.27`` (the RepC3
    of the neck's P5 output, which the decoder takes as its coarsest level).
    """
    head = model.model[-1]
    sources = head.f if isinstance(head.f, (list, tuple)) else [head.f]
    last = sources[-1]
    index = head.i + last if last < 0 else last
    return f"model.{index}"


def _checkpoint_imgsz(ckpt: dict) -> int | None:
    value = (ckpt.get("train_args") or {}).get("imgsz") if isinstance(ckpt, dict) else None
    if isinstance(value, (list, tuple)) and value:
        value = max(value)
    return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 32 else None


def load_detector(weights: Path | None, config_path: Path | None, trust: bool = False) -> Detector:
    """Load (or build) the detector in eval mode on the CPU, with class names and evaluation settings.

    ``trust`` (--trust-checkpoint) allows full unpickling of a ``.pt``."""
    config, names = read_det_config(config_path)
    ultralytics_ready()
    ckpt: dict = {}
    if weights is None:
        print(f"warning: no --task-weights given: using an untrained {DEFAULT_MODEL} (only useful for tests)",
              file=sys.stderr)
        source = DEFAULT_MODEL
        own = names or list(DET_CLASSES)
        model = _build_from_yaml(source, own, config.seed)
    elif weights.suffix.lower() in {".yaml", ".yml"}:
        source = str(weights)
        if not weights.exists() and weights.parent != Path("."):
            raise UserError(f"model YAML {weights} does not exist; check the path")
        own = names or list(DET_CLASSES)
        model = _build_from_yaml(source, own, config.seed)
    elif weights.suffix.lower() == ".pt":
        source = str(weights)
        model, ckpt = _load_pt(weights, trust)
        _check_detector(model, source)
        model = _rtdetr_as_such(model)
        own = [str(model.names[i]) for i in sorted(model.names)] if isinstance(model.names, dict) else \
            [str(n) for n in model.names]
        if len(own) != model.model[-1].nc:
            raise UserError(f"{weights} names {len(own)} classes but its head detects {model.model[-1].nc}; "
                            "give a consistent Ultralytics checkpoint")
        if config.names is None and names is not None and len(names) != len(own):
            raise UserError(f"--task-config gives nc={len(names)} but {weights} detects {len(own)} classes "
                            f"({', '.join(own[:8])}{', ...' if len(own) > 8 else ''}); give the data's class "
                            "names (names:) to map them onto its classes by name")
    else:
        raise UserError(f"--task-weights {weights}: give an Ultralytics .pt checkpoint or a model .yaml")
    _check_detector(model, source)
    # The labels number the config's names; given only nc (or nothing), they number the detector's own classes.
    data_names = names if names is not None and config.names is not None else own
    mapping = identity(own) if data_names == own and not config.class_map else \
        match_classes(data_names, own, config.class_map, Path(source).name)
    model.names = dict(enumerate(own))
    model.nc = len(own)  # the head's, as Ultralytics' trainer sets it; RT-DETR's criterion reads it
    model.args = _hyperparameters(model)
    model = model.float().eval()
    detector = Detector(model, list(own), mapping, 0, config.rect, config.conf, config.iou, config.max_det, source)
    if detector.rtdetr and config.rect:
        raise UserError(f"rect: true in {config_path} does not apply to RT-DETR {Path(source).name}: it sees its "
                        "images stretched to imgsz x imgsz; remove rect")
    imgsz = config.imgsz or _checkpoint_imgsz(ckpt) or DEFAULT_IMGSZ
    stride = detector.stride
    detector.imgsz = -(-imgsz // stride) * stride  # a multiple of the stride, rounding up like Ultralytics
    return detector

