"""`jaxformer bench --config=FILE[:ARGS] [--steps=N] [--config.a.b=V ...]`."""

from __future__ import annotations

import json

from jaxformer.commands import common

HELP = "time the jitted train step of a config"
TAKES_OVERRIDES = True


def add_arguments(parser) -> None:
    parser.add_argument("--config", required=True)
    parser.add_argument("--steps", type=int, default=20, help="timed steps after warm-up")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--workdir", default=None, help="where tokenizer assets go (default: temp)")


def run(args, overrides: list[str]) -> int:
    config = common.load_config(args.config, overrides)
    common.host_devices_per_core(common.micro_batch(config))
    common.check_overrides(config, overrides)
    from jaxformer.train import bench

    print(json.dumps(bench.run(config, steps=args.steps, warmup=args.warmup,
                               workdir=args.workdir)), flush=True)
    return 0
