"""Does the closed loop help the task? Base versus compensated fusion on held-out synthetic scenes.

For one task (det, seg or sod) and several seeds:
  1. synthetic scenes in the task's layout (`cldyn synth`), every fifth one held out for testing;
  2. base fusion of every scene (`cldyn fuse`);
  3. the task network trained on the base-fused training scenes (det: `cldyn yolo train`; seg: the
     built-in toyseg network, widened and deepened, or with --segmenter segformer a small SegFormer
     (`cldyn mmseg train`); sod: `cldyn ctdnet train`) and scored on the
     held-out base-fused scenes; below a useful level (det: mAP50 0.5) the comparison means little,
     which is printed loudly and recorded as "useful": false;
  4. per seed: the compensation trained against that frozen network (`cldyn compensate`), the
     held-out scenes fused with it, and both fusions scored with the task's metric
     (`cldyn eval --task`), with every cross network (det: other detectors trained the same way
     on the same images, never seen by the compensation), and with fusion metrics (`cldyn eval`).

A work folder's scenes and networks are reused by later runs of the same sizes; a cross detector
added later is trained then, and --reuse scores the compensations already made with it.

Seeds: by default (--vary compensation) the scenes and task networks are made once and the seed
changes only the compensation's training (initialisation, batch order, Gumbel noise): the spread
is the compensation's. --vary all makes new scenes and networks for every seed as well.
--set KEY=VALUE passes any `cldyn compensate` config setting (e.g. --set query=learned), which is
how the ablations of docs/results.md are run. Everything is written under --work; --json gets
{"task", "seeds", "base": {metric: [per seed]}, "compensated": {...}, "cross": {...}, ...}.

Usage: python benchmarks/closed_loop.py --task det --quick --seeds 3 --json r.json
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any, Optional

import yaml

FUSION_METRICS = "EN,SD,SF,AG,MI,VIF,Qabf,SSIM"
USEFUL = {"det": ("mAP50", 0.5), "seg": ("mIoU", 0.3), "sod": ("maxF", 0.6)}
# The task's own metrics to report, and whether higher is better.
TASK_METRICS = {"det": {"mAP50": True, "mAP50-95": True},
                "seg": {"mIoU": True, "pixel_acc": True, "mAcc": True, "aAcc": True},  # toyseg / MMSeg names
                "sod": {"maxF": True, "meanF": True, "Sm": True, "MAE": False}}


@dataclass(frozen=True)
class Sizes:
    """How big one run is: scenes, image size, task-network training and compensation steps."""

    scenes: int  # every fifth is a held-out test scene
    size: str  # WxH of the scenes
    imgsz: int  # task-network input size (det, sod)
    epochs: int  # task-network training (det: epochs; seg, sod: steps = epochs x 10)
    steps: int  # compensation steps
    batch: int = 4  # compensation batch per step


# What the scenes and task networks depend on: variants that differ only in compensation steps or
# batch share them.
DATA_SIZES = ("scenes", "size", "imgsz", "epochs")


def data_sizes(sizes: Sizes) -> dict[str, Any]:
    return {key: getattr(sizes, key) for key in DATA_SIZES}


QUICK = {"det": Sizes(scenes=300, size="256x192", imgsz=192, epochs=40, steps=60),
         "seg": Sizes(scenes=120, size="128x96", imgsz=96, epochs=100, steps=60),
         "sod": Sizes(scenes=120, size="128x128", imgsz=96, epochs=30, steps=60)}
# The full detector trains 10 epochs (mAP50 0.70 on the held-out scenes): at 60 it saturates near 0.90 on
# these scenes and leaves the fused image nothing to add (docs/results.md).
FULL = {"det": Sizes(scenes=1000, size="320x256", imgsz=256, epochs=10, steps=400),
        "seg": Sizes(scenes=500, size="256x192", imgsz=192, epochs=100, steps=300),
        "sod": Sizes(scenes=500, size="256x256", imgsz=192, epochs=100, steps=300)}
# toyseg wide and deep enough to see whole objects (the default, 8k parameters, stays under mIoU 0.3);
# ~140k parameters, Adam at 3e-3 (at 1e-2 it learned less: mIoU 0.12 after 300 quick steps).
TOYSEG, TOYSEG_LR = {"width": 32, "depth": 4}, 0.003
# A SegFormer of MiT-b0's widths with one block per stage (cldyn-plugin-mmseg's demo network, wider).
SEGFORMER = {"width": 32, "blocks": 1, "lr": 2e-3}
# Easier detection scenes than the natural street mix: two classes, no tiny objects.
DET_SCENES = ("--classes", "People,Car", "--min-object-height", "0.2")


class Runner:
    """Runs `cldyn` commands in subprocesses, logging each to a file; a failure raises with its tail."""

    def __init__(self, logs: Path, yolo_dir: Path, threads: int, device: str) -> None:
        self.logs, self.device = logs, device
        self.env = {**os.environ, "OMP_NUM_THREADS": str(threads), "YOLO_OFFLINE": "1",
                    "CLDYN_YOLO_DIR": str(yolo_dir)}
        self.count = len(list(logs.glob("*.log")))  # a later run in the same folder adds, not overwrites

    def cldyn(self, *args: Any, name: str) -> None:
        self.count += 1
        log = self.logs / f"{self.count:03d}-{name}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        command = [sys.executable, "-m", "cldyn_cli", *map(str, args)]
        with log.open("w") as out:
            out.write(" ".join(command) + "\n")
            out.flush()
            done = subprocess.run(command, stdout=out, stderr=subprocess.STDOUT, env=self.env)
        if done.returncode != 0:
            tail = log.read_text().strip().splitlines()[-5:]
            raise RuntimeError(f"`cldyn {args[0]}` failed ({log}):\n  " + "\n  ".join(tail))

    def task_scores(self, task: str, data: Path, split: str, weights: Path, folders: list[Path],
                    out: Path) -> dict[str, dict[str, float]]:
        """{folder name: {metric: value}} from `cldyn eval --task` (its JSON written to ``out``)."""
        self.cldyn("eval", "--task", task, "--data", data, "--split", split, *folders, "--task-weights", weights,
                   "--batch-size", 8, "--device", self.device, "--json", out, "--quiet", name=f"eval-{out.stem}")
        methods = json.loads(out.read_text())["methods"]
        return {label: entry["metrics"] for label, entry in methods.items()}

    def fusion_scores(self, ir: Path, vis: Path, folders: list[Path], out: Path) -> dict[str, dict[str, float]]:
        """{folder name: {metric: mean}} from `cldyn eval` (fusion metrics; its JSON written to ``out``)."""
        self.cldyn("eval", ir, vis, *folders, "--metrics", FUSION_METRICS, "--json", out, "--quiet",
                   name=out.stem)
        doc = json.loads(out.read_text())
        methods = doc["methods"] if "methods" in doc else {folders[0].name: doc}
        return {label: entry["mean"] for label, entry in methods.items()}


@dataclass
class TaskData:
    """One set of scenes with its base fusion and trained task networks."""

    root: Path  # the synthetic dataset in the task's layout
    test_ir: Path
    test_vis: Path
    split: str  # the held-out split's name in the layout
    base_test: Path  # held-out scenes fused by the base
    weights: Path  # the conditioning task network
    cross: dict[str, Path]  # other task networks: name -> weights


class Task:
    """What differs between det, seg and sod: layout, plugin, task-network training."""

    name = ""
    plugin = ""
    layout = ""
    splits = ("train", "test")

    def __init__(self, runner: Runner, sizes: Sizes, cross: list[str],
                 cross_epochs: Optional[dict[str, int]] = None) -> None:
        self.run, self.sizes, self.cross_models = runner, sizes, cross
        self.cross_epochs = cross_epochs or {}  # cross label -> its training epochs, when not sizes.epochs

    def epochs(self, label: Optional[str]) -> int:
        """Training epochs of the cross network ``label`` (None: the conditioning network)."""
        return self.cross_epochs.get(label, self.sizes.epochs)

    def cross_out(self, work: Path, label: str) -> Path:
        """Where the cross network ``label`` goes (``.pt``/``.json`` added): trained for other epochs than
        the task network, its name says so, and the network of the usual epochs is kept."""
        epochs = self.epochs(label)
        return work / (f"cross-{label}" if epochs == self.sizes.epochs else f"cross-{label}-e{epochs}")

    def folders(self, root: Path, split: str) -> tuple[Path, Path]:
        raise NotImplementedError

    def scene_options(self) -> tuple[str, ...]:
        return ()

    def train(self, root: Path, fused: dict[str, Path], out: Path, seed: int, model: Optional[str]) -> Path:
        """Train a task network (``model``: a cross network's; None: the conditioning one) on the
        base-fused training scenes (``fused``: split -> base-fused folder); returns its weights."""
        raise NotImplementedError

    def prepare(self, work: Path, seed: int) -> TaskData:
        """Scenes, base fusion and the task networks for data seed ``seed``; reused when ``work`` already
        holds them for the same data sizes (ablations, also of the compensation's steps and batch, share
        one set of scenes and networks). A requested cross network not trained there yet (or skipped
        before) is trained and added; the result holds the requested ones only."""
        record = work / "prepared.json"
        data, trained_epochs = None, {}
        if record.is_file():
            saved = json.loads(record.read_text())
            same = {key: saved["sizes"].get(key) for key in DATA_SIZES} == data_sizes(self.sizes)
            plugin = saved.get("plugin", TASKS[self.name].plugin)  # records before --segmenter: the default
            if same and plugin == self.plugin:
                values = {k: Path(v) if k not in ("split", "cross") else v for k, v in saved["data"].items()}
                data = TaskData(**{**values, "cross": {k: Path(v) for k, v in saved["data"]["cross"].items()}})
                trained_epochs = saved.get("cross_epochs", {})
        if data is None:
            data = self.make(work, seed)
            self.save(record, data, trained_epochs)
        fused = {self.splits[0]: work / f"base-{self.splits[0]}", self.splits[1]: data.base_test}
        for model in self.cross_models:  # one the task plugin cannot train or run is skipped, with its reason
            label = cross_label(model)
            epochs = self.epochs(label)
            if label in data.cross and trained_epochs.get(label, self.sizes.epochs) == epochs:
                continue
            out = self.cross_out(work, label)
            try:
                trained = self.train(data.root, fused, out, seed, model)
                self.run.task_scores(self.plugin, data.root, self.splits[1], trained, [data.base_test],
                                     out.with_suffix(".json"))
                data.cross[label], trained_epochs[label] = trained, epochs
                self.save(record, data, trained_epochs)
            except RuntimeError as exc:
                print(f"[closed-loop] skipping cross network {model}: {exc}", file=sys.stderr)
        wanted = {cross_label(m) for m in self.cross_models}
        return replace(data, cross={k: v for k, v in data.cross.items() if k in wanted})

    def save(self, record: Path, data: TaskData, cross_epochs: dict[str, int]) -> None:
        """The record that lets later runs (variants, added cross networks) reuse what is made."""
        record.write_text(json.dumps({"sizes": data_sizes(self.sizes), "plugin": self.plugin,
                                      "cross_epochs": cross_epochs,
                                      "data": json.loads(json.dumps(asdict(data), default=str))}, indent=2))

    def make(self, work: Path, seed: int) -> TaskData:
        """New scenes, their base fusion and the conditioning task network (no cross networks yet)."""
        root = work / "scenes"
        self.run.cldyn("synth", root, "--n", self.sizes.scenes, "--size", self.sizes.size, "--seed", seed,
                       "--layout", self.layout, *self.scene_options(), "--quiet", name="synth")
        fused = {}
        for split in self.splits:
            ir, vis = self.folders(root, split)
            fused[split] = work / f"base-{split}"
            self.run.cldyn("fuse", ir, vis, "-o", fused[split], "--device", self.run.device, "--overwrite", "--quiet",
                           name=f"fuse-base-{split}")
        weights = self.train(root, fused, work / "task", seed, None)
        test_ir, test_vis = self.folders(root, self.splits[1])
        return TaskData(root, test_ir, test_vis, self.splits[1], fused[self.splits[1]], weights, {})


def cross_label(spec: str) -> str:
    """The name a cross network is reported under: its model file's stem (``rtdetr-l.yaml`` -> ``rtdetr-l``)."""
    return Path(spec.partition("@")[0]).stem


class Det(Task):
    """Detection on M3FD-layout scenes; YOLOv8n conditions the compensation, other detectors cross-check."""

    name, plugin, layout = "det", "det", "m3fd"
    conditioning = "yolov8n.yaml"

    def folders(self, root: Path, split: str) -> tuple[Path, Path]:
        return root / "ir" / split, root / "vi" / split

    def scene_options(self) -> tuple[str, ...]:
        return DET_SCENES

    def train(self, root: Path, fused: dict[str, Path], out: Path, seed: int, model: Optional[str]) -> Path:
        """A detector trained by Ultralytics on the base-fused training scenes (its validation split,
        which picks the best epoch, is the held-out split: as in the example). From scratch, or, for
        ``MODEL@LABEL``, with every layer that matches by name and shape initialised from the cross
        detector LABEL trained before it (e.g. an RT-DETR decoder on a trained YOLO11n's backbone)."""
        from cldyn_cli.data.synth import DET_CLASSES

        det = out.parent / "yolo-data"
        if not (det / "data.yaml").is_file():
            for target, split in (("train", "train"), ("val", "test")):
                # Hard links, not a symlinked folder: Ultralytics resolves links before it looks for labels/.
                shutil.copytree(fused[split], det / "images" / target, dirs_exist_ok=True, copy_function=os.link)
                shutil.copytree(root / "labels" / split, det / "labels" / target, dirs_exist_ok=True)
            (det / "data.yaml").write_text(yaml.safe_dump({"path": str(det), "train": "images/train",
                                                           "val": "images/val", "names": list(DET_CLASSES)}))
        epochs = self.epochs(model and cross_label(model))
        model, _, init = (model or self.conditioning).partition("@")
        extra: tuple[str, ...] = ()
        if init:
            source = self.cross_out(out.parent, init).with_suffix(".pt")
            if not source.is_file():
                raise RuntimeError(f"{source} does not exist: list the cross detector {init} before this one")
            extra = ("--set", f"pretrained={source}")
        if Path(model).is_file():
            model = str(Path(model).resolve())
        weights = out.with_suffix(".pt")
        self.run.cldyn("yolo", "train", det / "data.yaml", "-o", weights, "--model", model,
                       "--epochs", epochs, "--imgsz", self.sizes.imgsz, "--batch", 16, "--seed", seed,
                       *extra, "--device", self.run.device, "--quiet", name=f"train-{Path(model).stem}")
        return weights


class Seg(Task):
    """Segmentation on FMB-layout scenes with the built-in toyseg network."""

    name, plugin, layout = "seg", "toyseg", "fmb"

    def folders(self, root: Path, split: str) -> tuple[Path, Path]:
        return root / split / "Infrared", root / split / "Visible"

    def train(self, root: Path, fused: dict[str, Path], out: Path, seed: int, model: Optional[str]) -> Path:
        """toyseg trained in-process on the base-fused training scenes (its own trainer, seeded)."""
        import torch

        from cldyn_cli.builtin_tasks.toyseg import ToySegConfig, save_toyseg, train_toyseg
        from cldyn_cli.colour import luminance
        from cldyn_cli.data.synth import CLASSES
        from cldyn_cli.fusion import task_rgb
        from cldyn_cli.models.loading import load_vfn

        base = load_vfn(None, torch.device("cpu"))[0].eval()

        def fused(batch: Any) -> torch.Tensor:
            with torch.no_grad():
                return task_rgb(base(batch.ir, luminance(batch.vis)), batch.vis)

        weights = out.with_suffix(".safetensors")
        config = ToySegConfig(num_classes=len(CLASSES), **TOYSEG)
        state = train_toyseg(root, self.sizes.epochs * 10, seed, config=config, inputs=fused, lr=TOYSEG_LR)
        save_toyseg(state, weights, config)
        return weights


class Sod(Task):
    """Salient objects on VT5000-layout scenes with CTDNet trained from scratch."""

    name, plugin, layout = "sod", "sod", "vt5000"
    splits = ("Train", "Test")

    def folders(self, root: Path, split: str) -> tuple[Path, Path]:
        return root / split / "T", root / split / "RGB"

    def train(self, root: Path, fused: dict[str, Path], out: Path, seed: int, model: Optional[str]) -> Path:
        """CTDNet from scratch with its own trainer, which fuses the training scenes with the base itself."""
        weights = out.with_suffix(".safetensors")
        self.run.cldyn("ctdnet", "train", root, "-o", weights, "--steps", self.sizes.epochs * 10, "--size",
                       self.sizes.imgsz, "--batch-size", 8, "--inputs", "fused", "--seed", seed,
                       "--device", self.run.device, "--quiet", name="train-ctdnet")
        return weights


class SegFormer(Seg):
    """Segmentation on FMB-layout scenes with a small SegFormer (MMSegmentation) trained from scratch."""

    plugin = "mmseg"

    def train(self, root: Path, fused: dict[str, Path], out: Path, seed: int, model: Optional[str]) -> Path:
        """`cldyn mmseg train` on the base-fused training scenes, at the scenes' own size."""
        from cldyn_cli.data.synth import CLASSES

        width, height = (int(v) for v in self.sizes.size.split("x"))
        config = out.parent / "segformer.yaml"
        config.write_text(yaml.safe_dump({
            "config": "mmseg::segformer/segformer_mit-b0_8xb2-160k_ade20k-512x512.py",
            "classes": list(CLASSES), "size": [height, width],
            "mit_width": SEGFORMER["width"], "mit_blocks": SEGFORMER["blocks"]}))
        weights = out.with_suffix(".pth")
        self.run.cldyn("mmseg", "train", root, "--images", fused["train"], "--task-config", config, "-o", weights,
                       "--steps", self.sizes.epochs * 10, "--batch-size", 8, "--lr", SEGFORMER["lr"],
                       "--seed", seed, "--device", self.run.device, "--quiet", name="train-segformer")
        return weights


TASKS = {"det": Det, "seg": Seg, "sod": Sod}
SEGMENTERS = {"toyseg": Seg, "segformer": SegFormer}


def compensation_config(path: Path, settings: list[str]) -> Path:
    """A `cldyn compensate --config` YAML from --set KEY=VALUE pairs (values read as YAML)."""
    values = {}
    for item in settings:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"--set {item!r}: expected KEY=VALUE, e.g. --set query=learned")
        values[key.strip()] = yaml.safe_load(value)
    path.write_text(yaml.safe_dump(values))
    return path


def listing(folder: Path) -> Optional[list[str]]:
    """The file names in ``folder`` (None when it does not exist): a fusion is complete when they match."""
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else None


def run_seed(task: Task, data: TaskData, work: Path, seed: int, config: Path, reuse: bool = False) -> dict[str, Any]:
    """Train the compensation with ``seed``, fuse the held-out scenes with it, score base and compensated.
    ``reuse``: a compensation and a complete compensated fusion already in ``work`` are kept, not redone."""
    run, sizes = task.run, task.sizes
    rsc = work / f"rsc-{seed}.safetensors"
    if not (reuse and rsc.is_file()):
        run.cldyn("compensate", "--plugin", task.plugin, "--data", data.root, "--task-weights", data.weights,
                  "--config", config, "--steps", sizes.steps, "--batch-size", sizes.batch, "--seed", seed,
                  "-o", rsc, "--device", run.device, "--overwrite", "--quiet", name=f"compensate-{seed}")
    comp = work / f"comp-{seed}"
    if not (reuse and listing(comp) == listing(data.base_test)):
        run.cldyn("fuse", data.test_ir, data.test_vis, "-o", comp, "--task", task.plugin, "--rsc", rsc,
                  "--task-weights", data.weights, "--device", run.device, "--overwrite", "--quiet",
                  name=f"fuse-comp-{seed}")
    folders = [data.base_test, comp]
    own = run.task_scores(task.plugin, data.root, data.split, data.weights, folders, work / f"task-{seed}.json")
    cross = {label: run.task_scores(task.plugin, data.root, data.split, weights, folders,
                                    work / f"{label}-{seed}.json")
             for label, weights in data.cross.items()}
    fusion = run.fusion_scores(data.test_ir, data.test_vis, folders, work / f"fusion-{seed}.json")
    pick = lambda scores: (scores[data.base_test.name], scores[comp.name])  # noqa: E731
    return {"task": pick(own), "cross": {k: pick(v) for k, v in cross.items()}, "fusion": pick(fusion)}


def summary(values: list[float]) -> dict[str, float]:
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0}


def collect(task: str, seeds: list[int], results: list[dict[str, Any]], useful: list[dict[str, Any]],
            sizes: Sizes, args: argparse.Namespace, minutes: float, cpu_minutes: float) -> dict[str, Any]:
    """The JSON document: per-seed values of every metric for base and compensated, and their summaries."""
    metrics = TASK_METRICS[task]

    def table(pairs: list[tuple[dict, dict]], names: Any) -> dict[str, dict[str, list[float]]]:
        return {side: {m: [float(p[i][m]) for p in pairs] for m in names if all(p[i].get(m) is not None
                                                                                  for p in pairs)}
                for i, side in enumerate(("base", "compensated"))}

    own = table([r["task"] for r in results], metrics)
    cross_labels = sorted(set().union(*(r["cross"] for r in results))) if results else []
    cross = {label: table([r["cross"][label] for r in results if label in r["cross"]], metrics)
             for label in cross_labels}
    fusion = table([r["fusion"] for r in results], FUSION_METRICS.split(","))
    wins = {m: sum((c > b) == metrics[m] and c != b for b, c in zip(own["base"][m], own["compensated"][m]))
            for m in own["base"]}
    return {"task": task, "seeds": seeds, "base": own["base"], "compensated": own["compensated"], "cross": cross,
            "fusion": fusion,
            "summary": {side: {m: summary(v) for m, v in own[side].items()} for side in ("base", "compensated")},
            "compensated_wins": wins, "task_network": useful, "sizes": asdict(sizes),
            "vary": args.vary, "settings": args.set, "quick": args.quick, "minutes": round(minutes, 2),
            "cpu_minutes": round(cpu_minutes, 2)}


def print_table(doc: dict[str, Any]) -> None:
    print(f"\n{doc['task']}: seeds {doc['seeds']}  ({doc['minutes']} min wall, {doc['cpu_minutes']} min CPU)")
    rows = [("own", doc["base"], doc["compensated"])]
    rows += [(label, t["base"], t["compensated"]) for label, t in doc["cross"].items()]
    rows += [("fusion", doc["fusion"]["base"], doc["fusion"]["compensated"])]
    for label, base, comp in rows:
        for metric in base:
            b, c = base[metric], comp[metric]
            per_seed = " ".join(f"{x:.4f}>{y:.4f}" for x, y in zip(b, c))
            print(f"  {label:<10} {metric:<9} base {statistics.fmean(b):.4f}  comp {statistics.fmean(c):.4f}"
                  f"  (per seed {per_seed})")


def main(argv: Optional[list[str]] = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", choices=sorted(TASKS), required=True)
    parser.add_argument("--quick", action="store_true", help="small sizes (about 15 min for det on 2 cores)")
    parser.add_argument("--seeds", type=int, default=3, help="number of seeds (0, 1, ...)")
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--work", type=Path, help="working folder [build/closed-loop-TASK]")
    parser.add_argument("--vary", choices=("compensation", "all"), default="compensation",
                        help="what a seed changes: the compensation only, or scenes and task networks too")
    parser.add_argument("--cross", default=None,
                        help="det: comma-separated cross detectors, model YAMLs [quick: none; full: "
                             "yolo11n.yaml,rtdetr-l.yaml]; MODEL@LABEL initialises MODEL's matching layers from "
                             "the cross detector LABEL listed before it; one that cannot be trained or run is "
                             "skipped with its reason")
    parser.add_argument("--cross-epochs", action="append", default=[], metavar="LABEL=N",
                        help="det: train the cross detector LABEL (its model file's stem, e.g. rtdetr-l) for N "
                             "epochs instead of the task network's (repeatable)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="a `cldyn compensate` config setting, e.g. --set query=learned (repeatable)")
    parser.add_argument("--size", action="append", default=[], metavar="KEY=VALUE",
                        help="override a size (scenes, size, imgsz, epochs, steps, batch), e.g. --size steps=100")
    parser.add_argument("--name", default="default",
                        help="name of this variant: its compensations and scores go to WORK/runs/NAME, while "
                             "scenes and task networks are shared by every variant of the same scenes, size, "
                             "imgsz and epochs (steps and batch may differ)")
    parser.add_argument("--segmenter", choices=sorted(SEGMENTERS), default=None,
                        help="seg: the task network, the built-in toyseg (default) or a small SegFormer (needs "
                             "cldyn-plugin-mmseg)")
    parser.add_argument("--reuse", action="store_true",
                        help="keep the compensations and compensated fusions an earlier run left in WORK/runs/NAME "
                             "and only score them again (e.g. with a cross detector added by --cross)")
    parser.add_argument("--threads", type=int, default=2, help="OMP threads of each command")
    parser.add_argument("--device", default="cpu", help="where every command runs (cpu, cuda, cuda:N); toyseg "
                        "(seg) trains on the CPU, it is tiny")
    args = parser.parse_args(argv)
    if args.segmenter is not None and args.task != "seg":
        parser.error(f"--segmenter applies to --task seg only, not {args.task}")
    if args.cross and args.task != "det":
        parser.error(f"--cross applies to --task det only, not {args.task}")
    sizes = (QUICK if args.quick else FULL)[args.task]
    names = [field.name for field in fields(Sizes)]
    for item in args.size:
        key, _, value = item.partition("=")
        if key not in names:
            parser.error(f"--size {item!r}: expected KEY=VALUE with KEY one of {', '.join(names)}")
        try:
            sizes = replace(sizes, **{key: type(getattr(sizes, key))(value)})
        except ValueError:
            parser.error(f"--size {item!r}: {value!r} is not a valid {key}")
    cross = args.cross if args.cross is not None else ("" if args.quick or args.task != "det"
                                                      else "yolo11n.yaml,rtdetr-l.yaml")
    specs = [m for m in cross.split(",") if m]
    labels = [cross_label(m) for m in specs]
    for i, spec in enumerate(specs):
        init = spec.partition("@")[2]
        if init and init not in labels[:i]:
            parser.error(f"--cross {spec}: list the cross detector {init} before it (it initialises {labels[i]})")
    cross_epochs = {}
    for item in args.cross_epochs:
        label, _, value = item.partition("=")
        if label not in labels or not value.isdigit() or int(value) < 1:
            parser.error(f"--cross-epochs {item!r}: expected LABEL=N with LABEL one of the --cross detectors "
                         f"({', '.join(labels) or 'none'}) and N >= 1")
        cross_epochs[label] = int(value)
    work = (args.work or Path("build") / f"closed-loop-{args.task}").resolve()
    runs = work / "runs" / args.name
    runs.mkdir(parents=True, exist_ok=True)
    runner = Runner(runs / "logs", work / "ultralytics", args.threads, args.device)
    kind = SEGMENTERS[args.segmenter or "toyseg"] if args.task == "seg" else TASKS[args.task]
    task = kind(runner, sizes, specs, cross_epochs)
    config = compensation_config(runs / "compensate.yaml", args.set)
    seeds = list(range(args.seeds))
    start = time.time()
    cpu_start = sum(getattr(resource.getrusage(resource.RUSAGE_CHILDREN), k) for k in ("ru_utime", "ru_stime"))
    results, useful, data = [], [], None
    for seed in seeds:
        if data is None or args.vary == "all":
            data_work = work / (f"data-{seed}" if args.vary == "all" else "data")
            data = task.prepare(data_work, seed)
            metric, threshold = USEFUL[args.task]
            score = runner.task_scores(task.plugin, data.root, data.split, data.weights, [data.base_test],
                                       data_work / "useful.json")[data.base_test.name][metric]
            useful.append({"seed": seed, metric: score, "threshold": threshold, "useful": score >= threshold})
            if score < threshold:
                print(f"\n!!! WARNING: the {args.task} network reaches only {metric} {score:.4f} < {threshold} on the "
                      f"held-out base-fused scenes: base vs compensated differences mean little. Train it longer "
                      f"(--size epochs=...) or use more scenes.\n", file=sys.stderr)
        results.append(run_seed(task, data, runs, seed, config, args.reuse))
        print(f"[closed-loop] seed {seed} done after {(time.time() - start) / 60:.1f} min", file=sys.stderr)
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)  # CPU time says more than wall time on a shared machine
    doc = collect(args.task, seeds, results, useful, sizes, args, (time.time() - start) / 60,
                  (usage.ru_utime + usage.ru_stime - cpu_start) / 60)
    doc["plugin"] = task.plugin  # which task network: det, toyseg, mmseg or sod
    doc["cross_models"], doc["reused"] = specs, args.reuse  # reused: compensations of an earlier run scored
    doc["cross_epochs"] = {label: task.epochs(label) for label in labels}
    print_table(doc)
    if args.json:
        args.json.write_text(json.dumps(doc, indent=2) + "\n")
    return doc


if __name__ == "__main__":
    main()
