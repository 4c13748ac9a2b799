"""ONNX export: the graphs (base, and compensated for a task) run in onnxruntime at other sizes and match
`cldyn fuse`'s pipeline."""

from pathlib import Path

import numpy as np
import onnxruntime
import pytest
import torch
from typer.testing import CliRunner

from cldyn_cli.cli import create_app
from cldyn_cli.export import FusionGraph, compensated_reference
from cldyn_cli.fusion import Fuser, fuse_images
from cldyn_cli.models.loading import load_compensation, load_vfn, save_compensation
from cldyn_cli.models.rsc import RSCConfig, SemanticCompensation
from cldyn_cli.plugins import get_task
from cldyn_cli.tasks import TaskOptions

app = create_app()

runner = CliRunner()


def test_export_matches_the_fuse_pipeline(tmp_path: Path) -> None:
    result = runner.invoke(app, ["export", "-o", str(tmp_path / "m.onnx")])
    assert result.exit_code == 0, result.output
    assert "max difference" in result.output
    rng = np.random.default_rng(0)
    ir, vis = rng.random((37, 53), dtype=np.float32), rng.random((37, 53, 3), dtype=np.float32)
    session = onnxruntime.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    (out,) = session.run(None, {"ir": ir[None, None], "vis": vis.transpose(2, 0, 1)[None]})
    expected = fuse_images(Fuser(load_vfn()[0], torch.device("cpu")), ir, vis)
    assert out.shape == (1, 3, 37, 53)
    assert np.abs(out[0].transpose(1, 2, 0) - expected).max() < 1e-4


def test_export_refuses_a_folder_and_a_foreign_checkpoint(tmp_path: Path) -> None:
    result = runner.invoke(app, ["export", "-o", str(tmp_path)])
    assert result.exit_code == 2 and "is a folder" in result.output
    (tmp_path / "x.safetensors").write_bytes(b"junk")
    result = runner.invoke(app, ["export", "-o", str(tmp_path / "m.onnx"), "--base", str(tmp_path / "x.safetensors")])
    assert result.exit_code == 2 and not (tmp_path / "m.onnx").exists()


def test_export_refuses_an_existing_file_unless_overwrite(tmp_path: Path) -> None:
    out = tmp_path / "m.onnx"
    out.write_bytes(b"an earlier export")
    result = runner.invoke(app, ["export", "-o", str(out), "--no-check"])
    assert result.exit_code == 2 and "already exist" in result.output and "--overwrite" in result.output
    assert out.read_bytes() == b"an earlier export"
    result = runner.invoke(app, ["export", "-o", str(out), "--no-check", "--overwrite", "--quiet"])
    assert result.exit_code == 0, result.output
    assert out.read_bytes() != b"an earlier export" and not list(tmp_path.glob(".m.onnx.*"))


@pytest.fixture(scope="module")
def live_compensation(tmp_path_factory) -> Path:
    """A compensation for toyseg on the shipped base, with non-zero injections (as after training)."""
    torch.manual_seed(0)
    compensation = SemanticCompensation(RSCConfig(blocks=1, embed_dim=32, vectors=8))
    for branch in compensation.branches.values():
        torch.nn.init.normal_(branch.blocks[0].inject.weight, std=0.5)
    path = tmp_path_factory.mktemp("rsc") / "rsc.safetensors"
    save_compensation(compensation.eval(), load_vfn()[0], path, {"tasks": [{"task": "toyseg", "feature_layer": "mid"}]})
    return path


def test_compensated_export_matches_the_pytorch_path(live_compensation: Path, tmp_path: Path) -> None:
    onnx_path = tmp_path / "toyseg.onnx"
    result = runner.invoke(app, ["export", "--task", "toyseg", "--rsc", str(live_compensation), "--height", "48",
                                 "--width", "64", "-o", str(onnx_path)])
    assert result.exit_code == 0, result.output
    assert "max difference" in result.output
    # Another batch size and image size than the traced ones: both are dynamic for toyseg.
    gen = torch.Generator().manual_seed(1)
    ir, vis = torch.rand(3, 1, 40, 52, generator=gen), torch.rand(3, 3, 40, 52, generator=gen)
    session = onnxruntime.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    (out,) = session.run(None, {"ir": ir.numpy(), "vis": vis.numpy()})
    compensation, base, _ = load_compensation(live_compensation)
    task = get_task("toyseg").load(TaskOptions())
    with torch.no_grad():
        expected = compensated_reference(base, compensation, task)(ir, vis)
        base_only = FusionGraph(base)(ir, vis)
    assert out.shape == (3, 3, 40, 52)
    assert np.abs(out - expected.numpy()).max() <= 1e-4
    assert np.abs(out - base_only.numpy()).max() > 1e-2  # the compensation is in the graph


def test_compensated_export_needs_task_and_rsc_together(live_compensation: Path, tmp_path: Path) -> None:
    result = runner.invoke(app, ["export", "--task", "toyseg", "-o", str(tmp_path / "m.onnx")])
    assert result.exit_code == 2 and "--task and --rsc go together" in result.output
    result = runner.invoke(app, ["export", "--task", "toyseg", "--rsc", str(live_compensation), "--base",
                                 str(live_compensation), "-o", str(tmp_path / "m.onnx")])
    assert result.exit_code == 2 and "--base cannot be combined" in result.output


def test_a_task_without_a_feature_network_cannot_be_exported(live_compensation: Path, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """Plugins that offer no exportable network (the default) get one clear line, and no file."""
    from cldyn_cli.builtin_tasks.toyseg import ToySegBackend
    from cldyn_cli.tasks import TaskBackend

    monkeypatch.setattr(ToySegBackend, "feature_network", TaskBackend.feature_network)
    result = runner.invoke(app, ["export", "--task", "toyseg", "--rsc", str(live_compensation),
                                 "-o", str(tmp_path / "m.onnx")])
    assert result.exit_code == 2
    assert result.output.strip() == ("error: task 'toyseg' cannot be exported to ONNX: its plugin offers no "
                                     "exportable feature network; export the base network alone (without --task)")
    assert not (tmp_path / "m.onnx").exists()


def test_missing_onnx_is_one_line(tmp_path, monkeypatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "onnx", None)  # as if not installed
    result = runner.invoke(app, ["export", "-o", str(tmp_path / "m.onnx")])
    assert result.exit_code == 2 and result.output.strip().splitlines() == [
        "error: exporting needs the onnx package: pip install 'cldyn[export]'"]
    assert not (tmp_path / "m.onnx").exists()


def test_missing_onnxruntime_is_refused_before_work_unless_no_check(tmp_path, monkeypatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # as if not installed
    result = runner.invoke(app, ["export", "-o", str(tmp_path / "m.onnx")])
    assert result.exit_code == 2 and result.output.strip().splitlines() == [
        "error: exporting needs the onnxruntime package: pip install 'cldyn[export]' (or pass --no-check)"]
    assert not (tmp_path / "m.onnx").exists()
    assert runner.invoke(app, ["export", "-o", str(tmp_path / "m.onnx"), "--no-check", "-q"]).exit_code == 0
    assert (tmp_path / "m.onnx").exists()


@pytest.mark.parametrize("prior", ["max", "poisson"])
def test_export_keeps_the_residual_output_and_its_clipped_stretch_at_other_sizes(tmp_path: Path, prior: str) -> None:
    from cldyn_cli.export import check_onnx, export_onnx
    from cldyn_cli.models.vfn import VFN, VFNConfig

    torch.manual_seed(0)
    base = VFN(VFNConfig(blocks=1, residual=True, stretch=True, stretch_clip=0.01, prior=prior)).eval()
    torch.nn.init.normal_(base.decoder.head[3].weight, std=0.3)  # a non-trivial correction of its prior
    export_onnx(base, tmp_path / "s.onnx")
    graph = FusionGraph(base).eval()
    for height, width in [(75, 101), (40, 33)]:
        assert check_onnx(graph, tmp_path / "s.onnx", height, width) < 1e-4
