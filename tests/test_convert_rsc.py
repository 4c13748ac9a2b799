"""The authors' RSC checkpoint converted to ours computes the same blocks.

The always-run test builds a checkpoint from a module with their layout (tests/authors_layout.py);
with CLDYN_AUTHORS_CODE set to a folder holding their code, their own A2SI is checked as well.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from authors_code import import_authors_a2si
from authors_layout import LayoutA2SI, LayoutRSC, randomise
from cldyn_cli.errors import UserError
from cldyn_cli.models.convert import convert_authors_rsc_checkpoint, slot_major_rows
from cldyn_cli.models.loading import load_authors_compensation
from cldyn_cli.models.rsc import A2SI, SemanticCompensation

SHAPE = dict(embed_dim=32, inC=8, filter_num=4, set_num=4, vector_num=8)


def authors_checkpoint(path: Path, blocks: int = 2) -> tuple[dict[str, LayoutRSC], torch.Tensor]:
    """Their two branches and bank, saved as their training script does (bank in bfloat16)."""
    branches = {}
    for seed, name in enumerate(("rsc_ir", "rsc_vi")):
        branches[name] = LayoutRSC(blocks, **SHAPE)
        randomise(branches[name], seed)
    bank = torch.randn(4 * 8, 32, generator=torch.Generator().manual_seed(9)).bfloat16()
    torch.save({name: rsc.state_dict() for name, rsc in branches.items()} | {"rsc_optimizer": {}, "bvb": bank}, path)
    return branches, bank.float().view(4, 8, 32)


def compare(theirs: torch.nn.Module, ours: A2SI, bank: torch.Tensor, our_bank: torch.Tensor, train: bool) -> None:
    """Same inputs and Gumbel noise; several kernel types must be in play for the check to mean much."""
    task, x = torch.randn(6, 5, 3, 4), torch.randn(6, 8, 10, 12)
    theirs.train(train)
    ours.train(train)
    ours.sample = True
    with torch.no_grad():
        torch.manual_seed(7)
        expected = theirs(bank, task, x)
        torch.manual_seed(7)
        got = ours(our_bank, task, x)
        torch.manual_seed(7)
        types = ours.choose_types(task.reshape(6, 1, -1), ours.image_embeddings(x)[0]).argmax(-1)
    assert len(types.unique()) >= 2
    assert not torch.allclose(expected, x, atol=1e-3)  # the block does something
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_their_query_rows_become_slot_major() -> None:
    rows = torch.arange(16 * 3)  # theirs: d*M + m with M = 3
    converted = slot_major_rows(rows, 3)
    assert converted[1 * 16 + 5] == 5 * 3 + 1  # ours m*16 + d for m = 1, d = 5


@pytest.mark.parametrize("train", [False, True])
def test_converted_checkpoint_computes_their_blocks(tmp_path: Path, train: bool) -> None:
    branches, bank = authors_checkpoint(tmp_path / "ckpt_best_3.pth")
    compensation = load_authors_compensation(tmp_path / "ckpt_best_3.pth")
    assert compensation.config.blocks == 2 and compensation.config.vectors == 8
    torch.testing.assert_close(compensation.bank(), bank, atol=0, rtol=0)
    for theirs_name, ours_name in (("rsc_ir", "ir"), ("rsc_vi", "vis")):
        for i in range(2):
            compare(getattr(branches[theirs_name], f"a2si{i}"), compensation.branches[ours_name].blocks[i],
                    bank, compensation.bank(), train)


def test_every_key_of_their_branch_is_mapped(tmp_path: Path) -> None:
    branches, _ = authors_checkpoint(tmp_path / "c.pth", blocks=1)
    assert len(branches["rsc_ir"].state_dict()) == 54  # their block's key count, running statistics included
    config, state = convert_authors_rsc_checkpoint(torch.load(tmp_path / "c.pth", weights_only=True))
    assert set(state) == set(SemanticCompensation(config).state_dict())
    assert all(v.dtype in (torch.float32, torch.int64) for v in state.values())


def test_wrong_files_are_one_line_errors(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="does not exist"):
        load_authors_compensation(tmp_path / "missing.pth")
    (tmp_path / "text.pth").write_text("hello")
    with pytest.raises(UserError, match="not a PyTorch checkpoint"):
        load_authors_compensation(tmp_path / "text.pth")
    torch.save({"net": {}}, tmp_path / "vfn.pth")
    with pytest.raises(UserError, match="no rsc_ir, rsc_vi, bvb entry"):
        load_authors_compensation(tmp_path / "vfn.pth")
    branches, bank = authors_checkpoint(tmp_path / "c.pth", blocks=1)
    torch.save({"rsc_ir": branches["rsc_ir"].state_dict(), "rsc_vi": {}, "bvb": bank}, tmp_path / "half.pth")
    with pytest.raises(UserError, match="Missing key") as info:
        load_authors_compensation(tmp_path / "half.pth")
    assert "\n" not in str(info.value)


@pytest.mark.skipif(not os.environ.get("CLDYN_AUTHORS_CODE"),
                    reason="set CLDYN_AUTHORS_CODE to a folder with the authors' code (models/A2SI.py) to run")
@pytest.mark.parametrize("train", [False, True])
def test_their_own_a2si_gives_the_converted_output(tmp_path: Path, train: bool) -> None:
    their_class = import_authors_a2si(Path(os.environ["CLDYN_AUTHORS_CODE"]))
    torch.manual_seed(0)
    theirs = their_class(embed_dim=32, inC=8, filter_num=4, set_num=4, vector_num=8).float()
    randomise(theirs, 3)
    bank = torch.randn(4, 8, 32)
    torch.save({"rsc_ir": {f"a2si0.{k}": v for k, v in theirs.state_dict().items()},
                "rsc_vi": {f"a2si0.{k}": v for k, v in theirs.state_dict().items()}, "bvb": bank}, tmp_path / "c.pth")
    compensation = load_authors_compensation(tmp_path / "c.pth")
    compare(theirs, compensation.branches["ir"].blocks[0], bank, compensation.bank(), train)
