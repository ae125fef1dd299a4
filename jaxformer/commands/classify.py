"""`jaxformer classify --workdir=DIR --text="what a lovely day" [--pair="..."]`.

Prints each class and its probability, most likely first:

    positive	0.912
    neutral	0.061
    negative	0.027

`--input=FILE` (`-`: stdin) classifies every line of a UTF-8 file in batches, a line being a
text or, for sentence-pair tasks, two sentences separated by a tab; it prints one line per
input line, its most likely class and that class's probability (`positive	0.912`).
"""

from __future__ import annotations

import os
import sys

from jaxformer.commands import common

HELP = "classify a text (or a sentence pair) with a fine-tuned text classification workdir"
TAKES_OVERRIDES = False


def add_arguments(parser) -> None:
    parser.add_argument("--workdir", required=True)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--text", help="the text to classify")
    source.add_argument("--input", help="a file of texts to classify, one per line (a pair: "
                                        "two sentences separated by a tab; -: stdin)")
    parser.add_argument("--pair", default=None,
                        help="the second sentence, for sentence-pair tasks (mnli, rte, ...)")
    common.add_checkpoint_choice(parser)


def run(args, overrides: list[str]) -> int:
    from jaxformer.errors import UserError
    from jaxformer.inference import classify

    if args.input is not None:
        return classify_file(args)
    if not args.text.strip() or (args.pair is not None and not args.pair.strip()):
        raise UserError("the text to classify is empty")
    run_ = common.load_finetuned_run(args, classify.check_config)
    result = classify.classify(run_, args.text, args.pair)
    print(f"classified with {run_.describe()} of {args.workdir}", file=sys.stderr)
    if result.truncated:
        print(f"the text was cut to the run's data.seq_length {run_.task.seq_length} tokens, as "
              "training cuts long examples", file=sys.stderr)
    for label, probability in zip(result.labels, result.probabilities, strict=True):
        print(f"{label}\t{probability:.3f}")
    return 0


def classify_file(args) -> int:
    """`--input`: the most likely class of each line of a file."""
    from jaxformer.commands.translate import read_lines
    from jaxformer.errors import UserError
    from jaxformer.inference import classify

    if args.pair is not None:
        raise UserError("--pair goes with --text; in an --input file a line holds both "
                        "sentences, separated by a tab")
    if args.input != "-" and not os.path.isfile(args.input):
        raise UserError(f"--input {args.input}: no such file")
    lines = read_lines(args.input)
    if not lines:
        raise UserError(f"--input {args.input} has no lines")
    fields = [line.split("\t") for line in lines]
    if len({len(f) for f in fields}) > 1 or len(fields[0]) > 2:
        raise UserError(f"--input {args.input}: every line must be one text, or two "
                        "sentences separated by one tab")
    texts = [f[0] for f in fields]
    pairs = [f[1] for f in fields] if len(fields[0]) == 2 else None
    for i, text in enumerate(texts):
        if not text.strip() or (pairs is not None and not pairs[i].strip()):
            raise UserError(f"--input {args.input}: line {i + 1} is empty")
    run_ = common.load_finetuned_run(args, classify.check_config)
    results = classify.classify_texts(run_, texts, pairs)
    print(f"classified {len(results)} texts with {run_.describe()} of {args.workdir}",
          file=sys.stderr)
    cut = sum(result.truncated for result in results)
    if cut:
        print(f"{cut} texts were cut to the run's data.seq_length {run_.task.seq_length} "
              "tokens, as training cuts long examples", file=sys.stderr)
    for result in results:
        print(f"{result.labels[0]}\t{result.probabilities[0]:.3f}")
    return 0
