"""`jaxformer average --workdir=DIR --last=K --out=OUT`.

Writes a new workdir whose checkpoint is the newest one of DIR (step, optimizer state, data
position) with the mean parameters of DIR's last K checkpoints, as the Transformer paper
averages its last 5 (20 for big models); `sample`, `evaluate`, `translate` and `init_from`
then use it like any run. The new workdir records which checkpoints were averaged
(`averaged.json`), and commands reading it name them.
"""

from __future__ import annotations

import os
import shutil

HELP = "write a workdir holding the mean parameters of a run's last K checkpoints"
TAKES_OVERRIDES = False


def add_arguments(parser) -> None:
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--last", type=int, required=True, help="checkpoints to average (K)")
    parser.add_argument("--out", required=True, help="the new workdir (must not exist)")


def run(args, overrides: list[str]) -> int:
    from jaxformer.errors import UserError

    if args.last < 1:
        raise UserError(f"--last must be >= 1, got {args.last}")
    if os.path.exists(args.out):
        raise UserError(f"--out {args.out} exists; give a new directory")
    import jax

    from jaxformer.console import log
    from jaxformer.inference.workdir import load_run, write_average_record
    from jaxformer.train.checkpoint import Checkpointer
    from jaxformer.train.state import abstract_state

    run_ = load_run(args.workdir, average_last=args.last)
    config = run_.config
    train_iter = run_.data.train_iter(batch_size=config.train.batch_size, seed=config.seed)
    abstract = abstract_state(config, run_.task,
                              jax.sharding.SingleDeviceSharding(jax.local_devices()[0]))
    source = Checkpointer(args.workdir, keep=config.train.keep_checkpoints, async_save=False,
                          set_aside_corrupt=False)
    try:
        newest = source.restore(abstract, train_iter, step=run_.step)
    finally:
        source.close()
    os.makedirs(args.out)
    shutil.copy(os.path.join(args.workdir, "config.json"), args.out)
    if os.path.isdir(os.path.join(args.workdir, "assets")):
        shutil.copytree(os.path.join(args.workdir, "assets"), os.path.join(args.out, "assets"))
    target = Checkpointer(args.out, keep=config.train.keep_checkpoints, async_save=False)
    try:
        target.save(run_.step, newest.replace(params=run_.params), train_iter)
        target.wait()
    finally:
        target.close()
    if run_.averaged_steps:
        write_average_record(args.out, run_)
    log(f"wrote {args.out}: {run_.describe()} of {args.workdir}, at step {run_.step}")
    return 0
