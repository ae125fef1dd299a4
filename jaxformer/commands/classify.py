"""`jaxformer classify --workdir=DIR --text="what a lovely day" [--pair="..."]`.

Prints each class and its probability, most likely first:

    positive	0.912
    neutral	0.061
    negative	0.027
"""

from __future__ import annotations

import sys

from jaxformer.commands import common

HELP = "classify a text (or a sentence pair) with a fine-tuned text classification workdir"
TAKES_OVERRIDES = False


def add_arguments(parser) -> None:
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--text", required=True, help="the text to classify")
    parser.add_argument("--pair", default=None,
                        help="the second sentence, for sentence-pair tasks (mnli, rte, ...)")
    common.add_checkpoint_choice(parser)


def run(args, overrides: list[str]) -> int:
    from jaxformer.config import read_workdir_config
    from jaxformer.errors import UserError
    from jaxformer.inference import classify

    if not args.text.strip() or (args.pair is not None and not args.pair.strip()):
        raise UserError("the text to classify is empty")
    classify.check_config(read_workdir_config(args.workdir), args.workdir)
    from jaxformer.inference.workdir import load_run, vocabulary_spec

    run_ = load_run(args.workdir, step=args.step, average_last=args.average_last,
                    data=vocabulary_spec)
    result = classify.classify(run_, args.text, args.pair)
    print(f"classified with {run_.describe()} of {args.workdir}", file=sys.stderr)
    if result.truncated:
        print(f"the text was cut to the run's data.seq_length {run_.task.seq_length} tokens, as "
              "training cuts long examples", file=sys.stderr)
    for label, probability in zip(result.labels, result.probabilities, strict=True):
        print(f"{label}\t{probability:.3f}")
    return 0
