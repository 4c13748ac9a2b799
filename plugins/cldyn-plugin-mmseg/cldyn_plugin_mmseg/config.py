"""Which MMSeg network to build: ``--task-config``, ``--task-weights`` and the cldyn task YAML.

``--task-config`` is either an MMSegmentation config file (``.py``, e.g. one MMSegmentation ships:
``mmseg::segformer/segformer_mit-b0_8xb2-160k_ade20k-512x512.py``) or a small cldyn YAML that names
one and adjusts it for the data, without environment variables::

    config: mmseg::segformer/segformer_mit-b0_8xb2-160k_ade20k-512x512.py  # or a path, relative to this file
    classes: [background, person, car, bus, motorcycle, lamp, truck]       # names; sets num_classes
    num_classes: 7          # when no names are given
    size: [512, 384]        # network input (H, W), or one number; images and masks are resized to it
    mit_width: 16           # a SegFormer's MiT encoder at another width (32 = MiT-b0), see below
    mit_blocks: 1           # ... with this many transformer blocks per stage (MiT-b0: 2)
    cfg_options:            # any other MMEngine dotted-key override of the config (applied last)
      model.decode_head.dropout_ratio: 0.0
    seed: 0                 # initialises the network when no weights are given

``mit_width: W`` scales a MixVisionTransformer the way the MiT family grows: stage widths W, 2W, 4W,
8W with 1, 2, 4, 8 attention heads, and an all-MLP head of 4W channels reading all four stages.

Resolution, first match wins: the architecture comes from the YAML's ``config`` (or the ``.py``),
else from the checkpoint (MMEngine checkpoints carry their config as ``meta.cfg``), else from the
shipped SegFormer MiT-b0 config. A config stored in a checkpoint is read as plain data (assignments
of constants, lists, tuples and dicts, as MMEngine dumps them): unlike MMEngine's ``Config.fromstring``
nothing in it is executed, just as ``torch.load(weights_only=True)`` unpickles no code. The class
count comes from ``num_classes``/``classes``, else from the checkpoint's classifier
(``decode_head.conv_seg``), else from the config. Pretrained-backbone settings (``init_cfg`` of type
Pretrained, ``pretrained``) are removed, so nothing is downloaded, and SyncBN becomes BN (the same
parameters; SyncBN cannot run on one CPU process).
"""

from __future__ import annotations

import ast
import os
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from cldyn_cli.plugin_api import UserError, build_config as build, read_yaml

DEFAULT_CONFIG = "mmseg::segformer/segformer_mit-b0_8xb2-160k_ade20k-512x512.py"
DEFAULT_SIZE = (512, 512)
PACKAGE_SCHEME = "mmseg::"


@dataclass
class SegTaskConfig:
    """The keys of a ``--task-config`` YAML (see the module docstring); unknown keys are rejected."""

    config: str | None = None
    num_classes: int | None = None
    classes: list[str] | None = None
    size: int | list[int] | None = None
    mit_width: int | None = None
    mit_blocks: int | None = None
    cfg_options: dict[str, Any] | None = None
    seed: int = 0


@dataclass
class Resolved:
    """An MMEngine config ready to build, and what the backend needs to know about it."""

    cfg: Any  # mmengine.Config
    classes: list[str]
    size: tuple[int, int]  # network input (H, W)
    seed: int = 0
    checkpoint: dict[str, Any] | None = None
    source: str = ""  # where the architecture came from, for messages


def shipped_config_dir() -> Path:
    """MMSegmentation's own configs (installed inside the package as ``mmseg/.mim/configs``)."""
    import importlib.util

    spec = importlib.util.find_spec("mmseg")
    if spec is None or not spec.submodule_search_locations:
        raise UserError("mmsegmentation is not installed; pip install cldyn-plugin-mmseg")
    return Path(list(spec.submodule_search_locations)[0]) / ".mim" / "configs"


def resolve_config_path(name: str, relative_to: Path | None = None) -> Path:
    """A config file from ``mmseg::rel/path.py`` (the shipped configs) or a path (relative to a YAML)."""
    if name.startswith(PACKAGE_SCHEME):
        path = shipped_config_dir() / name[len(PACKAGE_SCHEME):]
        if not path.is_file():
            folder = path.parent
            near = sorted(p.name for p in folder.glob("*.py"))[:4] if folder.is_dir() else []
            hint = f"; e.g. {', '.join(near)}" if near else f"; browse {shipped_config_dir()}"
            raise UserError(f"MMSegmentation ships no config {name!r}{hint}")
        return path
    path = Path(os.path.expanduser(name))
    if not path.is_absolute() and relative_to is not None:
        path = relative_to / path
    if not path.is_file():
        raise UserError(f"MMSeg config {path} does not exist; check the path")
    return path


def read_task_config(path: Path | None) -> tuple[SegTaskConfig, Path | None]:
    """``--task-config`` as a :class:`SegTaskConfig` plus the folder its relative paths start from."""
    if path is None:
        return SegTaskConfig(), None
    text = str(path)
    if text.startswith(PACKAGE_SCHEME) or path.suffix == ".py":
        return SegTaskConfig(config=text), Path.cwd()
    if path.suffix.lower() not in (".yaml", ".yml"):
        raise UserError(f"--task-config {path} must be an MMSeg config (.py, or mmseg::...) or a cldyn YAML")
    values = read_yaml(path)
    task = build(SegTaskConfig, values, str(path))
    if task.classes is not None and (not isinstance(task.classes, list) or not task.classes):
        raise UserError(f"'classes' in {path} must be a non-empty list of class names")
    if task.num_classes is not None and (not isinstance(task.num_classes, int) or task.num_classes < 1):
        raise UserError(f"'num_classes' in {path} must be a positive integer")
    for key in ("mit_width", "mit_blocks"):
        value = getattr(task, key)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
            raise UserError(f"'{key}' in {path} must be a positive integer; got {value!r}")
    if task.cfg_options is not None and not isinstance(task.cfg_options, dict):
        raise UserError(f"'cfg_options' in {path} must be a mapping of dotted.key: value")
    return task, path.parent


def parse_size(value: Any, source: str) -> tuple[int, int]:
    """``64`` or ``[H, W]`` as (H, W)."""
    if isinstance(value, int) and not isinstance(value, bool):
        value = [value, value]
    if (isinstance(value, (list, tuple)) and len(value) == 2
            and all(isinstance(v, int) and not isinstance(v, bool) and v >= 32 for v in value)):
        return int(value[0]), int(value[1])
    raise UserError(f"size in {source} must be one number or [height, width], each at least 32; got {value!r}")


# Besides tensors, checkpoints may hold numpy arrays and scalars in their meta data: those are
# allowed by name for torch.load(weights_only=True); nothing else is unpickled. A full MMEngine
# runner checkpoint also pickles its message hub (HistoryBuffer objects, rebuilt through getattr):
# it is refused, with a hint to keep just state_dict and meta (README).
def _safe_globals() -> list[Any]:
    import numpy as np

    try:
        from numpy._core.multiarray import _reconstruct, scalar
    except ImportError:  # numpy < 2
        from numpy.core.multiarray import _reconstruct, scalar  # type: ignore[no-redef]
    allowed: list[Any] = [np.ndarray, np.dtype, _reconstruct, scalar]
    allowed += [type(np.dtype(t)) for t in ("f2", "f4", "f8", "i1", "i2", "i4", "i8", "u1", "u2", "b1")]
    return allowed


def read_checkpoint(path: Path) -> dict[str, Any]:
    """An MMSeg/MMEngine checkpoint as a dict with ``state_dict`` (and ``meta`` when it has one).

    Read with MMEngine's checkpoint loader, local files only, under ``torch.load(weights_only=True)``.
    """
    if not path.is_file():
        raise UserError(f"task weights {path} do not exist; check the path")
    from mmengine.runner import CheckpointLoader

    from cldyn_plugin_mmseg._env import quiet_logs

    quiet_logs()
    try:
        with torch.serialization.safe_globals(_safe_globals()):
            checkpoint = CheckpointLoader.load_checkpoint(str(path.resolve()), map_location="cpu", logger="current")
    except pickle.UnpicklingError as exc:
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        unsafe = next((line for line in lines if "Unsupported global" in line), None)
        if unsafe is None:
            detail = next((line for line in lines if "operand" in line or "load key" in line),
                          lines[-1] if lines else "")
            raise UserError(f"cannot read {path} as an MMSeg checkpoint ({detail})") from None
        what = unsafe.split("GLOBAL", 1)[-1].split(" was not", 1)[0].strip()
        raise UserError(f"{path} holds objects that are not loaded for safety (global {what}), e.g. a full MMEngine "
                        "runner checkpoint with its message hub; keep just its state_dict and meta "
                        "(see the cldyn-plugin-mmseg README)") from None
    except Exception as exc:
        first = str(exc).strip().splitlines()
        raise UserError(f"cannot read {path} as an MMSeg checkpoint: {first[0] if first else type(exc).__name__}") \
            from None
    if not isinstance(checkpoint, dict):
        raise UserError(f"{path} is not an MMSeg checkpoint (a dict with a state_dict)")
    state = checkpoint.get("state_dict", checkpoint)
    if not isinstance(state, dict) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UserError(f"{path} holds no state_dict of tensors; is it an MMSeg checkpoint?")
    state = {k[len("module."):] if k.startswith("module.") else k: v for k, v in state.items()}
    meta = checkpoint.get("meta") if isinstance(checkpoint.get("meta"), dict) else {}
    return {"state_dict": state, "meta": meta}


def _walk(node: Any, visit) -> Any:
    if isinstance(node, dict):
        visit(node)
        for value in node.values():
            _walk(value, visit)
    elif isinstance(node, (list, tuple)):
        for value in node:
            _walk(value, visit)
    return node


def _offline(node: dict) -> None:
    """No pretrained downloads: drop Pretrained init_cfgs and ``pretrained`` paths; SyncBN -> BN."""
    if node.get("pretrained") is not None:
        node["pretrained"] = None
    init = node.get("init_cfg")
    if isinstance(init, dict) and init.get("type") == "Pretrained":
        node["init_cfg"] = None
    elif isinstance(init, (list, tuple)):
        kept = [i for i in init if not (isinstance(i, dict) and i.get("type") == "Pretrained")]
        node["init_cfg"] = kept or None
    if node.get("type") in ("SyncBN", "MMSyncBN"):
        node["type"] = "BN"


def _heads(model: Any) -> list[Any]:
    heads = [model.get("decode_head")]
    aux = model.get("auxiliary_head")
    heads += list(aux) if isinstance(aux, (list, tuple)) else [aux]
    return [h for h in heads if h is not None]


def _classifier_rows(state: dict[str, torch.Tensor]) -> int | None:
    weight = state.get("decode_head.conv_seg.weight")
    return int(weight.shape[0]) if weight is not None and weight.ndim >= 2 else None


def _literal(node: ast.AST) -> Any:
    """A value of a dumped config: constants, lists, tuples, sets, dicts and ``dict(key=...)`` calls."""
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, (ast.List, ast.Tuple, ast.Set)):
        items = [_literal(e) for e in node.elts]
        return {ast.List: list, ast.Tuple: tuple, ast.Set: set}[type(node)](items)
    if isinstance(node, ast.Dict) and all(k is not None for k in node.keys):
        return {_literal(k): _literal(v) for k, v in zip(node.keys, node.values)}
    if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "dict" and not node.args
            and all(kw.arg is not None for kw in node.keywords)):
        return {kw.arg: _literal(kw.value) for kw in node.keywords}
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        value = _literal(node.operand)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return -value if isinstance(node.op, ast.USub) else value
    raise ValueError(f"line {getattr(node, 'lineno', '?')}: {type(node).__name__} is not plain data")


def config_from_text(text: str) -> Any:
    """An MMEngine Config from dumped config text (``meta.cfg``), read as data: nothing is executed.

    MMEngine's ``Config.fromstring`` would run the text as Python; a checkpoint is not trusted that far.
    """
    from mmengine.config import Config

    values: dict[str, Any] = {}
    for node in ast.parse(text).body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            values[node.targets[0].id] = _literal(node.value)
        elif isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant):
            continue  # a docstring
        else:
            raise ValueError(f"line {node.lineno}: only assignments of plain data are read")
    return Config(values)


def mit_options(width: int | None, blocks: int | None) -> dict[str, Any]:
    """MMEngine overrides that scale a SegFormer's MiT encoder and head (``mit_width``, ``mit_blocks``)."""
    options: dict[str, Any] = {}
    if width is not None:
        options.update({"model.backbone.embed_dims": width, "model.backbone.num_heads": [1, 2, 4, 8],
                        "model.decode_head.in_channels": [width, width * 2, width * 4, width * 8],
                        "model.decode_head.channels": width * 4})
    if blocks is not None:
        options["model.backbone.num_layers"] = [blocks] * 4
    return options


def _load_cfg(path: Path, trust: bool = False) -> Any:
    """An MMSeg ``.py`` config. It is Python that MMEngine runs, so only the configs shipped inside
    mmseg are read without ``trust`` (--trust-checkpoint)."""
    from mmengine.config import Config

    if not trust and not path.resolve().is_relative_to(shipped_config_dir().resolve()):
        raise UserError(f"MMSeg config {path} is Python that would be run; pass --trust-checkpoint if you trust "
                        "it, or name a shipped config (mmseg::...) in a cldyn YAML")
    try:
        return Config.fromfile(str(path))
    except UserError:
        raise
    except Exception as exc:
        first = str(exc).strip().splitlines()
        raise UserError(f"cannot read MMSeg config {path}: {type(exc).__name__}: {first[0] if first else ''}") \
            from None


def resolve(config_path: Path | None, weights: Path | None, trust: bool = False) -> Resolved:
    """The config to build (see the module docstring for the order of precedence).

    ``trust`` (--trust-checkpoint) allows running a ``.py`` config from outside mmseg."""
    task, base_dir = read_task_config(config_path)
    checkpoint = read_checkpoint(weights) if weights is not None else None
    if task.config is not None:
        path = resolve_config_path(task.config, base_dir)
        cfg, source = _load_cfg(path, trust), str(path)
    elif checkpoint is not None and isinstance(checkpoint["meta"].get("cfg"), str):
        try:
            cfg = config_from_text(checkpoint["meta"]["cfg"])
        except (SyntaxError, ValueError) as exc:
            raise UserError(f"the config stored in {weights} is not read ({exc}); pass the MMSeg config as "
                            "--task-config") from None
        source = f"{weights} (meta.cfg)"
    elif checkpoint is not None:
        raise UserError(f"{weights} carries no config; pass the MMSeg config it was trained with as --task-config")
    else:
        path = resolve_config_path(DEFAULT_CONFIG)
        cfg, source = _load_cfg(path), DEFAULT_CONFIG
    scaling = mit_options(task.mit_width, task.mit_blocks)
    try:
        cfg.merge_from_dict({**scaling, **(task.cfg_options or {})})
    except Exception as exc:
        raise UserError(f"cfg_options in {config_path} do not apply: {exc}") from None
    model = cfg.get("model")
    if not isinstance(model, dict) or "decode_head" not in model or "backbone" not in model:
        raise UserError(f"{source} is not an MMSeg segmentor config (it needs model.backbone and model.decode_head)")
    if scaling and model["backbone"].get("type") != "MixVisionTransformer":
        raise UserError(f"mit_width and mit_blocks in {config_path} scale a SegFormer's MiT encoder; {source} has "
                        f"a {model['backbone'].get('type')} backbone (use cfg_options for it)")
    _walk(model, _offline)

    # Number of classes.
    if task.classes is not None and task.num_classes is not None and len(task.classes) != task.num_classes:
        raise UserError(f"{config_path}: num_classes is {task.num_classes} but {len(task.classes)} classes are named")
    dataset_meta = checkpoint["meta"].get("dataset_meta") if checkpoint else None
    meta_classes = list(dataset_meta.get("classes") or []) if isinstance(dataset_meta, dict) else []
    if not meta_classes and checkpoint and isinstance(checkpoint["meta"].get("CLASSES"), (list, tuple)):
        meta_classes = list(checkpoint["meta"]["CLASSES"])  # MMSeg 0.x checkpoints
    rows = _classifier_rows(checkpoint["state_dict"]) if checkpoint else None
    num_classes = task.num_classes or (len(task.classes) if task.classes else None) or rows \
        or model["decode_head"].get("num_classes")
    if not isinstance(num_classes, int) or num_classes < 1:
        raise UserError(f"{source} sets no decode_head.num_classes; set num_classes in a --task-config YAML")
    for head in _heads(model):
        if "num_classes" in head or head is model["decode_head"]:
            head["num_classes"] = num_classes
    if task.classes is not None:
        classes = [str(c) for c in task.classes]
    elif len(meta_classes) == num_classes:
        classes = [str(c) for c in meta_classes]
    else:
        classes = [str(i) for i in range(num_classes)]

    # Input size.
    pre = model.get("data_preprocessor")
    if task.size is not None:
        size = parse_size(task.size, str(config_path))
    elif isinstance(pre, dict) and pre.get("size"):
        size = parse_size(list(pre["size"]), f"{source} (model.data_preprocessor.size)")
    else:
        size = DEFAULT_SIZE
    if isinstance(pre, dict):
        pre["size"] = size
    cfg.model = model
    return Resolved(cfg=cfg, classes=classes, size=size, seed=task.seed, checkpoint=checkpoint, source=source)
