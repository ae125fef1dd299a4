"""What several commands share: config loading, device set-up, multi-host flags."""

from __future__ import annotations

import argparse
import os
import sys

import ml_collections

from jaxformer import config as config_lib


def load_config(spec: str, overrides: list[str]) -> ml_collections.ConfigDict:
    """`path.py[:args]` with `--config.*` overrides applied (locked)."""
    config = config_lib.load_config(spec)
    config_lib.apply_overrides(config, overrides)
    return config


def check_overrides(config: ml_collections.ConfigDict, overrides: list[str]) -> None:
    """Refuses overrides that the config would ignore (a size field under a named variant).
    Imports the model's module, so call it once the devices are set up."""
    from jaxformer import registry

    registry.check_variant_overrides(config, [o.partition("=")[0] for o in overrides])


def host_devices_per_core(batch_size: int) -> None:
    """Exposes the CPU cores as host devices, so data parallelism uses all of them.

    XLA's CPU backend runs each small matmul on one core; splitting the batch over one host
    device per core runs the per-device programs side by side (nano GPT on 2 cores: 43 ms ->
    34 ms per step). The count is the largest that divides the per-step batch. It only
    affects the CPU platform, and is left alone when XLA_FLAGS already sets it; it must run
    before jax is imported.
    """
    flags = os.environ.get("XLA_FLAGS", "")
    if "xla_force_host_platform_device_count" in flags:
        return
    if "jax" in sys.modules:
        raise RuntimeError("host_devices_per_core must run before jax is imported")
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    count = max(d for d in range(1, (cores or 1) + 1) if batch_size % d == 0)
    if count > 1:
        os.environ["XLA_FLAGS"] = f"{flags} --xla_force_host_platform_device_count={count}".strip()


def micro_batch(config: ml_collections.ConfigDict) -> int:
    return max(config.train.batch_size // max(config.train.grad_accum_steps, 1), 1)


def add_distributed(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("multi-host (jax.distributed)")
    group.add_argument("--coordinator_address", help="host:port of process 0")
    group.add_argument("--num_processes", type=int)
    group.add_argument("--process_id", type=int)
    group.add_argument("--distributed", action="store_true",
                       help="initialise from the cluster environment (SLURM, TPU pod)")


def is_distributed(args: argparse.Namespace) -> bool:
    return bool(args.coordinator_address or args.num_processes or args.distributed)


def init_distributed(args: argparse.Namespace) -> None:
    import jax

    if args.coordinator_address or args.num_processes:
        jax.distributed.initialize(coordinator_address=args.coordinator_address,
                                   num_processes=args.num_processes, process_id=args.process_id)
    elif args.distributed:
        jax.distributed.initialize()


def add_checkpoint_choice(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--step", type=int, default=None,
                        help="the checkpoint of this step (default: the newest readable one)")
    parser.add_argument("--average_last", type=int, default=0,
                        help="the mean parameters of the last K checkpoints")


def load_finetuned_run(args: argparse.Namespace, check):
    """The run in `args.workdir` at `args.step` (or the mean of `args.average_last`), read
    without its data set (the data spec and the saved vocabulary), once `check(config,
    workdir)` has accepted its config (raising UserError otherwise)."""
    from jaxformer.config import read_workdir_config
    from jaxformer.inference.workdir import load_run, vocabulary_spec

    check(read_workdir_config(args.workdir), args.workdir)
    return load_run(args.workdir, step=args.step, average_last=args.average_last,
                    data=vocabulary_spec)
