"""Time the batched A2SI against the per-sample, per-slot reference (tests/reference_a2si.py),
or, with --authors DIR, against the authors' own A2SI (their models/A2SI.py in DIR).

Reports eval-mode forward and train-mode forward+backward, and the GFLOP/s the batched forward
reaches beside a plain 64->128 3x3 convolution on the same machine (the largest layer inside
A2SI, so a practical ceiling). With --authors, their block is given random weights, converted
to ours with the checkpoint converter, both outputs are checked to agree (same Gumbel noise),
and the speed-up (their time / ours) is reported.
Examples: python benchmarks/bench_a2si.py --device cuda
          python benchmarks/bench_a2si.py --authors ../authors_cldyn --batches 4
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from authors_code import import_authors_a2si  # noqa: E402
from authors_layout import randomise  # noqa: E402
from reference_a2si import reference_a2si, reference_respond  # noqa: E402

from cldyn_cli.models.convert import convert_authors_rsc_checkpoint  # noqa: E402
from cldyn_cli.models.rsc import A2SI, BasisVectorBank, SemanticCompensation, conv1d_mean  # noqa: E402


def timed(fns: list[Callable[[], object]], repeats: int, device: torch.device) -> list[float]:
    """Best seconds per call of each function after a warm-up; the calls alternate, so that
    other load on the machine disturbs all of them alike."""
    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    best = [float("inf")] * len(fns)
    for round_ in range(repeats + 1):
        for k, fn in enumerate(fns):
            sync()
            start = time.perf_counter()
            fn()
            sync()
            if round_:
                best[k] = min(best[k], time.perf_counter() - start)
    return best


def a2si_flops(batch: int, size: int, task_len: int, c: int = 8, e: int = 256, m: int = 4) -> float:
    """Forward FLOPs (2 per multiply-add) of the batched A2SI: its convolutions and the task Conv1d.

    Every slot is counted as 3x3 (an upper bound; the slots' share is under 3%).
    """
    pixels = batch * size * size
    image = pixels * (c * 8 * 9 + c * (e // 4) * 9 + (e // 4) * (e // 2) * 9 + m * c * c * 9 + c * c)
    task = batch * task_len * (4 * 3 + 4 * 8 * 3 + (e // 4) * 3)  # the wide Conv1d only on 3 sums
    return 2.0 * (image + task)


def same_weights_as_authors(folder: Path, device: torch.device) -> tuple[nn.Module, A2SI, torch.Tensor]:
    """Their block with random weights, ours converted from it, and a bank, all on ``device``."""
    theirs = import_authors_a2si(folder)(embed_dim=256, inC=8, filter_num=4, set_num=4, vector_num=32).float()
    randomise(theirs, seed=0)
    bank = BasisVectorBank(4, 32, 256).vectors.detach()
    state = {f"a2si0.{k}": v for k, v in theirs.state_dict().items()}
    config, converted = convert_authors_rsc_checkpoint({"rsc_ir": state, "rsc_vi": state, "bvb": bank})
    compensation = SemanticCompensation(config)
    compensation.load_state_dict(converted)
    ours = compensation.branches["ir"].blocks[0]
    ours.sample = True  # their block draws the kernel types in eval mode too
    return theirs.to(device), ours.to(device), bank.to(device)


def against_authors(folder: Path, batches: list[int], size: int, task_shape: list[int], repeats: int,
                    device: torch.device) -> None:
    theirs, ours, bank = same_weights_as_authors(folder, device)
    initial = [copy.deepcopy(module.state_dict()) for module in (theirs, ours)]
    for batch in batches:
        for module, state in zip((theirs, ours), initial):  # training timings move BatchNorm's running statistics
            module.load_state_dict(state)
        x = torch.randn(batch, 8, size, size, device=device)
        task = torch.randn(batch, *task_shape, device=device)
        for module in (theirs, ours):
            module.eval()
        with torch.no_grad():
            outs = []
            for module in (theirs, ours):
                torch.manual_seed(batch)  # the same Gumbel noise for both
                outs.append(module(bank, task, x))
            gap = (outs[0] - outs[1]).abs().max().item()
            eval_ours, eval_theirs = timed([lambda: ours(bank, task, x), lambda: theirs(bank, task, x)],
                                           repeats, device)
        for module in (theirs, ours):
            module.train()
        train_ours, train_theirs = timed([lambda: ours(bank, task, x).square().mean().backward(),
                                          lambda: theirs(bank, task, x).square().mean().backward()],
                                         repeats, device)
        print(f"B={batch:3d} outputs differ by at most {gap:.1e}")
        print(f"      eval forward   ours {eval_ours * 1e3:8.1f} ms  authors {eval_theirs * 1e3:8.1f} ms  "
              f"speedup {eval_theirs / eval_ours:5.2f}x")
        print(f"      train fwd+bwd  ours {train_ours * 1e3:8.1f} ms  authors {train_theirs * 1e3:8.1f} ms  "
              f"speedup {train_theirs / train_ours:5.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batches", type=int, nargs="+", default=[4, 16])
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--task-shape", type=int, nargs="+", default=[256, 20, 20],
                        help="task features per sample (C, H, W), e.g. a detector's head input")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, help="CPU threads (default: torch's choice)")
    parser.add_argument("--authors", type=Path, metavar="DIR",
                        help="compare with the authors' A2SI in DIR/models/A2SI.py instead of the loop reference")
    args = parser.parse_args()
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    if args.authors:
        print(f"device {device}, threads {torch.get_num_threads()}, {args.size}x{args.size}, "
              f"task features {tuple(args.task_shape)}, best of {args.repeats}, against {args.authors}")
        try:
            against_authors(args.authors, args.batches, args.size, args.task_shape, args.repeats, device)
        except ImportError as exc:
            sys.exit(f"error: {exc}")
        return

    block = A2SI(embed_dim=256, channels=8, filters=4, sets=4, vectors=32).to(device)
    nn.init.normal_(block.inject.weight, std=0.1)  # a trained block: gradients flow everywhere
    bank = BasisVectorBank(4, 32, 256).to(device).vectors
    task_len = 1
    for n in args.task_shape:
        task_len *= n
    print(f"device {device}, threads {torch.get_num_threads()}, {args.size}x{args.size}, "
          f"task features {tuple(args.task_shape)}, best of {args.repeats}")

    for batch in args.batches:
        x = torch.randn(batch, 8, args.size, args.size, device=device)
        task = torch.randn(batch, *args.task_shape, device=device)
        wide_in = torch.randn(batch, 64, args.size, args.size, device=device)
        wide_w = torch.randn(128, 64, 3, 3, device=device)

        def train_step(fn: Callable[[], torch.Tensor]) -> Callable[[], None]:
            return lambda: fn().square().mean().backward()

        block.eval()
        seq = task.reshape(batch, 1, -1)
        with torch.no_grad():
            conv_s, eval_vec, eval_ref = timed([lambda: F.conv2d(wide_in, wide_w, padding=1),
                                                lambda: block(bank, task, x),
                                                lambda: reference_a2si(block, bank, task, x)], args.repeats, device)
            emb_fused, emb_plain = timed([lambda: conv1d_mean(seq, block.query_task),
                                          lambda: block.query_task(seq).mean(-1)], args.repeats, device)
            types = torch.randint(0, 4, (batch, 4), device=device)  # a mix of kernel types
            vectors = torch.randn(batch, 4, 256, device=device)
            slots_vec, slots_ref = timed([lambda: block.respond(x, types, vectors),
                                          lambda: reference_respond(block, x, types, vectors)], args.repeats, device)
        block.train()
        train_vec, train_ref = timed([train_step(lambda: block(bank, task, x)),
                                      train_step(lambda: reference_a2si(block, bank, task, x)[0])],
                                     args.repeats, device)

        conv_gflops = 2.0 * batch * args.size ** 2 * 64 * 128 * 9 / conv_s / 1e9
        a2si_gflops = a2si_flops(batch, args.size, task_len) / eval_vec / 1e9
        print(f"B={batch:3d} eval forward   batched {eval_vec * 1e3:8.1f} ms  loop {eval_ref * 1e3:8.1f} ms  "
              f"speedup {eval_ref / eval_vec:5.2f}x")
        print(f"      train fwd+bwd  batched {train_vec * 1e3:8.1f} ms  loop {train_ref * 1e3:8.1f} ms  "
              f"speedup {train_ref / train_vec:5.2f}x")
        print(f"      parts (eval): query task embedding fused {emb_fused * 1e3:.1f} ms, plain Conv1d "
              f"{emb_plain * 1e3:.1f} ms; slot convolutions batched {slots_vec * 1e3:.1f} ms, "
              f"loop {slots_ref * 1e3:.1f} ms ({slots_ref / slots_vec:.2f}x)")
        print(f"      A2SI {a2si_gflops:6.1f} GFLOP/s vs plain 64->128 conv {conv_gflops:6.1f} GFLOP/s "
              f"({a2si_gflops / conv_gflops:.0%})")


if __name__ == "__main__":
    main()
