"""Checkpointer: keep-K, restore of the newest step, averaging of the last checkpoints, and
quiet handling of corrupt checkpoints."""

import logging
import os
import pathlib
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxformer.train.checkpoint import (
    Checkpointer,
    CheckpointError,
    CheckpointMismatchError,
)
from jaxformer.train.state import TrainState

ROOT = pathlib.Path(__file__).resolve().parents[2]


class _Iterator:
    """Stands in for a data iterator: only its state is saved."""

    def get_state(self):
        return {"step": 0}


def _state(step, scale):
    params = {"w": jnp.full((2, 3), scale, jnp.float32), "b": jnp.full((3,), -scale, jnp.float32)}
    return TrainState(step=jnp.asarray(step, jnp.int32), params=params,
                      opt_state={"m": jnp.zeros((3,))}, rng=jnp.zeros((2,), jnp.uint32))


def _abstract(state):
    device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=device), state)


def _corrupt(workdir, step):
    """Truncates the array data files of a step, as a failing disk or a partial copy would."""
    data = [p for p in (workdir / "checkpoints" / str(step) / "state").rglob("*")
            if p.is_file() and p.parent.name == "d"]
    assert data
    for path in data:
        os.truncate(path, 10)


def _random_state(step, rng):
    params = {"w": jnp.asarray(rng.normal(size=(4, 3)), jnp.float32),
              "b": jnp.asarray(rng.normal(size=(3,)), jnp.float32)}
    return TrainState(step=jnp.asarray(step, jnp.int32), params=params,
                      opt_state={"m": jnp.zeros((3,))}, rng=jnp.zeros((2,), jnp.uint32))


def test_average_of_the_last_checkpoints(tmp_path):
    checkpointer = Checkpointer(str(tmp_path), keep=3, async_save=False)
    for step, scale in [(1, 100.0), (2, 1.0), (3, 2.0), (4, 6.0)]:
        checkpointer.save(step, _state(step, scale), _Iterator())
    assert checkpointer.steps() == [2, 3, 4]  # keep=3 dropped step 1
    params, steps = checkpointer.average_params(_abstract(_state(0, 0.0)), 2)
    assert steps == [3, 4]
    np.testing.assert_allclose(params["w"], np.full((2, 3), 4.0))
    np.testing.assert_allclose(params["b"], np.full((3,), -4.0))
    params, steps = checkpointer.average_params(_abstract(_state(0, 0.0)), 10)
    assert steps == [2, 3, 4]
    np.testing.assert_allclose(params["w"], np.full((2, 3), 3.0))
    restored = checkpointer.restore(_abstract(_state(0, 0.0)))
    assert int(restored.step) == 4
    checkpointer.close()


def test_average_without_checkpoints_is_an_error(tmp_path):
    checkpointer = Checkpointer(str(tmp_path), keep=3, async_save=False)
    with pytest.raises(CheckpointError, match="no checkpoint"):
        checkpointer.average_params(_abstract(_state(0, 0.0)), 5)
    checkpointer.close()


def test_average_skips_an_unreadable_checkpoint(tmp_path, caplog):
    rng = np.random.default_rng(0)
    checkpointer = Checkpointer(str(tmp_path), keep=3, async_save=False)
    saved = {}
    for step in (1, 2, 3):
        state = _random_state(step, rng)
        saved[step] = jax.tree.map(np.asarray, state.params)
        checkpointer.save(step, state, _Iterator())
    _corrupt(tmp_path, 2)
    with caplog.at_level(logging.WARNING, logger="jaxformer.train.checkpoint"):
        params, steps = checkpointer.average_params(_abstract(_random_state(0, rng)), 3)
    assert steps == [1, 3]
    for name in ("w", "b"):
        np.testing.assert_allclose(params[name], (saved[1][name] + saved[3][name]) / 2,
                                   rtol=1e-6)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "checkpoint step 2 cannot be restored" in warnings[0]
    assert "\n" not in warnings[0]
    assert checkpointer.steps() == [1, 2, 3]  # averaging reads; it moves nothing
    checkpointer.close()


def test_average_of_only_unreadable_checkpoints_is_an_error(tmp_path):
    rng = np.random.default_rng(0)
    checkpointer = Checkpointer(str(tmp_path), keep=3, async_save=False)
    for step in (1, 2):
        checkpointer.save(step, _random_state(step, rng), _Iterator())
        _corrupt(tmp_path, step)
    with pytest.raises(CheckpointError, match="none of the checkpoints"):
        checkpointer.average_params(_abstract(_random_state(0, rng)), 2)
    checkpointer.close()


def test_restore_of_an_explicit_step(tmp_path):
    checkpointer = Checkpointer(str(tmp_path), keep=3, async_save=False)
    for step in (1, 2, 3):
        checkpointer.save(step, _state(step, float(step)), _Iterator())
    abstract = _abstract(_state(0, 0.0))
    restored = checkpointer.restore(abstract, step=2)
    assert int(restored.step) == 2
    np.testing.assert_allclose(restored.params["w"], np.full((2, 3), 2.0))
    with pytest.raises(ValueError, match=r"no checkpoint at step 7 .*\[1, 2, 3\]"):
        checkpointer.restore(abstract, step=7)
    _corrupt(tmp_path, 1)
    with pytest.raises(CheckpointError, match="checkpoint step 1 cannot be restored"):
        checkpointer.restore(abstract, step=1)
    assert checkpointer.steps() == [1, 2, 3]  # An explicit step is never moved aside.
    checkpointer.close()


def test_check_compatible_reads_the_newest_checkpoint_and_creates_nothing(tmp_path):
    Checkpointer.check_compatible(str(tmp_path / "new"), _state(0, 0.0).params)
    assert not (tmp_path / "new").exists()
    checkpointer = Checkpointer(str(tmp_path), keep=3, async_save=False)
    checkpointer.save(1, _state(1, 1.0), _Iterator())
    checkpointer.close()
    Checkpointer.check_compatible(str(tmp_path), _state(0, 0.0).params)
    other = {"w": jnp.zeros((2, 4)), "b": jnp.zeros((3,))}
    with pytest.raises(CheckpointMismatchError, match=r"\['w'\]: saved \(2, 3\), config \(2, 4\)"):
        Checkpointer.check_compatible(str(tmp_path), other)


_RESTORE_AFTER_CORRUPTION = textwrap.dedent("""
    import gc, logging, os, pathlib, sys, time
    import jax, jax.numpy as jnp
    from jaxformer.train.checkpoint import Checkpointer
    from jaxformer.train.state import TrainState

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    class Iterator:
        def get_state(self):
            return {"step": 0}

    def state(step):
        # Many arrays: many reads in flight when the first one fails.
        params = {f"w{i}": jnp.full((32, 32), float(step)) for i in range(40)}
        return TrainState(step=jnp.asarray(step, jnp.int32), params=params,
                          opt_state={}, rng=jnp.zeros((2,), jnp.uint32))

    workdir = pathlib.Path(sys.argv[1])
    checkpointer = Checkpointer(str(workdir), keep=3, async_save=False,
                                set_aside_corrupt=sys.argv[2] == "set_aside")
    checkpointer.save(1, state(1), Iterator())
    checkpointer.save(2, state(2), Iterator())
    for path in (workdir / "checkpoints" / "2" / "state").rglob("*"):
        if path.is_file() and path.parent.name == "d":
            os.truncate(path, 10)
    device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=device),
                            state(0))
    print("restored step", int(checkpointer.restore(abstract).step))
    checkpointer.close()
    time.sleep(0.5)  # The abandoned reads of step 2 end, and are collected, meanwhile.
    gc.collect()
""")


@pytest.mark.parametrize("mode", ["set_aside", "read_only"])
def test_a_corrupt_newest_checkpoint_costs_one_warning_line(tmp_path, mode):
    """Training sets the corrupt step aside; a command that only reads leaves it in place."""
    result = subprocess.run([sys.executable, "-c", _RESTORE_AFTER_CORRUPTION, str(tmp_path),
                             mode], check=False, cwd=ROOT, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip() == "restored step 1"
    lines = result.stderr.splitlines()
    assert len(lines) <= 3, result.stderr[-3000:]
    warnings = [line for line in lines if "checkpoint step 2 cannot be restored" in line]
    corrupt = tmp_path / "checkpoints_corrupt" / "2"
    assert len(warnings) == 1
    if mode == "set_aside":
        assert warnings[0].endswith(f"; moved to {corrupt}") and corrupt.is_dir()
    else:
        assert warnings[0].endswith("; skipped") and not corrupt.exists()
        assert (tmp_path / "checkpoints" / "2").is_dir()


def test_replicas_split_only_large_leaves_when_saving(tmp_path, caplog):
    """A replicated leaf is written in parts by its replicas (one compiled slice each)
    only when each part holds MIN_REPLICA_SLICE_BYTES; small leaves are written whole."""
    from jaxformer.train.checkpoint import MIN_REPLICA_SLICE_BYTES

    devices = jax.devices()
    assert len(devices) == 8
    replicated = jax.sharding.NamedSharding(jax.sharding.Mesh(np.array(devices), ("data",)),
                                            jax.sharding.PartitionSpec())
    large = MIN_REPLICA_SLICE_BYTES * len(devices) // 4  # float32: one full part per replica.
    params = {"small": jnp.ones((8, 7)), "just_small": jnp.ones((len(devices), large // 8 - 1)),
              "large": jnp.ones((len(devices), large // 8))}
    state = jax.device_put(TrainState(step=jnp.asarray(1, jnp.int32), params=params, opt_state={},
                                      rng=jnp.zeros((2,), jnp.uint32)), replicated)
    checkpointer = Checkpointer(str(tmp_path), keep=1, async_save=False)
    try:
        with jax.log_compiles(True), caplog.at_level(logging.WARNING):
            checkpointer.save(1, state, _Iterator())
            checkpointer.wait()
    finally:
        checkpointer.close()
    slices = [r.getMessage() for r in caplog.records
              if "Finished XLA compilation of jit(slice)" in r.getMessage()]
    # One slice per replica's part of the large leaf (its own offset each); none for the rest.
    assert len(slices) == len(devices), slices


def test_the_array_handler_is_replaced_once_and_quietly(tmp_path, caplog):
    import orbax.checkpoint as ocp

    from jaxformer.train.checkpoint import MIN_REPLICA_SLICE_BYTES

    store = ocp.type_handlers.get_type_handler(jax.Array)._array_metadata_store
    ocp.type_handlers.register_type_handler(  # orbax's own handler, as at start-up
        jax.Array, ocp.type_handlers.ArrayHandler(array_metadata_store=store), override=True)
    caplog.clear()
    with caplog.at_level(logging.INFO):
        for _ in range(2):
            Checkpointer(str(tmp_path), keep=1, async_save=False).close()
    handler = ocp.type_handlers.get_type_handler(jax.Array)
    assert handler._min_slice_bytes_for_replica_parallel == MIN_REPLICA_SLICE_BYTES
    assert handler._array_metadata_store is store  # Checkpoints keep their array metadata.
    assert not [r for r in caplog.records if "Type handler" in r.getMessage()]
