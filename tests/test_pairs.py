"""Pairing IR and visible files by stem, and the dataset layouts."""

from pathlib import Path

import numpy as np
import pytest

from cldyn_cli.data.pairs import check_sizes, find_dataset_pairs, find_pairs
from cldyn_cli.errors import UserError
from imagefiles import save_gray


def test_pairs_match_by_stem_case_insensitive_extension(pair_dirs) -> None:
    pairs = find_pairs(*pair_dirs)
    assert [p.name for p in pairs] == ["000", "001", "002"]
    assert pairs[0].vis.suffix == ".PNG"


def test_single_files_form_one_pair(pair_dirs) -> None:
    ir, vis = pair_dirs
    pairs = find_pairs(ir / "001.png", vis / "001.PNG")
    assert len(pairs) == 1 and pairs[0].name == "001"


def test_unmatched_names_are_listed(pair_dirs) -> None:
    ir, vis = pair_dirs
    save_gray(ir / "lonely.png", np.zeros((4, 4)))
    with pytest.raises(UserError, match="1 infrared without visible: lonely"):
        find_pairs(ir, vis)


def test_missing_and_empty_folders(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    with pytest.raises(UserError, match="does not exist"):
        find_pairs(tmp_path / "nope", tmp_path / "b")
    with pytest.raises(UserError, match="no images in"):
        find_pairs(tmp_path / "a", tmp_path / "b")


def test_size_mismatch_names_the_pair(tmp_path: Path) -> None:
    save_gray(tmp_path / "ir" / "x.png", np.zeros((10, 12)))
    save_gray(tmp_path / "vis" / "x.png", np.zeros((10, 14)))
    with pytest.raises(UserError, match="size mismatch for 'x': infrared 12x10 vs visible 14x10"):
        check_sizes(find_pairs(tmp_path / "ir", tmp_path / "vis"))


@pytest.mark.parametrize("ir_dir,vis_dir", [("ir/train", "vi/train"), ("train/Infrared", "train/Visible"),
                                            ("Train/T", "Train/RGB"), ("Test/T_GRAY", "Test/RGB")])
def test_dataset_layouts_are_detected(tmp_path: Path, ir_dir: str, vis_dir: str) -> None:
    save_gray(tmp_path / ir_dir / "a.png", np.zeros((8, 8)))
    save_gray(tmp_path / vis_dir / "a.png", np.zeros((8, 8)))
    pairs = find_dataset_pairs(tmp_path)
    assert len(pairs) == 1 and pairs[0].ir.parent == tmp_path / ir_dir
