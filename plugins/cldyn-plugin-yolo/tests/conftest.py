"""Test setup: Ultralytics offline with throw-away settings, the network blocked, tiny models and data.

Ultralytics reads its settings directory when it is first imported, so the environment is set in
``pytest_configure``, before any test module imports it.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest
import torch

torch.set_num_threads(1)  # tiny ops are fastest single-threaded (and the CI machine has 2 cores)

from cldyn_cli.testing import NetworkUsed
from yolo_testdata import COCO_LIKE, FAMILIES, NAMES, TINY_RTDETR_YAML, TINY_YAML, Family

_home: str | None = None


def pytest_configure(config: pytest.Config) -> None:
    global _home
    _home = tempfile.mkdtemp(prefix="cldyn-yolo-tests-")
    os.environ["CLDYN_YOLO_DIR"] = _home
    os.environ["YOLO_CONFIG_DIR"] = str(Path(_home) / "config")  # what the plugin sets too; explicit here
    os.environ["YOLO_OFFLINE"] = "1"


def pytest_unconfigure(config: pytest.Config) -> None:
    if _home is not None:
        shutil.rmtree(_home, ignore_errors=True)


@pytest.fixture(autouse=True)
def offline(no_network: list[str], monkeypatch: pytest.MonkeyPatch):
    """Every test runs with the network cut off (cldyn's ``no_network``) and Ultralytics' downloads
    refused; font checks are recorded, so a test can see that they stayed local."""
    downloads: list[str] = []
    import cldyn_plugin_yolo._env as env

    env.ultralytics_ready()
    import ultralytics.utils.checks as checks
    import ultralytics.utils.downloads as dl

    def no_download(*args, **kwargs):
        downloads.append(str(kwargs.get("url") or args[:1]))
        raise NetworkUsed(f"download attempted in a test: {downloads[-1]}")

    monkeypatch.setattr(dl, "safe_download", no_download)
    real_check_font = checks.check_font
    fonts: list[str] = []

    def watched_check_font(font="Arial.ttf"):
        fonts.append(str(font))
        return real_check_font(font)

    monkeypatch.setattr(checks, "check_font", watched_check_font)
    import ultralytics.data.utils as data_utils  # imports check_font by name

    monkeypatch.setattr(data_utils, "check_font", watched_check_font)
    yield {"attempts": no_network, "downloads": downloads, "fonts": fonts}
    assert not downloads, f"a download was attempted: {downloads}"


def _save_tiny(yaml: Path, names: list[str], path: Path) -> Path:
    """A tiny detector saved the Ultralytics way (``YOLO(...).save``, an RT-DETR for an RT-DETR YAML)."""
    import cldyn_plugin_yolo._env as env

    env.ultralytics_ready()
    from ultralytics import YOLO

    definition = path.with_suffix(".yaml")  # the model YAML with as many classes as names
    definition.write_text(yaml.read_text().replace("\nnc: 6\n", f"\nnc: {len(names)}\n"))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = YOLO(str(definition), task="detect")
    assert model.model.model[-1].nc == len(names)
    model.model.names = dict(enumerate(names))
    model.save(str(path))
    return path


@pytest.fixture(scope="session")
def tiny_pt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny YOLO detector as a .pt, with M3FD class names."""
    return _save_tiny(TINY_YAML, NAMES, tmp_path_factory.mktemp("weights") / "tiny.pt")


@pytest.fixture(scope="session")
def tiny_rtdetr_pt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny RT-DETR as a .pt, with M3FD class names."""
    return _save_tiny(TINY_RTDETR_YAML, NAMES, tmp_path_factory.mktemp("weights") / "tiny-rtdetr.pt")


@pytest.fixture(scope="session")
def coco_like(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Tiny detectors of each family with other classes than the data's (lower-case, like COCO's)."""
    folder = tmp_path_factory.mktemp("weights")
    return {f.name: _save_tiny(f.yaml, COCO_LIKE, folder / f"coco-like-{f.name}.pt") for f in FAMILIES}


@pytest.fixture(params=FAMILIES, ids=lambda family: family.name)
def family(request: pytest.FixtureRequest) -> Family:
    """Each detector family in turn (tests taking it run once per family)."""
    return request.param


@pytest.fixture
def family_pt(family: Family, request: pytest.FixtureRequest) -> Path:
    """The tiny .pt of the family under test."""
    return request.getfixturevalue("tiny_pt" if family.name == "yolo" else f"tiny_{family.name}_pt")


@pytest.fixture
def coco_like_pt(family: Family, coco_like: dict[str, Path]) -> Path:
    """The detector of the family under test with COCO-like classes."""
    return coco_like[family.name]


@pytest.fixture(scope="session")
def task_config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A --task-config for 64x64 tests."""
    path = tmp_path_factory.mktemp("config") / "det.yaml"
    path.write_text("names: [People, Car, Bus, Motorcycle, Lamp, Truck]\nimgsz: 64\n")
    return path


@pytest.fixture(scope="session")
def m3fd(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Six synthetic scenes of 80x64 in the M3FD layout (scene 1 is test, the other five train)."""
    from cldyn_cli.data.synth import write_dataset

    root = tmp_path_factory.mktemp("m3fd")
    write_dataset(root, 6, 80, 64, seed=3, layout="m3fd")
    return root
