"""`jaxformer train --config=FILE[:ARGS] --workdir=DIR [--config.a.b=V ...]`."""

from __future__ import annotations

from jaxformer.commands import common

HELP = "train (or resume) a config in a workdir"
TAKES_OVERRIDES = True


def add_arguments(parser) -> None:
    parser.add_argument("--config", required=True, help="path/to/config.py[:arg-string]")
    parser.add_argument("--workdir", required=True)
    common.add_distributed(parser)


def run(args, overrides: list[str]) -> int:
    config = common.load_config(args.config, overrides)
    if not common.is_distributed(args):
        common.host_devices_per_core(common.micro_batch(config))
    common.init_distributed(args)
    common.check_overrides(config, overrides)
    from jaxformer.train import trainer

    trainer.train(config, args.workdir)
    return 0
