"""Orbax checkpoints in `<workdir>/checkpoints`: train state + data iterator state per step.

Saves are asynchronous and atomic (orbax writes to a temporary directory and renames it when
complete), so a killed run never leaves a half-written step behind as "latest". A step that
fails to restore (corrupt files) is moved to `<workdir>/checkpoints_corrupt/` with one warning
line, and the previous step is used instead.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import sys
import textwrap
import warnings
from typing import Any

import grain
import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

from jaxformer.errors import UserError
from jaxformer.quiet_logs import dropped_log_lines

log = logging.getLogger(__name__)
WINDOW = "metrics_window"  # The checkpoint item of a run stopped between metrics records.


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


_ORBAX_DIRECTORY = os.path.dirname(os.path.dirname(ocp.__file__))


def _is_abandoned_read(unraisable: Any) -> bool:
    """Whether an unraisable exception comes from the reads of a restore that already failed.

    Orbax restores in a fresh event loop and closes it at the first failed read; the other
    reads still in flight then end against the closed loop (tensorstore callbacks raise
    "Event loop is closed") or are destroyed with it (orbax coroutines raise on close).
    """
    error = unraisable.exc_value
    if isinstance(error, RuntimeError) and str(error) == "Event loop is closed":
        return True
    code = getattr(unraisable.object, "cr_code", None)
    return code is not None and code.co_filename.startswith(_ORBAX_DIRECTORY)


class _DropAbandonedReads:
    """`sys.unraisablehook` that drops abandoned-read noise and passes anything else on."""

    def __init__(self, previous: Any):
        self.previous = previous

    def __call__(self, unraisable: Any) -> None:
        if not _is_abandoned_read(unraisable):
            self.previous(unraisable)


class _DropAbandonedReadLogs(logging.Filter):
    """asyncio's reports of the abandoned reads' futures and tasks ("never retrieved", ...)."""

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage() + (str(record.exc_info[1]) if record.exc_info else "")
        return "orbax" not in text and "tensorstore" not in text.lower()


def _silence_abandoned_reads() -> None:
    """Keeps a failed restore to the one warning line the Checkpointer writes for it.

    Process-wide and lasting: the abandoned reads end, and are garbage-collected, at any time
    after the failed restore has returned. Only their own noise is dropped.
    """
    if not isinstance(sys.unraisablehook, _DropAbandonedReads):
        sys.unraisablehook = _DropAbandonedReads(sys.unraisablehook)
    asyncio_log = logging.getLogger("asyncio")
    if not any(isinstance(f, _DropAbandonedReadLogs) for f in asyncio_log.filters):
        asyncio_log.addFilter(_DropAbandonedReadLogs())
    # An abandoned metadata read that never started warns when it is collected.
    warnings.filterwarnings("ignore", category=RuntimeWarning,
                            message=r"coroutine 'Store\._get_array_metadatas' was never awaited")


def _reason(error: BaseException) -> str:
    """The innermost cause on one short line (orbax's wrappers repeat whole tensorstore specs)."""
    while error.__cause__ is not None:
        error = error.__cause__
    line = (str(error).splitlines() or [""])[0].split(" [tensorstore_spec=")[0]
    return f"{type(error).__name__}: {textwrap.shorten(line, 200, placeholder=' ...')}"


def _param_shapes(params: Any) -> dict[str, tuple[int, ...]]:
    return {jax.tree_util.keystr(path): tuple(leaf.shape)
            for path, leaf in jax.tree_util.tree_leaves_with_path(params)}


def _read_only() -> ocp.CheckpointManagerOptions:
    """Options of a manager that only reads, in this process alone (no barrier with the
    others, which need not open it)."""
    this = jax.process_index()
    return ocp.CheckpointManagerOptions(
        create=False, save_root_metadata=False, enable_async_checkpointing=False,
        multiprocessing_options=ocp.options.MultiprocessingOptions(
            primary_host=this, active_processes={this}))


# Replicated arrays are written in parts by their replicas (orbax's replica-parallel save)
# only when each part holds at least this much. Splitting costs one compiled slice per leaf
# and replica (the first save of a 4-layer GPT on 8 CPU devices: 64 compiles, ~4 s), worth
# it only for leaves large enough that the parallel write saves more.
MIN_REPLICA_SLICE_BYTES = 1 << 20


def _use_min_replica_slice() -> None:
    """Makes orbax's jax.Array handler (a process-wide registration) keep small leaves whole;
    the files written are the same."""
    current = ocp.type_handlers.get_type_handler(jax.Array)
    if getattr(current, "_min_slice_bytes_for_replica_parallel", None) == MIN_REPLICA_SLICE_BYTES:
        return
    handler = ocp.type_handlers.ArrayHandler(
        min_slice_bytes_for_replica_parallel=MIN_REPLICA_SLICE_BYTES,
        array_metadata_store=getattr(current, "_array_metadata_store", None))
    with dropped_log_lines("Type handler registry type"):  # "... overriding jax.Array"
        ocp.type_handlers.register_type_handler(jax.Array, handler, override=True)


def _manager(directory: str, options: ocp.CheckpointManagerOptions) -> ocp.CheckpointManager:
    _use_min_replica_slice()
    return ocp.CheckpointManager(
        directory, options=options,
        item_handlers={"state": ocp.StandardCheckpointHandler(),
                       "data": grain.checkpoint.CheckpointHandler(),
                       WINDOW: ocp.JsonCheckpointHandler()})


def _check_shapes(manager: ocp.CheckpointManager, step: int, params: Any) -> bool:
    """Raises CheckpointMismatchError if `step` holds a model of other shapes than `params`;
    False if its metadata cannot be read (then the restore decides whether it is corrupt).

    A readable checkpoint of another model is the user's mistake, not corruption.
    """
    try:
        saved = _param_shapes(manager.item_metadata(step)["state"]["params"])
    except Exception:  # noqa: BLE001 -- unreadable metadata: the restore decides.
        return False
    expected = _param_shapes(params)
    if saved != expected:
        differing = sorted(k for k in saved.keys() | expected.keys()
                           if saved.get(k) != expected.get(k))
        raise CheckpointMismatchError(
            f"the checkpoint at step {step} in {manager.directory} holds a different model "
            f"than this config builds ({len(differing)} parameters differ, e.g. "
            f"{differing[0]}: saved {saved.get(differing[0])}, config "
            f"{expected.get(differing[0])}); use a new --workdir or the original config")
    return True


class Checkpointer:
    """The checkpoints of one workdir. `set_aside_corrupt`: a corrupt newest step met by
    `restore` is moved to `checkpoints_corrupt/` (training, which will save again); commands
    that only read a workdir pass False and skip it, leaving the workdir as it is."""

    def __init__(self, workdir: str, *, keep: int, async_save: bool = True,
                 set_aside_corrupt: bool = True):
        self.directory = os.path.join(os.path.abspath(workdir), "checkpoints")
        self.corrupt_directory = os.path.join(os.path.abspath(workdir), "checkpoints_corrupt")
        self.set_aside_corrupt = set_aside_corrupt
        self.manager = _manager(self.directory, ocp.CheckpointManagerOptions(
            max_to_keep=keep, create=True, enable_async_checkpointing=async_save))

    @staticmethod
    def check_compatible(workdir: str, params: Any) -> None:
        """Raises CheckpointMismatchError if the newest checkpoint in `workdir` whose metadata
        reads holds a model of other shapes than `params`. Reads only; creates nothing."""
        directory = os.path.join(os.path.abspath(workdir), "checkpoints")
        if not os.path.isdir(directory):
            return
        manager = _manager(directory, _read_only())
        try:
            for step in sorted(manager.all_steps(), reverse=True):
                if _check_shapes(manager, step, params):
                    return
        finally:
            manager.close()

    @staticmethod
    def read_params(workdir: str, step: int = -1) -> tuple[Any, int]:
        """The parameters (numpy, as saved) of another run's checkpoint at `step` (< 0: the
        newest), and that step; for `init_from`. Reads only; creates nothing."""
        directory = os.path.join(os.path.abspath(workdir), "checkpoints")
        steps = (sorted(int(n) for n in os.listdir(directory) if n.isdigit())
                 if os.path.isdir(directory) else [])
        if not steps:
            raise UserError(f"{workdir}: no checkpoints (train it first)")
        if step >= 0 and step not in steps:
            raise UserError(f"{workdir} has no checkpoint at step {step} (its steps: {steps})")
        step = steps[-1] if step < 0 else step
        _silence_abandoned_reads()
        manager = _manager(directory, _read_only())
        try:
            saved = manager.item_metadata(step)["state"]
            device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
            abstract = jax.tree.map(
                lambda m: jax.ShapeDtypeStruct(tuple(m.shape), m.dtype, sharding=device), saved)
            state = manager.restore(step, args=ocp.args.Composite(
                state=ocp.args.StandardRestore(abstract)))["state"]
        except Exception as e:  # noqa: BLE001 -- any failure to read means "corrupt".
            raise CheckpointError(f"checkpoint step {step} in {directory} cannot be restored "
                                  f"({_reason(e)})") from None
        finally:
            manager.close()
        return jax.tree.map(np.asarray, state["params"]), step

    def steps(self) -> list[int]:
        return sorted(self.manager.all_steps())

    def save(self, step: int, state: Any, data_iter: Any,
             window: list[dict[str, float]] | None = None) -> None:
        """Saves `state`, the data position (unless `data_iter` is None: imported weights)
        and, for a run stopped between two metrics records, the metrics of the steps since
        the last record (`window`), which the resumed run's next record includes."""
        items = {"state": ocp.args.StandardSave(state)}
        if data_iter is not None:
            items["data"] = grain.checkpoint.CheckpointSave(
                _FrozenIteratorState(data_iter.get_state()))
        if window:
            items[WINDOW] = ocp.args.JsonSave(window)
        self.manager.save(step, args=ocp.args.Composite(**items), force=True)

    def read_window(self, step: int) -> list[dict[str, float]]:
        """The metrics window saved with `step` ([] if none: the step ended a record)."""
        if not os.path.isdir(os.path.join(self.directory, str(step), WINDOW)):
            return []
        return self.manager.restore(step, args=ocp.args.Composite(
            **{WINDOW: ocp.args.JsonRestore()}))[WINDOW]

    def restore(self, abstract_state: Any, data_iter: Any = None, *,
                step: int | None = None) -> Any | None:
        """The state of the newest readable step, or of `step` if given (and the data position,
        into `data_iter` if given).

        None if there is no checkpoint. An unreadable newest step is moved aside and the one
        before it is tried; an explicit `step` is read as it is (ValueError if there is no such
        step, CheckpointError if it is unreadable, and nothing is moved).
        """
        _silence_abandoned_reads()
        steps = self.steps()
        if step is not None:
            if step not in steps:
                raise UserError(f"no checkpoint at step {step} in {self.directory} "
                                 f"(its steps: {steps})")
            try:
                return self._restore_step(step, abstract_state, data_iter)
            except CheckpointMismatchError:
                raise
            except Exception as e:  # noqa: BLE001 -- any failure to read means "corrupt".
                raise CheckpointError(
                    f"checkpoint step {step} cannot be restored ({_reason(e)})") from None
        for newest in reversed(steps):
            try:
                return self._restore_step(newest, abstract_state, data_iter)
            except CheckpointMismatchError:
                raise
            except Exception as e:  # noqa: BLE001 -- any failure to read means "corrupt".
                if self.set_aside_corrupt:
                    where = f"moved to {self._quarantine(newest)}"
                else:
                    where = "skipped"
                log.warning("checkpoint step %d cannot be restored (%s); %s", newest,
                            _reason(e), where)
        if steps:
            raise CheckpointError(f"none of the checkpoints in {self.directory} "
                                  f"(steps {steps}) can be restored")
        return None

    def average_params(self, abstract_state: Any, last: int) -> tuple[Any, list[int]]:
        """The mean parameters of the readable checkpoints among the newest `last`; their steps.

        Averaging the last checkpoints gives a better model than the last one alone
        (Vaswani et al. 2017 average the last 5 for base models, 20 for big ones). An unreadable
        checkpoint is left out with a warning and left in place (training may still own it).
        """
        if last < 1:
            raise ValueError(f"the number of checkpoints to average must be >= 1, not {last}")
        steps = self.steps()[-last:]
        if not steps:
            raise CheckpointError(f"no checkpoint in {self.directory} to average")
        _silence_abandoned_reads()
        total, used = None, []
        for step in steps:
            try:
                params = self._restore_step(step, abstract_state).params
            except CheckpointMismatchError:
                raise
            except Exception as e:  # noqa: BLE001 -- any failure to read means "corrupt".
                log.warning("checkpoint step %d cannot be restored (%s); left out of the average",
                            step, _reason(e))
                continue
            params = jax.tree.map(lambda x: x.astype(jnp.float32), params)
            total = params if total is None else jax.tree.map(jnp.add, total, params)
            used.append(step)
        if not used:
            raise CheckpointError(f"none of the checkpoints in {self.directory} "
                                  f"(steps {steps}) can be restored to average")
        mean = jax.tree.map(lambda t, a: (t / len(used)).astype(a.dtype), total,
                            abstract_state.params)
        return mean, used

    def _restore_step(self, step: int, abstract_state: Any, data_iter: Any = None) -> Any:
        _check_shapes(self.manager, step, abstract_state.params)
        items = {"state": ocp.args.StandardRestore(abstract_state)}
        if data_iter is not None and not os.path.isdir(
                os.path.join(self.directory, str(step), "data")):
            log.warning("checkpoint step %d holds no data position (imported weights): the "
                        "data starts from the beginning", step)
        elif data_iter is not None:
            items["data"] = grain.checkpoint.CheckpointRestore(data_iter)
        return self.manager.restore(step, args=ocp.args.Composite(**items))["state"]

    def _quarantine(self, step: int) -> str:
        """Moves a step out of the manager's sight (process 0 moves it); where it went."""
        target = os.path.join(self.corrupt_directory, str(step))
        if jax.process_index() == 0:
            os.makedirs(self.corrupt_directory, exist_ok=True)
            if os.path.exists(target):
                shutil.rmtree(target)
            shutil.move(os.path.join(self.directory, str(step)), target)
        self.manager.reload()
        return target

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.close()
