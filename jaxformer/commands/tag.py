"""`jaxformer tag --workdir=DIR --text="Peter Blackburn visited Paris ."` or `--input=FILE`.

With `--text`, prints each word and its tag, tab-separated, then each span (entity) the tags
mark:

    Peter	B-PER
    Blackburn	I-PER
    visited	O
    Paris	B-LOC
    .	O
    PER	Peter Blackburn
    LOC	Paris

With `--input` (a file of sentences, one per line, words separated by spaces; `-`: stdin),
prints the words and tags of each non-empty line in CoNLL's layout, a blank line after each
sentence.
"""

from __future__ import annotations

import os
import sys

from jaxformer.commands import common

HELP = "tag the words of a text (named entities) with a token classification workdir"
TAKES_OVERRIDES = False


def add_arguments(parser) -> None:
    parser.add_argument("--workdir", required=True)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--text", help="words separated by spaces, as in CoNLL files "
                                       '(e.g. "Peter Blackburn visited Paris .")')
    source.add_argument("--input", help="a file of sentences, one per line (-: stdin)")
    common.add_checkpoint_choice(parser)


def run(args, overrides: list[str]) -> int:
    from jaxformer.commands.translate import read_lines
    from jaxformer.errors import UserError
    from jaxformer.inference import tag

    if args.text is not None and not args.text.split():
        raise UserError("the text has no words to tag")
    if args.input is not None and args.input != "-" and not os.path.isfile(args.input):
        raise UserError(f"--input {args.input}: no such file")
    run_ = common.load_finetuned_run(args, tag.check_config)
    if args.text is not None:
        results = [tag.tag(run_, args.text)]
    else:
        sentences = [line.split() for line in read_lines(args.input) if line.split()]
        results = tag.tag_sentences(run_, sentences)
    print(f"tagged with {run_.describe()} of {args.workdir}", file=sys.stderr)
    for result in results:
        for word, name in zip(result.words, result.tags, strict=True):
            print(f"{word}\t{name}")
        if args.input is not None:
            print()
    if args.text is not None:
        for span in results[0].spans:
            print(f"{span.kind}\t{span.text}")
    return 0
