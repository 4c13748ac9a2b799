"""Mapping the authors' released VFN state-dict names onto ours (the layers are identical)."""

from __future__ import annotations

import re

import torch

# (pattern, replacement) applied in order to each of the authors' parameter names.
_RENAMES = (
    (r"^module\.", ""),
    (r"^vi_feb\.", "vis_encoder."),
    (r"^ir_feb\.", "ir_encoder."),
    (r"\.bfe\.", ".stem."),
    (r"\.e(\d+)\.", r".blocks.\1."),
    (r"^frb2\.d(\d+)\.", r"decoder.blocks.\1."),
    (r"^frb2\.f_conv\.", "decoder.reduce."),
    (r"^frb2\.res\.", "decoder.head."),
    (r"\.Dcov1\.", ".conv1."),
    (r"\.Dcov2\.", ".conv2."),
    (r"\.conv\.", ".squeeze."),
    (r"^frb1\.mlp_aa\.", "fusion.mlp_avg."),
    (r"^frb1\.mlp_ma\.", "fusion.mlp_max."),
    (r"^frb1\.conv_mean_a\.", "fusion.conv_avg."),
    (r"^frb1\.conv_max_a\.", "fusion.conv_max."),
)


def authors_name_to_ours(name: str) -> str:
    for pattern, replacement in _RENAMES:
        name = re.sub(pattern, replacement, name)
    return name


def convert_authors_state_dict(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The authors' VFN state dict with our parameter names (tensors unchanged)."""
    return {authors_name_to_ours(k): v for k, v in state.items()}


def count_blocks(state: dict[str, torch.Tensor]) -> int:
    """L, read from the converted encoder block names."""
    found = {int(m.group(1)) for k in state if (m := re.match(r"ir_encoder\.blocks\.(\d+)\.", k))}
    return max(found) + 1 if found else 0
