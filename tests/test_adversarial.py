"""Bad input to every command: exit status 2, one line on stderr naming the culprit, nothing written.

Each case runs one command against a shared folder of good and deliberately broken files and
compares the folder's listing before and after: a refused run must not leave any file behind.
"""

from __future__ import annotations

import os
import struct
import zlib
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from cldyn_cli.builtin_tasks.toyseg import FORMAT as TOYSEG_FORMAT
from cldyn_cli.builtin_tasks.toyseg import ToySegConfig, build_net, save_toyseg
from cldyn_cli.checkpoint import BASE_FORMAT, RSC_TRAIN_STATE_FORMAT, TRAIN_STATE_FORMAT, atomic_save
from cldyn_cli.cli import create_app
from cldyn_cli.data.synth import write_dataset
from cldyn_cli.models.loading import save_vfn
from cldyn_cli.models.vfn import VFN, VFNConfig
from cldyn_cli.training.base import TrainBaseConfig
from cldyn_cli.training.closed_loop import CompensateConfig
from imagefiles import save_gray, save_rgb

runner = CliRunner()
app = create_app()


def png_header(width: int, height: int) -> bytes:
    """A PNG that claims a size in its header but holds no pixels (a decompression-bomb stand-in)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)) + \
        chunk(b"IDAT", zlib.compress(b"\0" * 16)) + chunk(b"IEND", b"")


def write(path: Path, text: str) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return str(path)


@pytest.fixture(scope="module")
def w(tmp_path_factory) -> Path:
    """The shared world: good scenes and models, and one broken file per kind of mistake."""
    root = tmp_path_factory.mktemp("adversarial")
    rng = np.random.default_rng(0)
    for i in range(2):
        save_gray(root / "scenes" / "ir" / f"{i}.png", rng.uniform(0, 1, (32, 32)))
        save_rgb(root / "scenes" / "vis" / f"{i}.png", rng.uniform(0, 1, (32, 32, 3)))
        save_rgb(root / "fused" / f"{i}.png", rng.uniform(0, 1, (32, 32, 3)))
    save_gray(root / "tiny" / "ir" / "0.png", np.zeros((1, 1)))
    save_rgb(root / "tiny" / "vis" / "0.png", np.zeros((1, 1, 3)))
    save_gray(root / "mismatch" / "ir" / "0.png", np.zeros((32, 40)))
    save_rgb(root / "mismatch" / "vis" / "0.png", np.zeros((32, 32, 3)))
    save_gray(root / "broken" / "ir" / "0.png", np.zeros((32, 32)))
    write(root / "broken" / "vis" / "0.png", "not an image")
    save_gray(root / "bomb" / "ir" / "0.png", np.zeros((32, 32)))
    (root / "bomb" / "vis").mkdir()
    (root / "bomb" / "vis" / "0.png").write_bytes(png_header(100000, 100000))
    save_gray(root / "unmatched" / "ir" / "a.png", np.zeros((32, 32)))
    save_rgb(root / "unmatched" / "vis" / "b.png", np.zeros((32, 32, 3)))
    (root / "empty").mkdir()
    (root / "folder").mkdir()
    write(root / "file", "a plain file")
    write_dataset(root / "fmb", n=2, width=48, height=32, seed=0, layout="fmb")
    torch.manual_seed(0)
    save_vfn(VFN(VFNConfig(blocks=1)), root / "base.safetensors", {})
    atomic_save({"x": torch.zeros(1)}, root / "four.safetensors", BASE_FORMAT, {"blocks": "four", "channels": 8})
    atomic_save({"x": torch.zeros(1)}, root / "zero.safetensors", BASE_FORMAT, {"blocks": 0, "channels": 8})
    atomic_save({"x": torch.zeros(1)}, root / "state.safetensors", TRAIN_STATE_FORMAT, {})
    write(root / "text.safetensors", "not a checkpoint")
    # toyseg task weights (untrained, the CLI only asks that they be given), and ones whose stored config is bad
    seg = build_net(ToySegConfig()).state_dict()
    save_toyseg(seg, root / "seg.safetensors", ToySegConfig())
    for name, classes in {"nc_word": "abc", "nc_neg": -1, "nc0": 0}.items():
        atomic_save(seg, root / "segs" / f"{name}.safetensors", TOYSEG_FORMAT, {"num_classes": classes, "seed": 0})
    # training states that hold no model tensors, written with the settings the resuming runs use
    base_cfg = TrainBaseConfig(crop=16, steps=2)
    atomic_save({"x": torch.zeros(1)}, root / "hollow" / "m.train-state.safetensors", TRAIN_STATE_FORMAT,
                asdict(base_cfg), {"step": 1})
    comp_cfg = CompensateConfig(steps=2)
    atomic_save({"x": torch.zeros(1)}, root / "hollow" / "r.train-state.safetensors", RSC_TRAIN_STATE_FORMAT,
                comp_cfg.hyper(), {"step": 1, "tasks": []})
    for name, text in {"list": "- 1\n- 2\n", "syntax": "a: [1,\n", "lr_word": "lr: abc\n", "steps0": "steps: 0\n",
                       "steps_neg": "steps: -3\n", "epochs0": "epochs: 0\n", "blocks0": "blocks: 0\n",
                       "batch_frac": "batch_size: 1.5\n", "crop8": "crop: 8\n", "unknown": "speed: 3\n",
                       "seed_neg": "seed: -1\n", "ckpt0": "checkpoint_every: 0\n", "lr0": "lr: 0\n",
                       "lr_inf": "lr: .inf\n", "blocks_word": "blocks: four\n", "steps_tiny": "steps: 1e-3\n",
                       "tau0": "tau: 0\n", "embed6": "embed_dim: 6\n", "fp16": "precision: fp16\n", "sets3": "sets: 3\n",
                       "tasks_str": "tasks: x\n", "tasks_nodata": "tasks:\n  - plugin: toyseg\n",
                       "delta_neg": "delta: -1\n", "clip0": "clip_norm: 0\n", "nc0": "num_classes: 0\n",
                       "filters_vectors": "filters: 8\nvectors: 4\n"}.items():
        write(root / "yaml" / f"{name}.yaml", text)
    return root


def listing(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


F = ["fuse", "{w}/scenes/ir", "{w}/scenes/vis", "--device", "cpu", "-q"]
FO = [*F, "-o", "{w}/out"]
T = ["train-base", "{w}/scenes", "--device", "cpu", "-q"]
TO = [*T, "-o", "{w}/out/m.safetensors"]
C0 = ["compensate", "--plugin", "toyseg", "--data", "{w}/fmb", "--device", "cpu", "-q", "--steps", "1"]
SEG = ["--task-weights", "{w}/seg.safetensors"]
C = [*C0, *SEG]
CO = [*C, "-o", "{w}/out/r.safetensors"]
E = ["eval", "{w}/scenes/ir", "{w}/scenes/vis", "{w}/fused", "-q"]
ET = ["eval", "--task", "toyseg", "--data", "{w}/fmb", "{w}/fmb/test/Visible", *SEG, "--device", "cpu", "-q"]
X = ["export", "--no-check", "-q"]
S = ["synth", "-q", "--n", "1", "--size", "32x32"]

CASES = [
    # fuse
    ("fuse-missing-ir", ["fuse", "{w}/nosuch", "{w}/scenes/vis", "-o", "{w}/out"], "nosuch"),
    ("fuse-empty-folder", ["fuse", "{w}/empty", "{w}/scenes/vis", "-o", "{w}/out"], "empty"),
    ("fuse-unmatched", ["fuse", "{w}/unmatched/ir", "{w}/unmatched/vis", "-o", "{w}/out"], "unmatched"),
    ("fuse-broken-image", ["fuse", "{w}/broken/ir", "{w}/broken/vis", "-o", "{w}/out"], "0.png"),
    ("fuse-pixel-bomb", ["fuse", "{w}/bomb/ir", "{w}/bomb/vis", "-o", "{w}/out"], "--max-pixels"),
    ("fuse-max-pixels-small", [*FO, "--max-pixels", "100"], "--max-pixels"),
    ("fuse-max-pixels-zero", [*FO, "--max-pixels", "0"], "--max-pixels"),
    ("fuse-size-mismatch", ["fuse", "{w}/mismatch/ir", "{w}/mismatch/vis", "-o", "{w}/out"], "--resize"),
    ("fuse-tile-small", [*FO, "--tile", "10"], "--tile"),
    ("fuse-tile-word", [*FO, "--tile", "abc"], "--tile"),
    ("fuse-output-is-file", [*F, "-o", "{w}/file"], "file"),
    ("fuse-output-parent-is-file", [*F, "-o", "{w}/file/out"], "file"),
    ("fuse-base-folder", [*FO, "--base", "{w}/folder"], "folder"),
    ("fuse-base-missing", [*FO, "--base", "{w}/nosuch.safetensors"], "nosuch.safetensors"),
    ("fuse-base-text", [*FO, "--base", "{w}/text.safetensors"], "text.safetensors"),
    ("fuse-base-blocks-word", [*FO, "--base", "{w}/four.safetensors"], "blocks"),
    ("fuse-base-blocks-zero", [*FO, "--base", "{w}/zero.safetensors"], "blocks"),
    ("fuse-base-foreign", [*FO, "--base", "{w}/state.safetensors"], "state.safetensors"),
    ("fuse-task-without-rsc", [*FO, "--task", "toyseg"], "--rsc"),
    ("fuse-rsc-without-task", [*FO, "--rsc", "{w}/base.safetensors"], "--task"),
    ("fuse-unknown-task", [*FO, "--task", "nosuch", "--rsc", "{w}/base.safetensors"], "nosuch"),
    ("fuse-rsc-missing", [*FO, "--task", "toyseg", "--rsc", "{w}/nosuch.safetensors", *SEG], "nosuch.safetensors"),
    ("fuse-rsc-is-base", [*FO, "--task", "toyseg", "--rsc", "{w}/base.safetensors", *SEG], "base.safetensors"),
    ("fuse-task-without-weights", [*FO, "--task", "toyseg", "--rsc", "{w}/base.safetensors"], "--task-weights"),
    ("fuse-base-and-rsc", [*FO, "--task", "toyseg", "--rsc", "{w}/x", "--base", "{w}/base.safetensors"], "--base"),
    ("fuse-device-unknown", [*FO, "--device", "tpu"], "tpu"),
    ("fuse-unknown-option", [*FO, "--bogus"], "--bogus"),
    ("fuse-missing-output", F, "--output"),
    # train-base
    ("train-config-missing", [*TO, "--config", "{w}/nosuch.yaml"], "nosuch.yaml"),
    ("train-config-folder", [*TO, "--config", "{w}/folder"], "is a folder"),
    ("train-config-syntax", [*TO, "--config", "{w}/yaml/syntax.yaml"], "syntax.yaml"),
    ("train-config-list", [*TO, "--config", "{w}/yaml/list.yaml"], "list.yaml"),
    ("train-config-lr-word", [*TO, "--config", "{w}/yaml/lr_word.yaml"], "lr in"),
    ("train-config-lr-zero", [*TO, "--config", "{w}/yaml/lr0.yaml"], "lr in"),
    ("train-config-lr-inf", [*TO, "--config", "{w}/yaml/lr_inf.yaml"], "lr in"),
    ("train-config-steps-zero", [*TO, "--config", "{w}/yaml/steps0.yaml"], "steps in"),
    ("train-config-steps-negative", [*TO, "--config", "{w}/yaml/steps_neg.yaml"], "steps in"),
    ("train-config-steps-fraction", [*TO, "--config", "{w}/yaml/steps_tiny.yaml"], "steps in"),
    ("train-config-epochs-zero", [*TO, "--config", "{w}/yaml/epochs0.yaml"], "epochs in"),
    ("train-config-blocks-zero", [*TO, "--config", "{w}/yaml/blocks0.yaml"], "blocks in"),
    ("train-config-blocks-word", [*TO, "--config", "{w}/yaml/blocks_word.yaml"], "blocks in"),
    ("train-config-batch-fraction", [*TO, "--config", "{w}/yaml/batch_frac.yaml"], "batch_size in"),
    ("train-config-crop-small", [*TO, "--config", "{w}/yaml/crop8.yaml"], "crop in"),
    ("train-config-unknown-key", [*TO, "--config", "{w}/yaml/unknown.yaml"], "speed"),
    ("train-config-seed-negative", [*TO, "--config", "{w}/yaml/seed_neg.yaml"], "seed in"),
    ("train-config-checkpoint-zero", [*TO, "--config", "{w}/yaml/ckpt0.yaml"], "checkpoint_every in"),
    ("train-steps-zero", [*TO, "--steps", "0"], "--steps"),
    ("train-lr-negative", [*TO, "--lr", "-1"], "--lr"),
    ("train-lr-zero", [*TO, "--lr", "0"], "--lr"),
    ("train-blocks-zero", [*TO, "--blocks", "0"], "--blocks"),
    ("train-seed-negative", [*TO, "--seed", "-1"], "--seed"),
    ("train-output-folder", [*T, "-o", "{w}/folder"], "folder"),
    ("train-output-parent-is-file", [*T, "-o", "{w}/file/m.safetensors"], "file"),
    ("train-data-missing", ["train-base", "{w}/nosuch", "-o", "{w}/out/m.safetensors"], "nosuch"),
    ("train-data-empty", ["train-base", "{w}/empty", "-o", "{w}/out/m.safetensors"], "empty"),
    ("train-one-pixel-images", ["train-base", "{w}/tiny", "-o", "{w}/out/m.safetensors", "-q"], "16x16"),
    ("train-resume-without-state", [*TO, "--resume"], "--resume"),
    ("train-resume-hollow-state", [*T, "-o", "{w}/hollow/m.safetensors", "--resume", "--crop", "16", "--steps", "2"],
     "m.train-state.safetensors"),
    ("train-max-pixels", [*TO, "--max-pixels", "100"], "--max-pixels"),
    ("train-resume-foreign-log", [*T, "-o", "{w}/hollow/m.safetensors", "--resume", "--crop", "16", "--steps", "2",
                                  "--log", "{w}/file"], "not a loss log"),
    # compensate
    ("comp-config-tau-zero", [*CO, "--config", "{w}/yaml/tau0.yaml"], "tau in"),
    ("comp-config-embed-dim", [*CO, "--config", "{w}/yaml/embed6.yaml"], "embed_dim in"),
    ("comp-config-precision", [*CO, "--config", "{w}/yaml/fp16.yaml"], "precision in"),
    ("comp-config-sets", [*CO, "--config", "{w}/yaml/sets3.yaml"], "sets in"),
    ("comp-config-delta-negative", [*CO, "--config", "{w}/yaml/delta_neg.yaml"], "delta in"),
    ("comp-config-clip-zero", [*CO, "--config", "{w}/yaml/clip0.yaml"], "clip_norm in"),
    ("comp-config-lr-word", [*CO, "--config", "{w}/yaml/lr_word.yaml"], "lr in"),
    ("comp-config-tasks-not-list", [*CO, "--config", "{w}/yaml/tasks_str.yaml"], "tasks"),
    ("comp-config-task-without-data", [*CO, "--config", "{w}/yaml/tasks_nodata.yaml"], "data"),
    ("comp-config-filters-above-vectors", [*CO, "--config", "{w}/yaml/filters_vectors.yaml"], "filters"),
    ("comp-config-folder", [*CO, "--config", "{w}/folder"], "is a folder"),
    # toyseg reads its network settings from its weights (a --task-config beside them is refused)
    ("comp-task-weights-classes-word", [*C0, "-o", "{w}/out/r.safetensors", "--task-weights",
                                        "{w}/segs/nc_word.safetensors"], "num_classes in"),
    ("comp-task-weights-classes-negative", [*C0, "-o", "{w}/out/r.safetensors", "--task-weights",
                                            "{w}/segs/nc_neg.safetensors"], "num_classes in"),
    ("comp-task-weights-classes-zero", [*C0, "-o", "{w}/out/r.safetensors", "--task-weights",
                                        "{w}/segs/nc0.safetensors"], "num_classes in"),
    ("comp-task-config-with-weights", [*CO, "--task-config", "{w}/yaml/nc0.yaml"], "not both"),
    ("comp-without-task-weights", [*C0, "-o", "{w}/out/r.safetensors"], "--task-weights"),
    ("comp-unknown-plugin", ["compensate", "--plugin", "nosuch", "--data", "{w}/fmb", "-o", "{w}/out/r.safetensors"],
     "nosuch"),
    ("comp-plugin-without-data", ["compensate", "--plugin", "toyseg", "-o", "{w}/out/r.safetensors"], "--data"),
    ("comp-no-task", ["compensate", "-o", "{w}/out/r.safetensors"], "--plugin"),
    ("comp-log-folder", [*CO, "--log", "{w}/folder"], "--log"),
    ("comp-log-parent-is-file", [*CO, "--log", "{w}/file/r.csv"], "--log"),
    ("comp-output-folder", [*C, "-o", "{w}/folder"], "folder"),
    ("comp-output-parent-is-file", [*C, "-o", "{w}/file/r.safetensors"], "--output"),
    ("comp-base-folder", [*CO, "--base", "{w}/folder"], "folder"),
    ("comp-resume-without-state", [*CO, "--resume"], "--resume"),
    ("comp-resume-hollow-state", [*C, "-o", "{w}/hollow/r.safetensors", "--resume"], "r.train-state.safetensors"),
    ("comp-resume-foreign-log", [*C, "-o", "{w}/hollow/r.safetensors", "--resume", "--log", "{w}/file"],
     "not a loss log"),
    ("comp-precision-bf16-on-cpu", [*CO, "--precision", "bf16"], "bf16"),
    ("comp-rsc-blocks-too-many", [*CO, "--rsc-blocks", "9"], "--rsc-blocks"),
    ("comp-delta-negative", [*CO, "--delta", "-1"], "--delta"),
    ("comp-data-missing", ["compensate", "--plugin", "toyseg", "--data", "{w}/nosuch", "-o", "{w}/out/r.safetensors", *SEG,
                           "-q", "--device", "cpu"], "nosuch"),
    ("comp-task-weights-missing", [*C0, "-o", "{w}/out/r.safetensors", "--task-weights", "{w}/nosuch.safetensors"],
     "nosuch.safetensors"),
    # eval
    ("eval-fused-missing", ["eval", "{w}/scenes/ir", "{w}/scenes/vis", "{w}/nosuch"], "nosuch"),
    ("eval-json-folder", [*E, "--json", "{w}/folder"], "--json"),
    ("eval-json-parent-is-file", [*E, "--json", "{w}/file/m.json"], "--json"),
    ("eval-csv-folder", [*E, "--csv", "{w}/folder"], "--csv"),
    ("eval-report-is-file", [*E, "--report", "{w}/file"], "--report"),
    ("eval-unknown-metric", [*E, "--metrics", "NOPE"], "--metrics"),
    ("eval-unknown-convention", [*E, "--convention", "nope"], "--convention"),
    ("eval-workers-negative", [*E, "--workers", "-1"], "--workers"),
    ("eval-max-pixels", [*E, "--max-pixels", "100"], "--max-pixels"),
    ("eval-pixel-bomb", ["eval", "{w}/bomb/ir", "{w}/bomb/vis", "{w}/bomb/vis"], "--max-pixels"),
    ("eval-task-json-folder", [*ET, "--json", "{w}/folder"], "--json"),
    ("eval-task-report-is-file", [*ET, "--report", "{w}/file"], "--report"),
    ("eval-task-max-pixels", [*ET, "--max-pixels", "100"], "--max-pixels"),
    ("eval-task-without-weights", ["eval", "--task", "toyseg", "--data", "{w}/fmb", "{w}/fmb/test/Visible"],
     "--task-weights"),
    # export
    ("export-output-folder", [*X, "-o", "{w}/folder"], "folder"),
    ("export-output-parent-is-file", [*X, "-o", "{w}/file/m.onnx"], "file"),
    ("export-opset-low", [*X, "-o", "{w}/out/m.onnx", "--opset", "5"], "--opset"),
    ("export-base-folder", [*X, "-o", "{w}/out/m.onnx", "--base", "{w}/folder"], "folder"),
    ("export-base-blocks-word", [*X, "-o", "{w}/out/m.onnx", "--base", "{w}/four.safetensors"], "blocks"),
    # synth
    ("synth-size-huge", [*S[:-2], "{w}/out", "--size", "100000x100000"], "--max-pixels"),
    ("synth-size-word", [*S[:-2], "{w}/out", "--size", "big"], "--size"),
    ("synth-size-small", [*S[:-2], "{w}/out", "--size", "8x8"], "--size"),
    ("synth-seed-negative", [*S, "{w}/out", "--seed", "-1"], "--seed"),
    ("synth-n-zero", [*S[:1], "{w}/out", "--n", "0"], "--n"),
    ("synth-layout-unknown", [*S, "{w}/out", "--layout", "nope"], "--layout"),
    ("synth-out-is-file", [*S, "{w}/file"], "file"),
    ("synth-out-parent-is-file", [*S, "{w}/file/out"], "file"),
    ("synth-max-pixels", [*S, "{w}/out", "--max-pixels", "100"], "--max-pixels"),
    # plugins and the app itself
    ("plugins-unknown-option", ["plugins", "--bogus"], "--bogus"),
    ("unknown-command", ["fusion"], "fusion"),
]


def test_there_are_at_least_80_cases_over_every_command() -> None:
    assert len(CASES) >= 80
    commands = {argv[0] for _, argv, _ in CASES}
    assert {"fuse", "train-base", "compensate", "eval", "export", "synth", "plugins"} <= commands


@pytest.mark.parametrize("argv, token", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(w: Path, argv: list[str], token: str) -> None:
    before = listing(w)
    result = runner.invoke(app, [a.format(w=w) for a in argv])
    stderr = result.stderr.strip()
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    assert "Traceback" not in result.output
    assert len(stderr.splitlines()) == 1 and stderr.startswith("error: "), stderr
    assert token in stderr, stderr
    assert listing(w) == before


def test_export_without_onnx_is_one_line(w: Path, monkeypatch) -> None:
    import sys

    for name in ("onnx", "onnxruntime"):
        monkeypatch.setitem(sys.modules, name, None)  # as if not installed
    result = runner.invoke(app, ["export", "-o", str(w / "out" / "m.onnx")])
    assert result.exit_code == 2 and result.stderr.strip() == \
        "error: exporting needs the onnx and onnxruntime packages: pip install 'cldyn[export]'"
    assert not (w / "out").exists()


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_output_folder_is_refused_before_work(w: Path, tmp_path: Path) -> None:
    locked = tmp_path / "ro"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        for argv in ([*F, "-o", str(locked / "out")], [*T, "-o", str(locked / "m.safetensors")]):
            result = runner.invoke(app, [a.format(w=w) for a in argv])
            assert result.exit_code == 2 and "not writable" in result.stderr
    finally:
        locked.chmod(0o700)


def test_unwritable_folder_is_refused_before_work_even_as_root(w: Path, tmp_path: Path, monkeypatch) -> None:
    """Root ignores permission bits, so the refusal the kernel would give is simulated."""
    import tempfile

    from cldyn_cli import outputs

    real = tempfile.mkstemp

    def refuse(*args, dir=None, **kwargs):
        if Path(dir) == tmp_path:
            raise PermissionError(13, "Permission denied")
        return real(*args, dir=dir, **kwargs)

    monkeypatch.setattr(outputs.tempfile, "mkstemp", refuse)
    for argv in ([*F, "-o", str(tmp_path / "out")], [*T, "-o", str(tmp_path / "m.safetensors")],
                 [*S, str(tmp_path / "scenes")]):
        result = runner.invoke(app, [a.format(w=w) for a in argv])
        assert result.exit_code == 2
        assert result.stderr.strip().endswith(f"{tmp_path} is not writable (Permission denied); choose another "
                                              "location")
    assert list(tmp_path.iterdir()) == []

