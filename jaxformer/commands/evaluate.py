"""`jaxformer evaluate --workdir=DIR [--eval=NAME] [--step=N] [--average_last=K]`."""

from __future__ import annotations

import math

from jaxformer.commands import common

HELP = "run a workdir's evaluators (config.evals) on a checkpoint"
TAKES_OVERRIDES = False


def add_arguments(parser) -> None:
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--eval", action="append", default=[],
                        help="an evaluator of config.evals (repeat for several; default: all "
                             "that run at the end of training)")
    common.add_checkpoint_choice(parser)


def run(args, overrides: list[str]) -> int:
    from jaxformer.config import read_workdir_config, runs_at_end
    from jaxformer.errors import UserError

    config = read_workdir_config(args.workdir)
    evals = config.get("evals", {})
    unknown = [name for name in args.eval if name not in evals]
    if unknown:
        raise UserError(f"--eval {unknown[0]}: config.evals has {', '.join(evals) or 'none'}")
    chosen = args.eval or [n for n, e in evals.items() if runs_at_end(e)]
    if not chosen:
        raise UserError(f"{args.workdir}: no evaluator of config.evals runs at the end of "
                        f"training; name one with --eval ({', '.join(evals) or 'none'})")
    common.host_devices_per_core(common.micro_batch(config))
    import jax

    from jaxformer.console import log
    from jaxformer.evaluators.base import Context, build_evaluators
    from jaxformer.inference.workdir import load_run
    from jaxformer.train import parallel
    from jaxformer.train.metrics import AVERAGED, MetricWriter

    # A run that split its state (train.fsdp) gets its parameters split as far as the
    # devices here allow.
    strategy = parallel.Sharded(fsdp=math.gcd(config.train.get("fsdp", 1), jax.device_count()))
    run_ = load_run(args.workdir, step=args.step, average_last=args.average_last,
                    sharding=strategy.leaf_sharding)
    split = f" (parameters split {strategy.fsdp} ways)" if strategy.fsdp > 1 else ""
    log(f"evaluating {run_.describe()} on {len(strategy.mesh.devices.flat)} devices{split}")
    context = Context(run_.task, run_.data, strategy,
                      parallel.local_batch_size(config.train.batch_size))
    evaluators = build_evaluators(run_.config, context)
    scalars = {}
    for name in chosen:
        metrics = evaluators[name].run(run_.params)
        scalars.update({f"eval/{name}/{k}": v for k, v in metrics.items()})
    writer = MetricWriter(args.workdir)
    # Rows of this command beside training's at the same step: which parameters they scored.
    writer.write(run_.step, {**scalars, AVERAGED: len(run_.averaged_steps) or 1})
    writer.close()
    log(" | ".join(f"{k} {v:.4f}" for k, v in scalars.items()))
    return 0
