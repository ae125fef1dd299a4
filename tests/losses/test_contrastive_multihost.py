"""Contrastive losses across a 2-process "pod" on 127.0.0.1 (jax.distributed, gloo collectives,
4 CPU devices each): the same loss and gradients as one device on the same global batch, both
under `jit` over a batch sharded on both processes' devices (the loss sees the global batch)
and under `pmap`, whose `all_gather` brings the other process's rows in as negatives.

Run as a script, this file is one process of the pod (see `worker`).
"""

import functools
import os
import pickle
import subprocess
import sys

import jax
import numpy as np
import pytest

from launch.local import free_port
from tests.helpers import ROOT, xla_flags
from tests.losses.test_contrastive import (
    BATCH,
    DIM,
    FEATURES,
    assert_close,
    init_params,
    inputs,
    local_totals,
    single_device,
)

PROCESSES, LOCAL_DEVICES = 2, 4
LOSSES = ("softmax", "sigmoid")


def under_global_jit(name, params, x, y):
    """`jit` over a mesh of all devices of all processes; this process gives its rows."""
    from jax.sharding import Mesh, NamedSharding, PartitionSpec

    mesh = Mesh(np.asarray(jax.devices()), ("data",))
    rows = NamedSharding(mesh, PartitionSpec("data"))
    replicated = NamedSharding(mesh, PartitionSpec())
    x, y = (jax.make_array_from_process_local_data(rows, v) for v in (x, y))
    assert x.shape == (BATCH, FEATURES) and not x.is_fully_addressable
    params = jax.device_put(params, replicated)
    out = jax.jit(functools.partial(single_device, name), out_shardings=replicated)(params, x, y)
    return jax.device_get(out)


def under_pmap_across_processes(name, params, x, y):
    """`pmap` over this process's devices; its axis spans the devices of both processes."""
    from jax.experimental import multihost_utils

    def step(params, x, y):
        total, count, param_grads, emb_grads = local_totals(name, params, x, y, "data")
        total, count, param_grads = jax.lax.psum((total, count, param_grads), "data")
        return jax.tree.map(lambda a: a / count, (total, param_grads, emb_grads))

    n = jax.local_device_count()
    x, y = (v.reshape(n, v.shape[0] // n, FEATURES) for v in (x, y))
    total, param_grads, emb_grads = jax.device_get(
        jax.pmap(step, axis_name="data", in_axes=(None, 0, 0))(params, x, y))
    # Embedding gradients are per row: collect every process's rows, in process order.
    emb_grads = tuple(np.asarray(multihost_utils.process_allgather(g.reshape(-1, DIM)))
                      .reshape(BATCH, DIM) for g in emb_grads)
    return total[0], jax.tree.map(lambda g: g[0], param_grads), emb_grads


def worker(address: str, process_id: int, out: str) -> None:
    """One process: joins the pod, computes both losses on its half of the global batch both
    ways, and (process 0) pickles the results to `out`."""
    jax.distributed.initialize(coordinator_address=address, num_processes=PROCESSES,
                               process_id=process_id)
    assert jax.process_count() == PROCESSES
    assert jax.device_count() == PROCESSES * jax.local_device_count() == 8
    params, (x, y) = init_params(), inputs()
    share = BATCH // PROCESSES
    mine = slice(process_id * share, (process_id + 1) * share)
    results = {name: {"jit": under_global_jit(name, params, x[mine], y[mine]),
                      "pmap": under_pmap_across_processes(name, params, x[mine], y[mine])}
               for name in LOSSES}
    if process_id == 0:
        with open(out, "wb") as f:
            pickle.dump(results, f)


def run_pod(tmp_path, timeout=300):
    """Runs `worker` in PROCESSES processes; returns process 0's results."""
    address, out = f"127.0.0.1:{free_port()}", tmp_path / "results.pkl"
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    env.update(JAX_PLATFORMS="cpu",
               XLA_FLAGS=xla_flags(LOCAL_DEVICES))
    logs = [open(tmp_path / f"process_{i}.log", "w") for i in range(PROCESSES)]  # noqa: SIM115
    processes = [subprocess.Popen(
        [sys.executable, "-m", "tests.losses.test_contrastive_multihost", address, str(i),
         str(out)], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT) for i, log in
        enumerate(logs)]
    try:
        codes = [p.wait(timeout=timeout) for p in processes]
    finally:
        for p in processes:
            if p.poll() is None:
                p.kill()
                p.wait()
        for log in logs:
            log.close()
    output = "".join((tmp_path / f"process_{i}.log").read_text()[-2000:]
                     for i in range(PROCESSES))
    assert codes == [0] * PROCESSES, output
    with open(out, "rb") as f:
        return pickle.load(f)


@pytest.mark.slow
def test_two_processes_match_one_device(tmp_path):
    results = run_pod(tmp_path)
    params, (x, y) = init_params(), inputs()
    for name in LOSSES:
        reference = jax.device_get(single_device(name, params, x, y))
        assert_close(results[name]["jit"], reference)
        assert_close(results[name]["pmap"], reference)


if __name__ == "__main__":
    worker(sys.argv[1], int(sys.argv[2]), sys.argv[3])
