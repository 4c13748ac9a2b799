"""Requirement-driven Semantic Compensation (RSC): task-conditioned dynamic convolutions (A2SI)
injected into the frozen base network's encoders, as docs/method.md describes.

Everything is batched: the kernel types, basis vectors and dynamic kernels of all samples and
filter slots are computed together, and the per-slot convolutions run as one grouped
convolution per kernel type (a slot's group sees only its own sample's features).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from cldyn_cli.config import build, setting

from .image_embedding import downsampled, inference_embeddings
from .vfn import SLOPE, VFN, BlockHook

# The kernel types the prototypes stand for, as (size, dilation), in set order.
KERNEL_TYPES: tuple[tuple[int, int], ...] = ((1, 1), (3, 1), (3, 2), (3, 3))
PROTOTYPE_DIM = 16
EPS = 1e-8
QUERY_TAU = 0.1  # temperature of the soft basis ranking that passes the query a gradient (learn_query)


@dataclass(frozen=True)
class RSCConfig:
    """Shape of a semantic compensation; stored in every checkpoint."""

    blocks: int = setting(1, min=1)  # K: A2SI blocks per branch, after encoder blocks 0..K-1
    embed_dim: int = setting(256, min=4, multiple=4)  # E: length of a basis vector
    channels: int = setting(8, min=1)  # C: width of the features being compensated
    filters: int = setting(4, min=1)  # M: dynamic filter slots per block
    sets: int = setting(4, choices=(4,))  # S: basis sets, one per kernel type
    vectors: int = setting(32, min=1)  # V: basis vectors per set
    tau: float = setting(0.5, above=0)  # Gumbel-softmax temperature of the kernel-type choice
    query_stride: int = setting(1, min=1)  # the basis query sees X area-downsampled by this (1: as published)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "the RSC config") -> RSCConfig:
        """Checked against the declared schema (a UserError names ``source``)."""
        return build(cls, data, source)


def orthonormal_rows(rows: int, dim: int) -> torch.Tensor:
    """(rows, dim), orthogonal initialisation with every row scaled to unit norm.

    The rows are mutually orthogonal when rows <= dim; otherwise the columns are and the rows
    are only unit-norm.
    """
    w = torch.empty(rows, dim)
    nn.init.orthogonal_(w)
    return w / w.norm(dim=1, keepdim=True)


def conv1d_mean(seq: torch.Tensor, net: nn.Sequential) -> torch.Tensor:
    """``net(seq).mean(-1)`` for net = bias-free Conv1d(1->c, k3, pad 1), activation, Conv1d(k3, pad 1).

    The task features make a long sequence (C*H*W, millions of values for a segmenter's map). The
    mean of the second (linear) convolution is that convolution applied to three shifted sums of its
    input, so it never runs over the sequence; the first one runs piece by piece as three
    multiply-adds of shifted copies (a matrix product with an inner size of 3 runs far slower), each
    piece's activations summed while in cache. Pieces hold about 2^18 values: small ones cost more
    in per-call overhead than they gain. (B, 1, L) -> (B, out).
    """
    first, act, second = net
    padded = F.pad(seq.flatten(1), (1, 1))  # (B, L + 2): position l's window is padded[l:l + 3]
    length = padded.shape[1] - 2
    taps = first.weight.flatten(1).t()[:, None, :, None]  # (3, 1, c, 1)
    piece = max(1, 2 ** 18 // (taps.shape[2] * padded.shape[0]))

    def activated(start: int, n: int) -> torch.Tensor:  # (B, c, n): h at positions start..start+n-1
        window = padded[:, None, start:start + n + 2]
        h = window[..., :n] * taps[0]
        return act(h.addcmul_(window[..., 1:n + 1], taps[1]).addcmul_(window[..., 2:], taps[2]))

    total = sum(activated(start, min(piece, length - start)).sum(-1) for start in range(0, length, piece))
    first_h, last_h = activated(0, 1)[..., 0], activated(length - 1, 1)[..., 0]
    # Output l reads h[l-1], h[l], h[l+1] (zero outside): their sums over l.
    shifted = torch.stack([total - last_h, total, total - first_h], dim=-1)
    return torch.einsum("oik,bik->bo", second.weight, shifted) / seq.shape[-1]


def _mlp(inp: int, hidden: int, out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(inp, hidden), nn.LayerNorm(hidden), nn.ReLU(), nn.Linear(hidden, out))


def hard_gumbel_softmax(logits: torch.Tensor, tau: float, rows: tuple[int, int] | None = None) -> torch.Tensor:
    """``F.gumbel_softmax(logits, tau, hard=True)`` over the last dimension.

    With ``rows = (start, total)`` the noise is drawn for a batch of ``total`` and rows
    ``start:start + B`` are used: a rank of a data-parallel run gets the noise that one process
    would have drawn for these samples, and the random state advances the same on every rank.
    """
    if rows is None:
        return F.gumbel_softmax(logits, tau=tau, hard=True)
    start, total = rows
    noise = torch.empty(total, *logits.shape[1:], dtype=logits.dtype, device=logits.device).exponential_()
    soft = ((logits - noise[start:start + logits.shape[0]].log()) / tau).softmax(-1)
    hard = torch.zeros_like(soft).scatter_(-1, soft.argmax(-1, keepdim=True), 1.0)
    return hard - soft.detach() + soft


class BasisVectorBank(nn.Module):
    """The learnable basis vectors (S sets x V vectors x E dims) shared by every A2SI block."""

    def __init__(self, sets: int = 4, vectors: int = 32, embed_dim: int = 256) -> None:
        super().__init__()
        self.vectors = nn.Parameter(orthonormal_rows(sets * vectors, embed_dim).view(sets, vectors, embed_dim))

    def forward(self) -> torch.Tensor:
        return self.vectors


class A2SI(nn.Module):
    """One compensation block: X + ZeroConv(mean over M slots of LReLU(BN(X * dynamic kernel))).

    Each slot's kernel type (1x1, 3x3 dilation 1/2/3) and basis vector are chosen from the task
    features and X; the vector is turned into the slot's kernel by a small MLP.
    """

    def __init__(self, embed_dim: int = 256, channels: int = 8, filters: int = 4, sets: int = 4,
                 vectors: int = 32, tau: float = 0.5, query_stride: int = 1) -> None:
        super().__init__()
        if sets != len(KERNEL_TYPES):
            raise ValueError(f"sets must be {len(KERNEL_TYPES)} (one basis set per kernel type), got {sets}")
        if not 1 <= filters <= vectors:
            raise ValueError(f"filters must be between 1 and vectors ({vectors}), got {filters}")
        if embed_dim % 4:
            raise ValueError(f"embed_dim must be a multiple of 4, got {embed_dim}")
        self.embed_dim, self.channels, self.filters, self.tau = embed_dim, channels, filters, tau
        self.query_stride = query_stride  # > 1 changes the output: a cheaper query from a coarser X
        self.sample = False  # draw the kernel types at eval time too, instead of taking the argmax
        self.noise_rows: tuple[int, int] | None = None  # see SemanticCompensation.noise_rows
        self.learn_query = False  # training: give the basis query a straight-through gradient (select_basis)
        self.static_shapes = False  # eval-mode formulation without data-dependent shapes, for ONNX export
        e4, e2, half = embed_dim // 4, embed_dim // 2, PROTOTYPE_DIM // 2

        # Step 1: kernel-type choice against fixed orthogonal prototypes.
        self.register_buffer("prototypes", orthonormal_rows(len(KERNEL_TYPES), PROTOTYPE_DIM))
        quarter = PROTOTYPE_DIM // 4
        self.choice_task = nn.Sequential(nn.Conv1d(1, quarter, 3, padding=1, bias=False), nn.LeakyReLU(SLOPE),
                                         nn.Conv1d(quarter, half, 3, padding=1, bias=False))
        # In-place activations after BN: these full-resolution maps are the block's largest tensors.
        self.choice_image = nn.Sequential(nn.Conv2d(channels, half, 3, padding=1, bias=False), nn.BatchNorm2d(half),
                                          nn.LeakyReLU(SLOPE, inplace=True), nn.AdaptiveAvgPool2d(1))
        self.choice_head = _mlp(PROTOTYPE_DIM, 2 * PROTOTYPE_DIM, PROTOTYPE_DIM * filters)
        # Step 2: the query that ranks basis vectors (it receives no gradient).
        self.query_task = nn.Sequential(nn.Conv1d(1, e4, 3, padding=1, bias=False), nn.LeakyReLU(SLOPE),
                                        nn.Conv1d(e4, e2, 3, padding=1, bias=False))
        self.query_image = nn.Sequential(nn.Conv2d(channels, e4, 3, padding=1, bias=False), nn.BatchNorm2d(e4),
                                         nn.LeakyReLU(SLOPE, inplace=True), nn.Conv2d(e4, e2, 3, padding=1, bias=False),
                                         nn.BatchNorm2d(e2), nn.LeakyReLU(SLOPE, inplace=True), nn.AdaptiveAvgPool2d(1))
        self.query_head = _mlp(embed_dim, e4, embed_dim)
        # Step 3: basis vector -> kernel, and the normalisation of the slots' responses.
        self.kernel_1x1 = _mlp(embed_dim, e4, channels * channels)
        self.kernel_3x3 = _mlp(embed_dim, e4, channels * channels * 9)
        self.response_norm = nn.BatchNorm2d(channels)
        # Step 4: zero-initialised injection, so a fresh block is the identity.
        self.inject = nn.Conv2d(channels, channels, 1)
        nn.init.zeros_(self.inject.weight)
        nn.init.zeros_(self.inject.bias)

    def forward(self, bank: torch.Tensor, task_features: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """bank (S, V, E), task features (B, ...), features x (B, C, H, W) -> compensated x."""
        task = task_features.reshape(x.shape[0], 1, -1)
        choice_image, query_image = self.image_embeddings(x)
        one_hot = self.choose_types(task, choice_image)
        types = one_hot.argmax(-1)
        with torch.set_grad_enabled(torch.is_grad_enabled() and self.learn_query):
            q = self.query(task, query_image)
        vectors = self.select_basis(bank, one_hot, types, q)
        if self.static_shapes:
            return x + self.inject(self.respond_static(x, one_hot, vectors))
        return x + self.inject(self.respond(x, types, vectors))

    def _sequence_mean(self, seq: torch.Tensor, net: nn.Sequential) -> torch.Tensor:
        # conv1d_mean cuts the sequence into a length-dependent number of pieces; export wants one graph
        return net(seq).mean(-1) if self.static_shapes else conv1d_mean(seq, net)

    def image_embeddings(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The pooled image embeddings of the type choice (B, 8) and of the query (B, E/2).

        At inference (eval mode, no gradient) one fused pass computes both; otherwise the modules
        run as they are, the query's channels-last and without a graph unless ``learn_query``.
        """
        if not (self.training or torch.is_grad_enabled() or self.static_shapes):
            return inference_embeddings(self.choice_image, self.query_image, x, self.query_stride)
        with torch.set_grad_enabled(torch.is_grad_enabled() and self.learn_query):
            query = self.query_image(downsampled(x, self.query_stride).contiguous(memory_format=torch.channels_last))
        return self.choice_image(x).flatten(1), query.flatten(1)

    def choose_types(self, task: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        """One-hot kernel type per slot (B, M, 4) from the task sequence and the image embedding;
        straight-through Gumbel when training or sampling."""
        embedding = torch.cat([self._sequence_mean(task, self.choice_task), image], dim=1)
        queries = self.choice_head(embedding).view(image.shape[0], self.filters, PROTOTYPE_DIM)
        logits = torch.einsum("bmd,td->bmt", F.normalize(queries, dim=-1, eps=EPS),
                              F.normalize(self.prototypes, dim=-1, eps=EPS))
        if self.training or self.sample:
            return hard_gumbel_softmax(logits, self.tau, self.noise_rows)
        return F.one_hot(logits.argmax(-1), len(KERNEL_TYPES)).to(logits.dtype)

    def query(self, task: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        """q (B, E) from the task sequence and the query's image embedding. Only its top-n ranking
        is used, which passes no gradient, so :meth:`forward` keeps no graph for it unless
        ``learn_query`` asks for the straight-through gradient."""
        rms = task.square().mean(dim=-1, keepdim=True).sqrt()
        embedding = torch.cat([self._sequence_mean(task / (rms + EPS), self.query_task), image], 1)
        return self.query_head(embedding)

    def select_basis(self, bank: torch.Tensor, one_hot: torch.Tensor, types: torch.Tensor,
                     q: torch.Tensor) -> torch.Tensor:
        """One basis vector per slot (B, M, E): the n slots of one type get that set's n vectors
        most similar to q, the most similar to the lowest slot."""
        batch, slots = types.shape
        with torch.no_grad():
            similarity = torch.einsum("be,sve->bsv", F.normalize(q, dim=-1, eps=EPS),
                                      F.normalize(bank, dim=-1, eps=EPS))
            ranked = similarity.topk(slots, dim=-1).indices  # (B, S, M)
            earlier = torch.ones(slots, slots, dtype=torch.bool, device=types.device).tril(-1)
            rank = ((types[:, :, None] == types[:, None, :]) & earlier).sum(-1)  # earlier slots of my type
            index = ranked.gather(1, types[:, :, None].expand(batch, slots, slots)).gather(2, rank[..., None])
        # (one-hot @ bank)[index]: the gradient reaches the bank and, straight through, the type choice.
        chosen = torch.einsum("bms,sbme->bme", one_hot, bank[:, index.squeeze(-1)])
        if not (self.learn_query and q.requires_grad):
            return chosen
        # Straight through to q: the forward value stays the hard choice; the backward pass is that of
        # a softmax-weighted mix of the slot's set (temperature QUERY_TAU). The mix sees the bank and the
        # type choice detached, so their gradients stay exactly those of the hard choice.
        detached = bank.detach()
        similarity = torch.einsum("be,sve->bsv", F.normalize(q, dim=-1, eps=EPS),
                                  F.normalize(detached, dim=-1, eps=EPS))
        soft = torch.einsum("bsv,sve->bse", (similarity / QUERY_TAU).softmax(-1), detached)
        soft = torch.einsum("bms,bse->bme", one_hot.detach(), soft)
        return chosen + soft - soft.detach()

    def respond(self, x: torch.Tensor, types: torch.Tensor, vectors: torch.Tensor) -> torch.Tensor:
        """Mean over slots of LReLU(BN(slot kernel * own sample)), (B, C, H, W).

        Slots are grouped by kernel type; each type is one grouped convolution whose groups are
        its slots, fed with copies of their samples' features. Only the needed taps are computed.
        """
        batch, c, h, w = x.shape
        kernels = {1: self.kernel_1x1(vectors).flatten(0, 1), 3: self.kernel_3x3(vectors).flatten(0, 1)}
        order = types.flatten().argsort(stable=True)
        counts = torch.bincount(types.flatten(), minlength=len(KERNEL_TYPES)).tolist()
        responses = []
        for (size, dilation), slots in zip(KERNEL_TYPES, order.split(counts)):
            n = slots.numel()
            if n == 0:
                continue
            weight = kernels[size][slots].reshape(n * c, c, size, size)
            inputs = x[slots // self.filters].reshape(1, n * c, h, w)
            responses.append(F.conv2d(inputs, weight, padding=dilation * (size // 2), dilation=dilation,
                                      groups=n).view(n, c, h, w))
        activated = F.leaky_relu(self.response_norm(torch.cat(responses)), SLOPE, inplace=True)
        return activated.new_zeros(batch, c, h, w).index_add(0, order // self.filters, activated) / self.filters


    def respond_static(self, x: torch.Tensor, one_hot: torch.Tensor, vectors: torch.Tensor) -> torch.Tensor:
        """:meth:`respond` with shapes that do not depend on the data (eval mode), for ONNX export.

        Every slot is convolved with all four kernel types and the one-hot keeps one (the others are
        multiplied by zero, which is exact). The convolutions are sums over shifted copies of X, so
        the batch size stays a dynamic dimension (a grouped convolution would fix it in the graph).
        """
        if self.training:
            raise RuntimeError("respond_static is for inference: BatchNorm must use its running statistics")
        c = self.channels
        kernels_1x1 = self.kernel_1x1(vectors).unflatten(-1, (c, c))  # (B, M, C out, C in)
        kernels_3x3 = self.kernel_3x3(vectors).unflatten(-1, (c, c, 9))  # taps row by row
        chosen = one_hot[..., 0, None, None, None] * torch.einsum("bmoi,bihw->bmohw", kernels_1x1, x)
        for t, (_, dilation) in enumerate(KERNEL_TYPES[1:], start=1):
            padded = F.pad(x, (dilation,) * 4)
            taps = torch.stack([padded[..., ky * dilation:(ky - 2) * dilation or None,
                                       kx * dilation:(kx - 2) * dilation or None]
                                for ky in range(3) for kx in range(3)], dim=-1)  # (B, C, H, W, 9)
            chosen = chosen + one_hot[..., t, None, None, None] * torch.einsum("bmoik,bihwk->bmohw", kernels_3x3, taps)
        activated = F.leaky_relu(self.response_norm(chosen.flatten(0, 1)), SLOPE)
        return activated.unflatten(0, (-1, self.filters)).mean(1)


class RSC(nn.Module):
    """The compensation of one encoder branch: A2SI block i follows encoder block i."""

    def __init__(self, blocks: int = 1, embed_dim: int = 256, channels: int = 8, filters: int = 4,
                 sets: int = 4, vectors: int = 32, tau: float = 0.5, query_stride: int = 1) -> None:
        super().__init__()
        if blocks < 1:
            raise ValueError(f"an RSC needs at least one A2SI block, got {blocks}")
        self.blocks = nn.ModuleList(A2SI(embed_dim, channels, filters, sets, vectors, tau, query_stride)
                                    for _ in range(blocks))

    def forward(self, bank: torch.Tensor, task_features: torch.Tensor, x: torch.Tensor, index: int) -> torch.Tensor:
        return self.blocks[index](bank, task_features, x)


class SemanticCompensation(nn.Module):
    """The trainable part of the closed loop: the shared basis bank and one RSC per encoder branch."""

    def __init__(self, config: RSCConfig = RSCConfig()) -> None:
        super().__init__()
        self.config = config
        self.bank = BasisVectorBank(config.sets, config.vectors, config.embed_dim)
        self.branches = nn.ModuleDict({"ir": RSC(**config.to_dict()), "vis": RSC(**config.to_dict())})

    def check(self, base: VFN) -> None:
        """Raise ValueError unless these blocks fit between the base network's encoder blocks."""
        layers = base.config.blocks
        if self.config.blocks > layers - 1:
            raise ValueError(f"{self.config.blocks} compensation blocks per branch need a base network with at "
                             f"least {self.config.blocks + 1} encoder blocks (K <= L-1); this one has {layers}")
        if base.config.channels != self.config.channels:
            raise ValueError(f"compensation built for {self.config.channels} channels, "
                             f"base network has {base.config.channels}")

    def blocks(self) -> list[A2SI]:
        return [block for block in self.modules() if isinstance(block, A2SI)]

    def noise_rows(self, rows: tuple[int, int] | None) -> None:
        """Draw the kernel-type noise as rows (start, total) of a larger batch (None: this batch)."""
        for block in self.blocks():
            block.noise_rows = rows

    def set_tau(self, tau: float) -> None:
        """The Gumbel-softmax temperature of every block's kernel-type choice (training schedules)."""
        for block in self.blocks():
            block.tau = tau

    def learn_query(self, on: bool) -> None:
        """Give every block's basis query a straight-through gradient while training (or not, as the authors)."""
        for block in self.blocks():
            block.learn_query = on

    def query_parameters(self) -> list[nn.Parameter]:
        """The parameters of the basis queries (no gradient unless ``learn_query``)."""
        return [p for block in self.blocks() for net in (block.query_task, block.query_image, block.query_head)
                for p in net.parameters()]

    def hook(self, task_features: torch.Tensor) -> BlockHook:
        """The ``VFN.encode`` hook that compensates encoder block i < K of each branch."""
        bank = self.bank()

        def compensate(branch: str, i: int, x: torch.Tensor) -> torch.Tensor:
            return self.branches[branch](bank, task_features, x, i) if i < self.config.blocks else x

        return compensate
