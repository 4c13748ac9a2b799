"""The semantic compensation: identity at initialisation, gradient paths, and the batched A2SI
against the per-sample, per-slot reference."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from cldyn_cli.errors import UserError
from cldyn_cli.models.image_embedding import downsampled, inference_embeddings
from cldyn_cli.models.rsc import A2SI, RSC, BasisVectorBank, RSCConfig, SemanticCompensation, conv1d_mean
from cldyn_cli.fusion import compensated_inference_y, compensated_y
from cldyn_cli.models.inference import inference_vfn
from cldyn_cli.models.loading import load_vfn
from cldyn_cli.models.vfn import VFN, VFNConfig
from cldyn_cli.plugins import get_task
from cldyn_cli.tasks import TaskOptions
from reference_a2si import reference_a2si

SMALL = dict(embed_dim=32, channels=8, filters=4, sets=4, vectors=8)


def live_block(seed: int = 0) -> tuple[A2SI, torch.Tensor]:
    """A small block whose injection is no longer zero (as after some training), and a bank."""
    torch.manual_seed(seed)
    block = A2SI(**SMALL)
    nn.init.normal_(block.inject.weight, std=0.5)
    nn.init.normal_(block.inject.bias, std=0.1)
    return block, BasisVectorBank(4, 8, 32).vectors


def inputs(batch: int = 6, task_shape: tuple[int, ...] = (5, 3, 4)) -> tuple[torch.Tensor, torch.Tensor]:
    torch.manual_seed(1)
    return torch.randn(batch, *task_shape), torch.randn(batch, 8, 10, 12)


def gradients(out: torch.Tensor, block: A2SI, bank: torch.Tensor) -> dict[str, torch.Tensor]:
    """Gradient of a fixed random projection of ``out`` for every parameter, zeros where unused."""
    named = {"bank": bank, **dict(block.named_parameters())}
    weights = torch.randn(out.shape, generator=torch.Generator().manual_seed(2))
    grads = torch.autograd.grad((out * weights).sum(), list(named.values()), allow_unused=True)
    return {name: torch.zeros_like(p) if g is None else g for (name, p), g in zip(named.items(), grads)}


def test_bank_and_prototypes_have_orthonormal_rows() -> None:
    rows = BasisVectorBank(4, 32, 256).vectors.detach().reshape(128, 256)
    torch.testing.assert_close(rows @ rows.t(), torch.eye(128), atol=1e-5, rtol=0)
    prototypes = A2SI(**SMALL).prototypes
    torch.testing.assert_close(prototypes @ prototypes.t(), torch.eye(4), atol=1e-5, rtol=0)


@pytest.mark.parametrize("length", [1, 2, 3000])
def test_conv1d_mean_equals_the_plain_mean(length: int) -> None:
    net = A2SI(embed_dim=256).query_task  # 64 channels: 3000 positions take three pieces
    seq = torch.randn(2, 1, length, requires_grad=True)
    fast, plain = conv1d_mean(seq, net), net(seq).mean(-1)
    torch.testing.assert_close(fast, plain, atol=1e-5, rtol=1e-5)
    (g_fast,), (g_plain,) = (torch.autograd.grad(out.sum(), seq) for out in (fast, plain))
    torch.testing.assert_close(g_fast, g_plain, atol=1e-5, rtol=1e-5)


def test_train_mode_matches_per_slot_reference_values_and_gradients() -> None:
    block, bank = live_block()
    task, x = inputs()
    block.train()
    torch.manual_seed(3)  # the same Gumbel noise for both
    out = block(bank, task, x)
    torch.manual_seed(3)
    expected, types = reference_a2si(block, bank, task, x)
    # The case exercises several kernel types and slots sharing a type.
    assert len(types.unique()) >= 3
    assert any(len(row.unique()) < len(row) for row in types)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)
    got, want = gradients(out, block, bank), gradients(expected, block, bank)
    for name in want:
        torch.testing.assert_close(got[name], want[name], atol=1e-5, rtol=1e-4, msg=name)


@pytest.mark.parametrize("sample", [False, True])
def test_eval_mode_matches_per_slot_reference(sample: bool) -> None:
    block, bank = live_block(seed=4)
    task, x = inputs()
    block.train()
    block(bank, task, x)  # non-trivial running statistics
    block.eval()
    block.sample = sample
    with torch.no_grad():
        torch.manual_seed(5)
        out = block(bank, task, x)
        torch.manual_seed(5)
        expected, types = reference_a2si(block, bank, task, x)
    assert len(types.unique()) >= 2
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)


def test_static_shape_formulation_equals_the_grouped_one() -> None:
    """The export formulation (all kernel types, one-hot selection) against the per-type grouping."""
    block, bank = live_block(seed=6)
    task, x = inputs(batch=5)
    block.train()
    block(bank, task, x)  # non-trivial running statistics
    block.eval()
    with torch.no_grad():
        grouped = block(bank, task, x)
        block.static_shapes = True
        static = block(bank, task, x)
        _, types = reference_a2si(block, bank, task, x)
    assert len(types.unique()) >= 3  # several kernel types in play
    assert (static - grouped).abs().max() <= 1e-5
    with pytest.raises(RuntimeError, match="for inference"):
        block.train()(bank, task, x)


def test_eval_without_sampling_is_deterministic() -> None:
    block, bank = live_block()
    task, x = inputs()
    block.eval()
    with torch.no_grad():
        assert torch.equal(block(bank, task, x), block(bank, task, x))


def test_gradients_reach_bank_kernel_choice_and_block_weights() -> None:
    block, bank = live_block()
    task, x = inputs()
    block.train()
    grads = gradients(block(bank, task, x), block, bank)
    reached = {name.split(".")[0] for name, g in grads.items() if g.abs().sum() > 0}
    assert {"bank", "choice_task", "choice_image", "choice_head", "kernel_1x1", "kernel_3x3",
            "response_norm", "inject"} <= reached
    # As docs/method.md says, the top-n ranking passes nothing to the query.
    assert not reached & {"query_task", "query_image", "query_head"}


def test_learned_query_gets_a_gradient_and_changes_nothing_else() -> None:
    block, bank = live_block()
    task, x = inputs()
    block.train()
    torch.manual_seed(5)
    out_fixed = block(bank, task, x)
    fixed = gradients(out_fixed, block, bank)
    block.learn_query = True
    torch.manual_seed(5)  # the same Gumbel draw
    out_learned = block(bank, task, x)
    learned = gradients(out_learned, block, bank)
    torch.testing.assert_close(out_learned, out_fixed, rtol=1e-6, atol=1e-6)  # straight through: the hard choice
    for name, g in fixed.items():
        if name.startswith(("query_task", "query_image", "query_head")):
            continue
        torch.testing.assert_close(learned[name], g, rtol=1e-4, atol=1e-5 * float(g.abs().max()) + 1e-7)
    reached = {name.split(".")[0] for name, g in learned.items() if g.abs().sum() > 0}
    assert {"query_task", "query_image", "query_head"} <= reached


def test_compensation_sets_tau_and_query_learning_on_every_block() -> None:
    compensation = SemanticCompensation(RSCConfig(blocks=2, **SMALL))
    compensation.set_tau(0.1)
    compensation.learn_query(True)
    blocks = compensation.blocks()
    assert len(blocks) == 4 and all(b.tau == 0.1 and b.learn_query for b in blocks)
    queries = compensation.query_parameters()
    names = {id(p): n for n, p in compensation.named_parameters()}
    assert queries and all(".query_" in names[id(p)] for p in queries)
    assert len(queries) == sum(".query_" in n for n in names.values())


@pytest.mark.parametrize("task_shape", [(16, 3, 5), (16,), (7, 16)])
def test_accepts_any_task_feature_shape(task_shape: tuple[int, ...]) -> None:
    block, bank = live_block()
    task, x = inputs(batch=2, task_shape=task_shape)
    assert block(bank, task, x).shape == x.shape


def test_fresh_compensation_leaves_the_base_network_unchanged() -> None:
    torch.manual_seed(0)
    base = VFN(VFNConfig(blocks=2)).eval()
    compensation = SemanticCompensation(RSCConfig(blocks=1, **SMALL)).train()
    compensation.check(base)
    ir, vis = torch.rand(2, 1, 16, 16), torch.rand(2, 1, 16, 16)
    task = torch.randn(2, 12, 4, 4)
    with torch.no_grad():
        assert torch.equal(base(ir, vis, hook=compensation.hook(task)), base(ir, vis))


def test_hook_compensates_only_the_first_k_blocks_of_each_branch() -> None:
    compensation = SemanticCompensation(RSCConfig(blocks=1, **SMALL))
    for branch in ("ir", "vis"):
        nn.init.normal_(compensation.branches[branch].blocks[0].inject.weight)
    hook = compensation.hook(torch.randn(2, 10))
    x = torch.randn(2, 8, 6, 6)
    for branch in ("ir", "vis"):
        assert not torch.equal(hook(branch, 0, x), x)
        assert hook(branch, 1, x) is x


def test_check_rejects_too_many_blocks_and_wrong_width() -> None:
    with pytest.raises(ValueError, match="K <= L-1"):
        SemanticCompensation(RSCConfig(blocks=2, **SMALL)).check(VFN(VFNConfig(blocks=2)))
    with pytest.raises(ValueError, match="channels"):
        SemanticCompensation(RSCConfig(**{**SMALL, "channels": 4})).check(VFN(VFNConfig(blocks=2)))


def test_rsc_holds_k_blocks_and_rejects_bad_shapes() -> None:
    assert len(RSC(blocks=3, **SMALL).blocks) == 3
    with pytest.raises(ValueError):
        A2SI(**{**SMALL, "sets": 3})
    with pytest.raises(ValueError):
        A2SI(**{**SMALL, "filters": 9})


def test_config_round_trip() -> None:
    config = RSCConfig(blocks=2, filters=3, tau=0.7)
    assert RSCConfig.from_dict(config.to_dict()) == config
    with pytest.raises(UserError, match="unknown"):
        RSCConfig.from_dict({"blocks": 1, "depth": 3})
    with pytest.raises(UserError, match="tau in the RSC config must be greater than 0"):
        RSCConfig.from_dict({"tau": 0})


def trained_statistics(block: A2SI) -> None:
    """Random BatchNorm affine parameters and running statistics, as after training."""
    generator = torch.Generator().manual_seed(8)
    with torch.no_grad():
        for module in block.modules():
            if isinstance(module, nn.BatchNorm2d):
                for tensor in (module.weight, module.bias, module.running_mean):
                    tensor.copy_(torch.randn(tensor.shape, generator=generator) * 0.5)
                module.running_var.copy_(torch.rand(module.running_var.shape, generator=generator) + 0.5)


@pytest.mark.parametrize("stride", [1, 2, 3])
def test_inference_embeddings_equal_the_modules(stride: int) -> None:
    """The fused inference pass (BN folded, one 8->72 convolution, channels-last) against the layers."""
    block, _ = live_block()
    _, x = inputs()
    trained_statistics(block)
    block.eval()
    with torch.no_grad():
        choice, query = inference_embeddings(block.choice_image, block.query_image, x, stride)
        expected_query = block.query_image(downsampled(x, stride)).flatten(1)
        torch.testing.assert_close(choice, block.choice_image(x).flatten(1), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(query, expected_query, atol=1e-5, rtol=1e-5)


def test_downsampled_averages_cells_and_partial_cells() -> None:
    x = torch.arange(15.0).view(1, 1, 3, 5)
    expected = torch.tensor([[(0 + 1 + 5 + 6) / 4, (2 + 3 + 7 + 8) / 4, (4 + 9) / 2],
                             [(10 + 11) / 2, (12 + 13) / 2, 14.0]])
    torch.testing.assert_close(downsampled(x, 2)[0, 0], expected)
    assert downsampled(x, 1) is x


@pytest.mark.parametrize("stride", [1, 2])
def test_inference_path_gives_the_output_of_the_layer_path(stride: int) -> None:
    """Eval mode without gradients (fused pass) and with them (the modules) agree, sampling or not."""
    block, bank = live_block(seed=4)
    task, x = inputs()
    trained_statistics(block)
    block.query_stride = stride
    block.eval()
    for sample in (False, True):
        block.sample = sample
        torch.manual_seed(5)
        layers = block(bank, task, x).detach()
        with torch.no_grad():
            torch.manual_seed(5)
            fused = block(bank, task, x)
        torch.testing.assert_close(fused, layers, atol=1e-5, rtol=1e-5)


def test_query_stride_changes_only_the_query_and_is_stored() -> None:
    compensation = SemanticCompensation(RSCConfig(query_stride=2, **SMALL))
    assert all(block.query_stride == 2 for branch in compensation.branches.values() for block in branch.blocks)
    assert RSCConfig.from_dict(compensation.config.to_dict()).query_stride == 2
    assert RSCConfig.from_dict({}).query_stride == 1  # files written before the option read as published
    block, bank = live_block()
    task, x = inputs()
    block.eval()
    with torch.no_grad():
        coarse_query = block.query(task.reshape(6, 1, -1), block.query_image(downsampled(x, 2)).flatten(1))
        vectors = {}
        for stride in (1, 2):
            block.query_stride = stride
            choice, query = block.image_embeddings(x)
            vectors[stride] = block.query(task.reshape(6, 1, -1), query)
            torch.testing.assert_close(choice, block.choice_image(x).flatten(1), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(vectors[2], coarse_query, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(vectors[1], vectors[2])


@pytest.mark.parametrize("blocks", [1, 2])
def test_compensated_fusion_on_the_inference_form_of_the_base_is_unchanged(blocks: int) -> None:
    """`cldyn fuse --task` runs both passes on the base's inference form and shares their first
    block: the same base and compensated output to 1e-5 (shipped model, K = 1; a random L = 3
    base with K = 2, hooks after two blocks)."""
    torch.manual_seed(0)
    base = load_vfn()[0] if blocks == 1 else VFN(VFNConfig(blocks=3, stretch=True)).eval()
    compensation = SemanticCompensation(RSCConfig(blocks=blocks, **SMALL)).eval()
    for branch in compensation.branches.values():
        for block in branch.blocks:
            nn.init.normal_(block.inject.weight, std=0.5)
    task = get_task("toyseg").load(TaskOptions())
    ir, vis = torch.rand(2, 1, 30, 44), torch.rand(2, 3, 30, 44)
    with torch.no_grad():
        plain_base, plain = compensated_y(base, compensation, task, ir, vis)
        fast_base, fast = compensated_inference_y(inference_vfn(base), compensation, task, ir, vis)
        _, uncompensated = compensated_y(base, SemanticCompensation(RSCConfig(blocks=blocks, **SMALL)).eval(),
                                         task, ir, vis)
    assert (plain - uncompensated).abs().max() > 1e-3  # the compensation is at work
    torch.testing.assert_close(fast_base, plain_base, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(fast, plain, atol=1e-5, rtol=1e-5)
