"""A straightforward A2SI forward, one sample and one filter slot at a time, read off docs/method.md.

It shares the block's layers, so the batched module must reproduce it exactly; the benchmark
times it as the baseline.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from cldyn_cli.models.rsc import A2SI


def reference_a2si(block: A2SI, bank: torch.Tensor, task_features: torch.Tensor,
                   x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The compensated features and the chosen kernel type of every slot (B, M)."""
    batch = x.shape[0]
    m_slots, (sets, n_vectors, embed) = block.filters, bank.shape
    task = task_features.reshape(batch, 1, -1)

    # 1. Kernel-type choice.
    embedding = torch.cat([block.choice_task(task).mean(-1), block.choice_image(x).flatten(1)], dim=1)
    queries = block.choice_head(embedding).view(batch, m_slots, -1)
    logits = F.normalize(queries, dim=-1, eps=1e-8) @ F.normalize(block.prototypes, dim=-1, eps=1e-8).t()
    if block.training or block.sample:
        one_hot = F.gumbel_softmax(logits, tau=block.tau, hard=True)
    else:
        one_hot = F.one_hot(logits.argmax(-1), sets).float()
    types = one_hot.argmax(-1)

    # 2. Basis selection.
    rms = task.pow(2).mean(dim=(1, 2), keepdim=True).sqrt()
    q = block.query_head(torch.cat([block.query_task(task / (rms + 1e-8)).mean(-1),
                                    block.query_image(x).flatten(1)], dim=1))
    set_bank = (one_hot @ bank.reshape(sets, n_vectors * embed)).view(batch, m_slots, n_vectors, embed)
    vectors = []
    for b in range(batch):
        chosen: list = [None] * m_slots
        for t in types[b].unique().tolist():
            slots = [m for m in range(m_slots) if types[b, m] == t]
            similarity = F.cosine_similarity(q[b:b + 1], bank[t].detach(), dim=-1)
            for m, v in zip(slots, similarity.topk(len(slots)).indices.tolist()):
                chosen[m] = set_bank[b, m, v]  # through the slot's own one-hot
        vectors.append(torch.stack(chosen))

    # 3 and 4: dynamic kernels and injection.
    return x + block.inject(reference_respond(block, x, types, torch.stack(vectors))), types


def reference_respond(block: A2SI, x: torch.Tensor, types: torch.Tensor, vectors: torch.Tensor) -> torch.Tensor:
    """Step 3, one convolution per sample and slot: the mean of the slots' activated responses."""
    batch, c = x.shape[:2]
    responses = []
    for b in range(batch):
        for m in range(block.filters):
            t = int(types[b, m])
            if t == 0:
                weight = block.kernel_1x1(vectors[b, m]).view(c, c, 1, 1)
                responses.append(F.conv2d(x[b:b + 1], weight))
            else:
                weight = block.kernel_3x3(vectors[b, m]).view(c, c, 3, 3)
                responses.append(F.conv2d(x[b:b + 1], weight, padding=t, dilation=t))
    activated = F.leaky_relu(block.response_norm(torch.cat(responses)), 0.2)
    return activated.view(batch, block.filters, *x.shape[1:]).mean(1)
