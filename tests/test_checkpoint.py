"""Checkpoints: round trip, metadata, and clear errors for foreign or corrupt files."""

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from cldyn_cli.errors import UserError
from cldyn_cli.models.loading import embedded_base_path, load_vfn, save_vfn
from cldyn_cli.models.vfn import VFN, VFNConfig


def test_round_trip_keeps_weights_config_and_provenance(tmp_path: Path) -> None:
    model = VFN(VFNConfig(blocks=2))
    save_vfn(model, tmp_path / "m.safetensors", {"steps": 3, "seed": 7})
    loaded, meta = load_vfn(tmp_path / "m.safetensors")
    assert loaded.config.blocks == 2
    assert meta["format"] == "cldyn.vfn" and '"seed": 7' in meta["provenance"]
    for (k, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), k
    assert [p.name for p in tmp_path.iterdir()] == ["m.safetensors"]  # no temp files left


def test_foreign_safetensors_is_refused(tmp_path: Path) -> None:
    save_file({"w": torch.zeros(2)}, tmp_path / "other.safetensors")
    with pytest.raises(UserError, match="not a cldyn checkpoint; expected 'cldyn.vfn'"):
        load_vfn(tmp_path / "other.safetensors")


def test_corrupt_and_missing_files_are_user_errors(tmp_path: Path) -> None:
    (tmp_path / "bad.safetensors").write_bytes(b"\x00\x01garbage")
    with pytest.raises(UserError, match="not a readable safetensors checkpoint"):
        load_vfn(tmp_path / "bad.safetensors")
    with pytest.raises(UserError, match="does not exist"):
        load_vfn(tmp_path / "missing.safetensors")


def test_embedded_model_loads_with_provenance() -> None:
    model, meta = load_vfn()
    assert embedded_base_path().is_file()
    assert model.config.blocks == 2 and model.config.residual and model.config.stretch  # the shipped recipe
    assert model.config.prior == "poisson"
    provenance = json.loads(meta["provenance"])
    assert (provenance["pairs"], provenance["steps"], provenance["seed"]) == (171, 1200, 0)
    assert provenance["data"].endswith("roadscene-non-benchmark") and len(provenance["git_commit"]) >= 40
