"""A test-only A2SI with the parameter names and shapes of the authors' published code, and their
formulation where it differs in form from ours: the type-choice queries laid out (B, 16, M), the
basis vectors picked per sample and kernel type, one convolution per sample and slot.

Written from their layout (not imported), so that the converter's test does not depend on their
code being present. Like theirs, the kernel type is always drawn with hard Gumbel-softmax; ours
does the same in eval mode when ``sample`` is set.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

PROTO = 16


def _mlp(inp: int, hidden: int, out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(inp, hidden), nn.LayerNorm(hidden), nn.ReLU(), nn.Linear(hidden, out))


def _task_conv(wide: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv1d(1, wide // 4, 3, padding=1, bias=False), nn.LeakyReLU(0.2),
                         nn.Conv1d(wide // 4, wide // 2, 3, padding=1, bias=False))


class LayoutQuery(nn.Module):
    """Their ``bv_f``: the query that ranks basis vectors, from RMS-normalised task features and X."""

    def __init__(self, embed_dim: int, channels: int) -> None:
        super().__init__()
        e4, e2 = embed_dim // 4, embed_dim // 2
        self.p_task_f = _task_conv(embed_dim)
        self.p_img_f = nn.Sequential(nn.Conv2d(channels, e4, 3, padding=1, bias=False), nn.BatchNorm2d(e4),
                                     nn.LeakyReLU(0.2), nn.Conv2d(e4, e2, 3, padding=1, bias=False),
                                     nn.BatchNorm2d(e2), nn.LeakyReLU(0.2), nn.AdaptiveAvgPool2d(1))
        self.mlp = _mlp(embed_dim, e4, embed_dim)

    def forward(self, task: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        seq = task.reshape(x.shape[0], 1, -1)
        seq = seq / (seq.square().mean(-1, keepdim=True).sqrt() + 1e-8)
        return self.mlp(torch.cat([self.p_task_f(seq).mean(-1), self.p_img_f(x).flatten(1)], 1))


class LayoutA2SI(nn.Module):
    def __init__(self, embed_dim: int, inC: int, filter_num: int, set_num: int, vector_num: int) -> None:
        super().__init__()
        self.filter_num, self.inC = filter_num, inC
        self.orthogonal_convolutional_prototypes = nn.Parameter(torch.randn(set_num, PROTO), requires_grad=False)
        self.bv_f = LayoutQuery(embed_dim, inC)
        self.p_task_f = _task_conv(PROTO)
        self.p_img_f = nn.Sequential(nn.Conv2d(inC, PROTO // 2, 3, padding=1, bias=False), nn.BatchNorm2d(PROTO // 2),
                                     nn.LeakyReLU(0.2), nn.AdaptiveAvgPool2d(1))
        self.a_task_img = _mlp(PROTO, filter_num * PROTO // 2, filter_num * PROTO)
        self.mlp_1x1 = _mlp(embed_dim, embed_dim // 4, inC * inC)
        self.mlp_3x3 = _mlp(embed_dim, embed_dim // 4, inC * inC * 9)
        self.B_LR = nn.Sequential(nn.BatchNorm2d(inC), nn.LeakyReLU(0.2))
        self.zc = nn.Conv2d(inC, inC, 1)

    def forward(self, bank: torch.Tensor, task: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """bank (S, V, E), task features (B, ...), x (B, C, H, W)."""
        batch, slots = x.shape[0], self.filter_num
        seq = task.reshape(batch, 1, -1)
        embedding = torch.cat([self.p_task_f(seq).mean(-1), self.p_img_f(x).flatten(1)], 1)
        queries = self.a_task_img(embedding).view(batch, PROTO, slots)  # column m: slot m's query
        logits = torch.einsum("sd,bdm->bms", F.normalize(self.orthogonal_convolutional_prototypes, dim=-1, eps=1e-8),
                              F.normalize(queries, dim=1, eps=1e-8))
        one_hot = F.gumbel_softmax(logits, tau=0.5, hard=True)
        types = one_hot.argmax(-1)
        q = F.normalize(self.bv_f(task, x), dim=-1)
        responses = []
        for b in range(batch):
            taken: dict[int, int] = {}  # slots of each type already served, in slot order
            for m in range(slots):
                t = int(types[b, m])
                chosen_set = torch.einsum("s,sve->ve", one_hot[b, m], bank)
                ranking = (F.normalize(chosen_set, dim=-1) @ q[b]).argsort(descending=True)
                vector = chosen_set[ranking[taken.get(t, 0)]]
                taken[t] = taken.get(t, 0) + 1
                size = 1 if t == 0 else 3
                kernel = (self.mlp_1x1 if t == 0 else self.mlp_3x3)(vector).view(self.inC, self.inC, size, size)
                responses.append(F.conv2d(x[b:b + 1], kernel, padding=t, dilation=max(t, 1)))
        activated = self.B_LR(torch.cat(responses)).view(batch, slots, *x.shape[1:]).mean(1)
        return x + self.zc(activated)


class LayoutRSC(nn.Module):
    """Their RSC: blocks named ``a2si0``, ``a2si1``..."""

    def __init__(self, blocks: int, **kwargs: int) -> None:
        super().__init__()
        for i in range(blocks):
            setattr(self, f"a2si{i}", LayoutA2SI(**kwargs))


def randomise(module: nn.Module, seed: int) -> None:
    """Every parameter and BatchNorm statistic random (a trained block, not a fresh one)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in module.state_dict().items():
            if name.endswith("num_batches_tracked"):
                continue
            values = torch.randn(tensor.shape, generator=generator) * 0.3
            tensor.copy_(values.abs() + 0.5 if name.endswith("running_var") else values)
