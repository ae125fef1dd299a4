"""Metric writers (`<workdir>/metrics.jsonl`, TensorBoard) and the human progress line."""

from __future__ import annotations

import json
import os
import sys
from typing import Mapping

import jax


class MetricWriter:
    """Writes scalars to `metrics.jsonl` (one object per line) and TensorBoard events.

    Only process 0 writes; other processes' calls are no-ops.
    """

    def __init__(self, workdir: str):
        self.enabled = jax.process_index() == 0
        if not self.enabled:
            return
        self._jsonl = open(os.path.join(workdir, "metrics.jsonl"), "a", encoding="utf-8")
        from tensorboardX import SummaryWriter  # Heavy import; only where metrics are written.

        self._tensorboard = SummaryWriter(os.path.join(workdir, "tensorboard"))

    def write(self, step: int, scalars: Mapping[str, float]) -> None:
        if not self.enabled:
            return
        record = {"step": int(step), **{k: float(v) for k, v in scalars.items()}}
        self._jsonl.write(json.dumps(record) + "\n")
        self._jsonl.flush()
        for name, value in scalars.items():
            self._tensorboard.add_scalar(name, float(value), int(step))

    def close(self) -> None:
        if self.enabled:
            self._jsonl.close()
            self._tensorboard.close()


def format_duration(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{seconds:02d}s"


def progress_line(step: int, total: int, scalars: Mapping[str, float], *,
                  items_per_sec: float, item_name: str, eta_seconds: float) -> str:
    """`step 200/2000 | loss 2.1043 | lr 9.8e-04 | 41.2k tok/s | ETA 1m05s`."""
    parts = [f"step {step}/{total}"]
    for name, value in scalars.items():
        short = name.split("/", 1)[-1]
        parts.append(f"lr {value:.2e}" if short == "lr" else f"{short} {value:.4f}")
    rate = f"{items_per_sec / 1e3:.1f}k" if items_per_sec >= 1e3 else f"{items_per_sec:.1f}"
    parts.append(f"{rate} {item_name}/s")
    parts.append(f"ETA {format_duration(eta_seconds)}")
    return " | ".join(parts)


def log(message: str) -> None:
    """A line on stdout from process 0."""
    if jax.process_index() == 0:
        print(message, file=sys.stdout, flush=True)
