"""`jaxformer fill-mask --workdir=DIR --text="the [MASK] of the king" [--top_k=K]`.

Prints, for each [MASK] in order, its top-k tokens with their probabilities, then the text
with each [MASK] replaced by its most likely token:

    [MASK] 1: king 0.231 | queen 0.102 | ...
    the king of the king
"""

from __future__ import annotations

import sys

from jaxformer.commands import common

HELP = "predict the [MASK] tokens of a text with a BERT pretraining workdir"
TAKES_OVERRIDES = False


def add_arguments(parser) -> None:
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--text", required=True,
                        help='text with one or more [MASK], e.g. "the [MASK] of the king"; '
                             "with [CLS] and [SEP] at most the run's data.seq_length tokens")
    parser.add_argument("--top_k", type=int, default=5, help="tokens shown per [MASK] (default 5)")
    common.add_checkpoint_choice(parser)


def run(args, overrides: list[str]) -> int:
    from jaxformer.config import read_workdir_config
    from jaxformer.errors import UserError
    from jaxformer.inference import fill_mask

    # What the text, the flags and config.json decide is checked before anything loads.
    if args.top_k < 1:
        raise UserError(f"--top_k must be >= 1, got {args.top_k}")
    fill_mask.check_text(args.text)
    fill_mask.check_config(read_workdir_config(args.workdir), args.workdir)
    from jaxformer.inference.workdir import load_run

    run_ = load_run(args.workdir, step=args.step, average_last=args.average_last)
    result = fill_mask.fill_mask(run_, args.text, args.top_k)
    print(f"filled masks with {run_.describe()} of {args.workdir}", file=sys.stderr)
    for number, prediction in enumerate(result.predictions, 1):
        choices = " | ".join(f"{token} {p:.3f}" for token, p in
                             zip(prediction.tokens, prediction.probabilities, strict=True))
        print(f"{fill_mask.MASK} {number}: {choices}")
    print(result.filled_text)
    return 0
