"""A third-party plugin as the guide describes it: its own pyproject.toml in a temporary folder,
installed with pip, listed, then compensate, fuse --task and eval --task through the cldyn CLI."""

from __future__ import annotations

import importlib
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors.torch import save_file
from typer.testing import CliRunner

from cldyn_cli import plugins
from cldyn_cli.cli import create_app
from cldyn_cli.data.synth import write_dataset
from cldyn_cli.tasks import TaskOptions

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "plugin_example"


def guide_pyproject() -> str:
    """The guide's complete pyproject.toml (its only toml block)."""
    [block] = re.findall(r"```toml\n(.*?)```", (ROOT / "docs" / "writing-a-plugin.md").read_text(), re.S)
    return block


@pytest.fixture
def installed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The example plugin built from the guide's pyproject.toml and pip-installed into a private site folder."""
    source, site = tmp_path / "src", tmp_path / "site"
    source.mkdir()
    (source / "pyproject.toml").write_text(guide_pyproject())
    shutil.copy(EXAMPLE / "cldyn_plugin_example.py", source)
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                    "--no-index", "--disable-pip-version-check", "--target", str(site), str(source)],
                   check=True, capture_output=True)
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.delenv("CLDYN_PLUGINS", raising=False)
    importlib.invalidate_caches()
    plugins.reset()
    yield site
    plugins.reset()
    sys.modules.pop("cldyn_plugin_example", None)


def test_the_guide_shows_the_example_pyproject() -> None:
    assert guide_pyproject() == (EXAMPLE / "pyproject.toml").read_text()


def test_a_plugin_from_the_guide_installs_and_runs_the_closed_loop(installed: Path, tmp_path: Path) -> None:
    runner, app = CliRunner(), create_app()

    def cldyn(*args: object) -> str:
        result = runner.invoke(app, [str(a) for a in args])
        assert result.exit_code == 0, result.output
        return result.output

    listed = {p["name"]: p for p in json.loads(cldyn("plugins", "--json"))}
    assert listed["example"]["package"] == "cldyn-plugin-example" and listed["example"]["version"] == "0.1.0"
    assert listed["example"]["tasks"] == ["example-sod"] and listed["example"]["error"] is None
    assert listed["example"]["hooks"] == ["register_commands", "register_tasks"]

    data = tmp_path / "vt5000"
    write_dataset(data, n=6, width=32, height=32, seed=0, layout="vt5000")
    weights = tmp_path / "sod.safetensors"  # the seeded network stands in for trained weights
    save_file(plugins.get_task("example-sod").load(TaskOptions()).net.state_dict(), str(weights))
    (tmp_path / "small.yaml").write_text("embed_dim: 32\nvectors: 8\nbatch_size: 2\n")
    rsc = tmp_path / "rsc.safetensors"
    cldyn("compensate", "--plugin", "example", "--data", data, "--task-weights", weights, "--config",
          tmp_path / "small.yaml", "--steps", "2", "--device", "cpu", "--quiet", "-o", rsc)
    test = data / "Test"
    cldyn("fuse", test / "T", test / "RGB", "-o", tmp_path / "fused", "--task", "example-sod", "--rsc", rsc,
          "--task-weights", weights, "--device", "cpu", "--quiet")
    assert len(list((tmp_path / "fused").glob("*.png"))) == len(list((test / "RGB").iterdir()))
    cldyn("eval", "--task", "example-sod", "--data", data, "--split", "test", tmp_path / "fused",
          "--task-weights", weights, "--json", tmp_path / "m.json", "--device", "cpu", "--quiet")
    scores = json.loads((tmp_path / "m.json").read_text())["methods"]["fused"]
    assert scores["images"] == len(list((test / "RGB").iterdir())) and 0 <= scores["metrics"]["MAE"] <= 1
    assert "taps 'encoder'" in cldyn("example", "info")
