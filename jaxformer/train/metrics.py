"""Metric writers (`<workdir>/metrics.jsonl`, TensorBoard), their reader, and the human
progress line."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping

import jax

from jaxformer.errors import UserError
from jaxformer.train.tensorboard import EventWriter

METRICS_FILE = "metrics.jsonl"
# In a record of evaluations of averaged parameters, and in every `jaxformer evaluate` record:
# how many checkpoints' mean was scored (1: one checkpoint).
AVERAGED = "averaged_checkpoints"


def _read_lines(path: str) -> list[tuple[str, dict]]:
    """(line, record) pairs of a metrics file; a last line cut short by a kill is left out."""
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().split("\n")
    except FileNotFoundError:
        return []
    records = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            records.append((line, json.loads(line)))
        except json.JSONDecodeError as e:
            if number == len(lines):  # No newline after it: a write that was cut short.
                break
            raise UserError(f"{path}:{number} is not a JSON record ({e})") from None
    return records


def read_metrics(workdir: str) -> list[dict]:
    """The records of `<workdir>/metrics.jsonl` in file order ([] if there is none yet)."""
    return [record for _, record in _read_lines(os.path.join(workdir, METRICS_FILE))]


def _ends_mid_line(path: str) -> bool:
    try:
        with open(path, "rb") as f:
            if f.seek(0, os.SEEK_END) == 0:
                return False
            f.seek(-1, os.SEEK_END)
            return f.read(1) != b"\n"
    except FileNotFoundError:
        return False


def _rewrite(path: str, last_step: int | None) -> None:
    """Atomically keeps the complete records of `path` with step <= `last_step` (all if None)."""
    kept = [line for line, record in _read_lines(path)
            if last_step is None or record.get("step", 0) <= last_step]
    temporary = path + ".tmp"
    with open(temporary, "w", encoding="utf-8") as f:
        f.writelines(line + "\n" for line in kept)
        f.flush()
        os.fsync(f.fileno())
    os.replace(temporary, path)


class MetricWriter:
    """Writes scalars to `metrics.jsonl` (one object per line) and TensorBoard events.

    A run resumed from the checkpoint at step S passes `resume_step=S`: the records a killed
    run wrote after S are dropped first, as the resumed run writes them again. Only process 0
    writes; other processes' calls are no-ops.
    """

    def __init__(self, workdir: str, *, resume_step: int | None = None):
        self.enabled = jax.process_index() == 0
        if not self.enabled:
            return
        path = os.path.join(workdir, METRICS_FILE)
        if resume_step is not None or _ends_mid_line(path):
            _rewrite(path, resume_step)
        self._jsonl = open(path, "a", encoding="utf-8")  # noqa: SIM115 -- open until close().
        self._tensorboard = EventWriter(os.path.join(workdir, "tensorboard"))

    def write(self, step: int, scalars: Mapping[str, float]) -> None:
        if not self.enabled:
            return
        values = {name: _number(value) for name, value in scalars.items()}
        self._jsonl.write(json.dumps({"step": int(step), **values}) + "\n")
        self._jsonl.flush()
        self._tensorboard.scalars(int(step), {k: float(v) for k, v in values.items()})

    def close(self) -> None:
        if self.enabled:
            self._jsonl.close()
            self._tensorboard.close()


def _number(value) -> int | float:
    """A count given as a Python int stays one ("averaged_checkpoints": 3); anything else
    (device scalars included) is a float."""
    return value if type(value) is int else float(value)


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
