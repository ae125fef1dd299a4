"""`jaxformer import-weights --from=HF_DIR --family=F --workdir=DIR [--dry_run]`.

Reads a Hugging Face model directory (`config.json`, safetensors weights, tokenizer files)
and writes a jaxformer workdir that `init_from`, `evaluate` and the family's commands accept.
`--config=FILE[:ARGS]` and `--config.*` overrides change the run config the import starts
from (its data and evaluations); the model fields always come from `config.json`.
"""

from __future__ import annotations

HELP = "write a workdir from a Hugging Face model directory (safetensors)"
TAKES_OVERRIDES = True


def add_arguments(parser) -> None:
    from jaxformer.weights import FAMILIES

    parser.add_argument("--from", dest="source", required=True, help="Hugging Face model dir")
    parser.add_argument("--family", required=True, choices=sorted(FAMILIES))
    parser.add_argument("--workdir", required=True, help="the new workdir (must not exist)")
    parser.add_argument("--config", help="run config to start from (default: the family's)")
    parser.add_argument("--dry_run", action="store_true",
                        help="print the tensor mapping and check it; write nothing")


def run(args, overrides: list[str]) -> int:
    from jaxformer.weights.convert import import_weights

    import_weights(args.source, args.family, args.workdir, config_spec=args.config,
                   overrides=overrides, dry_run=args.dry_run)
    return 0
