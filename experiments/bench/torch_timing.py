"""What the PyTorch reference benches share: the timing options, AdamW's parameter groups as
jaxformer's, and the timed loop (warm-up steps, then the median of the timed ones)."""

import argparse
import statistics
import time
from collections.abc import Callable, Iterable
from typing import Any

import torch


def add_timing_arguments(parser: argparse.ArgumentParser, *, steps: int, warmup: int = 3,
                         threads: int = 2) -> None:
    """`--steps`, `--warmup` and `--threads` (0: torch's default)."""
    parser.add_argument("--steps", type=int, default=steps)
    parser.add_argument("--warmup", type=int, default=warmup)
    parser.add_argument("--threads", type=int, default=threads,
                        help="torch threads (0: torch's default)")


def seed_and_threads(args: argparse.Namespace) -> None:
    """Sets the thread count `args.threads` asks for, and seed 0."""
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)


def decay_groups(params: Iterable, weight_decay: float) -> list[dict]:
    """AdamW parameter groups with weight decay on matrices (and higher-rank tensors) only,
    as jaxformer's `decay_mask`."""
    params = list(params)
    return [{"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
            {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]


def timed(step: Callable[[], Any], *, warmup: int, steps: int) -> tuple[float, Any]:
    """The median seconds of `steps` calls of `step` after `warmup` untimed ones, and what the
    last call returned."""
    result = None
    for _ in range(warmup):
        result = step()
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        result = step()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result
