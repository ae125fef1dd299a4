"""`jaxformer answer --workdir=DIR --question="Whose flock did Moses keep?" --context="..."`
or `--context_file=FILE` (`-`: stdin).

Prints one line, tab-separated: the answer (the context's own characters, case and
punctuation kept), its first and past-the-end character offsets in the context (Python's
`context[start:end]`) and its score (the sum of its first and last token's logits):

    Jethro his father in law	28	52	16.370

A line break or a tab inside the answer is printed as a space (one character for one, so the
offsets still hold). A `--context_file` is read as UTF-8 with its line ends kept as they are:
the offsets count its characters. A run fine-tuned with `task.no_answer` (SQuAD 2.0) answers
nothing when that scores more than `task.null_threshold` above the best span; it then prints
the line

    no answer

(no tab: unlike any answer's line), and on stderr the two scores that decided it.

`jaxformer answer --workdir=DIR --input=dev-v1.1.json` answers every question of a file in
SQuAD's JSON format (its answers, if any, are not read), in batches, and prints the official
evaluation script's predictions file: one JSON object, question id -> answer text ("" for no
answer).
"""

from __future__ import annotations

import io
import math
import os
import sys

from jaxformer.commands import common

HELP = "answer a question from a context (extractive, SQuAD) with a question answering workdir"
TAKES_OVERRIDES = False
NO_ANSWER = "no answer"
# Characters that would end or split the printed line (str.splitlines' line breaks and tab).
_ONE_LINE = str.maketrans({c: " " for c in "\t\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029"})


def add_arguments(parser) -> None:
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--question", help="the question to answer (with --context or "
                                           "--context_file)")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--context", help="the text that holds the answer")
    source.add_argument("--context_file", help="a UTF-8 file that holds the answer (-: stdin)")
    source.add_argument("--input", help="a SQuAD JSON file: answer all its questions")
    common.add_checkpoint_choice(parser)


def read_context(path: str) -> str:
    """The text of `--context_file` (`-`: stdin), its characters as they are (no newline
    translation), so that offsets count them."""
    from jaxformer.errors import UserError

    if path != "-" and not os.path.isfile(path):
        raise UserError(f"--context_file {path}: no such file")
    try:
        if path == "-":
            return io.TextIOWrapper(sys.stdin.buffer, encoding="utf-8", newline="").read()
        with open(path, encoding="utf-8", newline="") as f:
            return f.read()
    except UnicodeDecodeError as e:
        raise UserError(f"--context_file {path}: not UTF-8 text ({e})") from e
    except OSError as e:
        raise UserError(f"--context_file {path}: cannot read it ({e.strerror})") from e


def run(args, overrides: list[str]) -> int:
    from jaxformer.errors import UserError
    from jaxformer.inference import answer

    if args.input is not None:
        return answer_file(args)
    if args.question is None or not args.question.strip():
        raise UserError("the question is empty" if args.question is not None else
                        "--question is required with --context or --context_file")
    context = args.context if args.context is not None else read_context(args.context_file)
    if not context.strip():
        raise UserError("the context is empty")
    from jaxformer.data import question_answering_pipeline as pipeline

    run_ = common.load_finetuned_run(args, answer.check_config)
    result = answer.answer(run_, args.question, context)
    print(f"answered with {run_.describe()} of {args.workdir}", file=sys.stderr)
    query_length = pipeline.get(run_.config.data, "max_query_length")
    if len(run_.data.tokenizer.encode(args.question)) > query_length:
        print(f"the question was cut to the run's data.max_query_length {query_length} tokens, "
              "as training cuts long questions", file=sys.stderr)
    if result.start < 0:
        if math.isfinite(result.score):
            print(f"answering nothing scores {result.null_score:.3f}, more than the best span's "
                  f"{result.score:.3f} by over task.null_threshold {run_.task.null_threshold}",
                  file=sys.stderr)
        else:
            print("no span of the context can be an answer", file=sys.stderr)
        print(NO_ANSWER)
        return 0
    text = result.text.translate(_ONE_LINE)
    print(f"{text}\t{result.start}\t{result.end}\t{result.score:.3f}")
    return 0


def answer_file(args) -> int:
    """`--input`: the predictions file of every question of a SQuAD JSON file."""
    import json

    from jaxformer.data import squad
    from jaxformer.errors import UserError
    from jaxformer.inference import answer

    if args.question is not None:
        raise UserError("--question goes with --context or --context_file; --input holds "
                        "its questions")
    if not os.path.isfile(args.input):
        raise UserError(f"--input {args.input}: no such file")
    try:
        questions = squad.read_squad(args.input)
    except ValueError as e:
        raise UserError(str(e)) from e
    if not len(questions):
        raise UserError(f"--input {args.input} has no questions")
    run_ = common.load_finetuned_run(args, answer.check_config)
    answers = answer.answer_questions(run_, questions)
    print(f"answered {len(answers)} questions with {run_.describe()} of {args.workdir}",
          file=sys.stderr)
    print(json.dumps(dict(zip(questions.ids, (a.text for a in answers), strict=True)),
                     ensure_ascii=False, indent=1))
    return 0
