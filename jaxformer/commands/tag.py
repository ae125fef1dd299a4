"""`jaxformer tag --workdir=DIR --text="Peter Blackburn visited Paris ."`.

Prints each word and its tag, tab-separated, then each span (entity) the tags mark:

    Peter	B-PER
    Blackburn	I-PER
    visited	O
    Paris	B-LOC
    .	O
    PER	Peter Blackburn
    LOC	Paris
"""

from __future__ import annotations

import sys

from jaxformer.commands import common

HELP = "tag the words of a text (named entities) with a token classification workdir"
TAKES_OVERRIDES = False


def add_arguments(parser) -> None:
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--text", required=True,
                        help="words separated by spaces, as in CoNLL files "
                             '(e.g. "Peter Blackburn visited Paris .")')
    common.add_checkpoint_choice(parser)


def run(args, overrides: list[str]) -> int:
    from jaxformer.config import read_workdir_config
    from jaxformer.errors import UserError
    from jaxformer.inference import tag

    if not args.text.split():
        raise UserError("the text has no words to tag")
    tag.check_config(read_workdir_config(args.workdir), args.workdir)
    from jaxformer.inference.workdir import load_run, vocabulary_spec

    run_ = load_run(args.workdir, step=args.step, average_last=args.average_last,
                    data=vocabulary_spec)
    result = tag.tag(run_, args.text)
    print(f"tagged with {run_.describe()} of {args.workdir}", file=sys.stderr)
    for word, name in zip(result.words, result.tags, strict=True):
        print(f"{word}\t{name}")
    for span in result.spans:
        print(f"{span.kind}\t{span.text}")
    return 0
