"""Orbax checkpoints in `<workdir>/checkpoints`: train state + data iterator state per step.

Saves are asynchronous and atomic (orbax writes to a temporary directory and renames it when
complete), so a killed run never leaves a half-written step behind as "latest". A step that
fails to restore (corrupt files) is moved to `<workdir>/checkpoints_corrupt/` with a warning,
and the previous step is used instead.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from typing import Any

import grain
import jax
import jax.numpy as jnp
import orbax.checkpoint as ocp

log = logging.getLogger(__name__)


class _FrozenIteratorState:
    """The data iterator's state taken at save time (the live iterator moves on meanwhile)."""

    def __init__(self, state: dict):
        self._state = json.dumps(state, indent=2).encode()

    def get_state(self) -> bytes:
        return self._state


class CheckpointError(RuntimeError):
    """No checkpoint in the workdir can be restored."""

    exit_code = 1


class CheckpointMismatchError(ValueError):
    """The workdir's checkpoints hold a model of another shape than the config builds."""


def _param_shapes(params: Any) -> dict[str, tuple[int, ...]]:
    return {jax.tree_util.keystr(path): tuple(leaf.shape)
            for path, leaf in jax.tree_util.tree_leaves_with_path(params)}


class Checkpointer:
    def __init__(self, workdir: str, *, keep: int, async_save: bool = True):
        self.directory = os.path.join(os.path.abspath(workdir), "checkpoints")
        self.corrupt_directory = os.path.join(os.path.abspath(workdir), "checkpoints_corrupt")
        self.manager = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(
                max_to_keep=keep, create=True, enable_async_checkpointing=async_save),
            item_handlers={"state": ocp.StandardCheckpointHandler(),
                           "data": grain.checkpoint.CheckpointHandler()},
        )

    def steps(self) -> list[int]:
        return sorted(self.manager.all_steps())

    def save(self, step: int, state: Any, data_iter: Any) -> None:
        self.manager.save(step, args=ocp.args.Composite(
            state=ocp.args.StandardSave(state),
            data=grain.checkpoint.CheckpointSave(_FrozenIteratorState(data_iter.get_state())),
        ), force=True)

    def restore(self, abstract_state: Any, data_iter: Any = None) -> Any | None:
        """The newest readable step's state (and data position, into `data_iter` if given).

        None if there is no checkpoint.
        """
        steps = self.steps()
        for step in reversed(steps):
            items = {"state": ocp.args.StandardRestore(abstract_state)}
            if data_iter is not None:
                items["data"] = grain.checkpoint.CheckpointRestore(data_iter)
            self._check_shapes(step, abstract_state.params)
            try:
                restored = self.manager.restore(step, args=ocp.args.Composite(**items))
            except Exception as e:  # noqa: BLE001 -- any failure to read means "corrupt".
                log.warning("checkpoint step %d cannot be restored (%s: %s); moving it to %s and "
                            "trying the previous one", step, type(e).__name__,
                            str(e).splitlines()[0][:200], self.corrupt_directory)
                self._quarantine(step)
                continue
            return restored["state"]
        if steps:
            raise CheckpointError(f"none of the checkpoints in {self.directory} "
                                  f"(steps {steps}) can be restored")
        return None

    def average_params(self, abstract_state: Any, last: int) -> tuple[Any, list[int]]:
        """The mean of the parameters of the newest `last` checkpoints, and their steps.

        Averaging the last checkpoints gives a better model than the last one alone
        (Vaswani et al. 2017 average the last 5 for base models, 20 for big ones).
        """
        steps = self.steps()[-last:]
        if not steps:
            raise CheckpointError(f"no checkpoint in {self.directory} to average")
        total = None
        for step in steps:
            params = self.manager.restore(step, args=ocp.args.Composite(
                state=ocp.args.StandardRestore(abstract_state)))["state"].params
            params = jax.tree.map(lambda x: x.astype(jnp.float32), params)
            total = params if total is None else jax.tree.map(jnp.add, total, params)
        mean = jax.tree.map(lambda t, a: (t / len(steps)).astype(a.dtype), total,
                            abstract_state.params)
        return mean, steps

    def _check_shapes(self, step: int, params: Any) -> None:
        """A readable checkpoint of another model is the user's mistake, not corruption."""
        try:
            saved = self.manager.item_metadata(step)["state"]["params"]
        except Exception:  # noqa: BLE001 -- unreadable metadata: the restore decides.
            return
        saved, expected = _param_shapes(saved), _param_shapes(params)
        if saved != expected:
            differing = sorted(k for k in saved.keys() | expected.keys()
                               if saved.get(k) != expected.get(k))
            raise CheckpointMismatchError(
                f"the checkpoint at step {step} in {self.directory} holds a different model "
                f"than this config builds ({len(differing)} parameters differ, e.g. "
                f"{differing[0]}: saved {saved.get(differing[0])}, config "
                f"{expected.get(differing[0])}); use a new --workdir or the original config")

    def _quarantine(self, step: int) -> None:
        if jax.process_index() == 0:
            os.makedirs(self.corrupt_directory, exist_ok=True)
            target = os.path.join(self.corrupt_directory, str(step))
            if os.path.exists(target):
                shutil.rmtree(target)
            shutil.move(os.path.join(self.directory, str(step)), target)
        self.manager.reload()

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.close()
