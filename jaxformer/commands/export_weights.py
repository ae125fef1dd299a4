"""`jaxformer export-weights --workdir=DIR --to=HF_DIR [--step=N]`.

Writes a run's parameters as a Hugging Face model directory (`config.json`,
`model.safetensors`, the tokenizer files) that `transformers`' `from_pretrained` loads.
"""

from __future__ import annotations

HELP = "write a run's parameters as a Hugging Face model directory"
TAKES_OVERRIDES = False


def add_arguments(parser) -> None:
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--to", required=True, help="the new Hugging Face directory")
    parser.add_argument("--step", type=int, default=-1, help="checkpoint step (default: newest)")


def run(args, overrides: list[str]) -> int:
    from jaxformer.weights.convert import export_weights

    export_weights(args.workdir, args.to, step=args.step)
    return 0
