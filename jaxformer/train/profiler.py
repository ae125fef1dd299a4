"""`train.profile_steps`: a `jax.profiler` trace of a window of train steps."""

from __future__ import annotations

import os
from typing import Any

import jax

from jaxformer.console import log


class StepProfiler:
    """A `jax.profiler` trace of steps `start ... start + count - 1` (of this run; none if
    it resumes past `start`), written to `workdir/profile` for TensorBoard's profile plugin
    or Perfetto. The trainer annotates each step, so the viewers split the trace by step."""

    def __init__(self, workdir: str, start: int, count: int):
        self.directory = os.path.join(workdir, "profile")
        self.start, self.end = start, start + count - 1
        self.enabled = count > 0
        self.last: int | None = None  # The last step traced while a trace is under way.

    def before(self, step: int) -> None:
        if self.enabled and step == self.start:
            jax.profiler.start_trace(self.directory)
            self.last = step

    def after(self, step: int, metrics: Any) -> None:
        if self.last is None:
            return
        self.last = step
        if step == self.end:
            jax.block_until_ready(metrics)  # The trace holds the whole last step.
            self.stop()

    def stop(self) -> None:
        if self.last is not None:
            jax.profiler.stop_trace()
            log(f"profile of steps {self.start}-{self.last} written to {self.directory}")
            self.last = None
