"""Mapping the authors' released checkpoints onto ours.

The VFN layers are identical and only renamed. Their RSC checkpoint ({"rsc_ir", "rsc_vi": state
dicts with blocks ``a2si0``, ``a2si1``...; "bvb": the basis bank}) is renamed too, with two
changes of form: the type-choice head writes its queries as (prototype dim, slot), row d*M + m,
where ours are (slot, prototype dim), row m*16 + d, so that head's last rows are permuted; and
everything is cast to float32 (they train in bfloat16).
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import torch

from cldyn_cli.models.rsc import KERNEL_TYPES, PROTOTYPE_DIM, RSCConfig

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

# The same for one RSC branch's names; the query's layers (their ``bv_f``) before the type choice's,
# whose names they contain.
_RSC_RENAMES = (
    (r"^module\.", ""),
    (r"^a2si(\d+)\.", r"blocks.\1."),
    (r"\.orthogonal_convolutional_prototypes$", ".prototypes"),
    (r"\.bv_f\.p_task_f\.", ".query_task."),
    (r"\.bv_f\.p_img_f\.", ".query_image."),
    (r"\.bv_f\.mlp\.", ".query_head."),
    (r"\.p_task_f\.", ".choice_task."),
    (r"\.p_img_f\.", ".choice_image."),
    (r"\.a_task_img\.", ".choice_head."),
    (r"\.mlp_1x1\.", ".kernel_1x1."),
    (r"\.mlp_3x3\.", ".kernel_3x3."),
    (r"\.B_LR\.0\.", ".response_norm."),
    (r"\.zc\.", ".inject."),
)
_CHOICE_OUT = re.compile(r"^blocks\.\d+\.choice_head\.3\.(weight|bias)$")


def _renamed(name: str, renames: tuple[tuple[str, str], ...]) -> str:
    for pattern, replacement in renames:
        name = re.sub(pattern, replacement, name)
    return name


def authors_name_to_ours(name: str) -> str:
    return _renamed(name, _RENAMES)


def convert_authors_state_dict(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The authors' VFN state dict with our parameter names (tensors unchanged)."""
    return {authors_name_to_ours(k): v for k, v in state.items()}


def count_blocks(state: dict[str, torch.Tensor]) -> int:
    """L, read from the converted encoder block names."""
    found = {int(m.group(1)) for k in state if (m := re.match(r"ir_encoder\.blocks\.(\d+)\.", k))}
    return max(found) + 1 if found else 0


def authors_rsc_name_to_ours(name: str) -> str:
    """One name of the authors' RSC branch state dict as ours (relative to the branch)."""
    return _renamed(name, _RSC_RENAMES)


def slot_major_rows(t: torch.Tensor, filters: int) -> torch.Tensor:
    """Rows ordered d*M + m (the authors' type-choice head output) reordered to m*16 + d (ours)."""
    return t.unflatten(0, (PROTOTYPE_DIM, filters)).transpose(0, 1).flatten(0, 1)


def convert_authors_rsc_branch(state: Mapping[str, torch.Tensor], filters: int) -> dict[str, torch.Tensor]:
    """One RSC branch's state dict (``a2si{i}.*`` names) as our ``RSC`` state dict, in float32."""
    out = {}
    for name, tensor in state.items():
        ours = authors_rsc_name_to_ours(name)
        tensor = tensor.detach()
        if _CHOICE_OUT.match(ours):
            tensor = slot_major_rows(tensor, filters)
        out[ours] = tensor if name.endswith("num_batches_tracked") else tensor.float()
    return out


def convert_authors_rsc_checkpoint(checkpoint: Mapping[str, object]) -> tuple[RSCConfig, dict[str, torch.Tensor]]:
    """The RSC config and our ``SemanticCompensation`` state dict from the authors' checkpoint dict.

    The config is read off the tensor shapes; tau, which they do not store, is their fixed 0.5.
    Raises ValueError (naming what is missing) for anything else.
    """
    missing = [k for k in ("rsc_ir", "rsc_vi", "bvb") if k not in checkpoint]
    if missing:
        raise ValueError(f"not an RSC checkpoint of the authors' code: no {', '.join(missing)} entry")
    ir, vis, bank = checkpoint["rsc_ir"], checkpoint["rsc_vi"], checkpoint["bvb"]
    if not isinstance(ir, Mapping) or not isinstance(vis, Mapping) or not isinstance(bank, torch.Tensor):
        raise ValueError("not an RSC checkpoint of the authors' code: rsc_ir/rsc_vi must be state dicts, bvb a tensor")
    names = {k.removeprefix("module.") for k in ir}
    blocks = len({m.group(1) for k in names if (m := re.match(r"a2si(\d+)\.", k))})
    if blocks == 0 or "a2si0.zc.weight" not in names or "a2si0.a_task_img.3.weight" not in names:
        raise ValueError("not an RSC checkpoint of the authors' code: rsc_ir holds no a2si0 block")
    prefix = "module." if "module.a2si0.zc.weight" in ir else ""
    sets, embed_dim = len(KERNEL_TYPES), bank.shape[-1]
    if bank.numel() % (sets * embed_dim):
        raise ValueError(f"bvb has shape {tuple(bank.shape)}, not (sets x vectors, embed_dim) with {sets} sets")
    config = RSCConfig(blocks=blocks, embed_dim=embed_dim, channels=ir[f"{prefix}a2si0.zc.weight"].shape[0],
                       filters=ir[f"{prefix}a2si0.a_task_img.3.weight"].shape[0] // PROTOTYPE_DIM, sets=sets,
                       vectors=bank.numel() // (sets * embed_dim))
    state = {"bank.vectors": bank.detach().float().reshape(sets, config.vectors, embed_dim)}
    for ours, theirs in (("ir", ir), ("vis", vis)):
        branch = convert_authors_rsc_branch(theirs, config.filters)
        state.update({f"branches.{ours}.{k}": v for k, v in branch.items()})
    return config, state
