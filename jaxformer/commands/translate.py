"""`jaxformer translate --workdir=DIR [--input=FILE] [--beam_size=N] [--length_penalty=A]`."""

from __future__ import annotations

import io
import os
import sys

from jaxformer.commands import common

HELP = "translate lines with a trained translation workdir"
TAKES_OVERRIDES = False


def add_arguments(parser) -> None:
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--input", default="-", help="file of source lines (default: stdin)")
    parser.add_argument("--beam_size", type=int, default=4)
    parser.add_argument("--length_penalty", type=float, default=0.6)
    parser.add_argument("--extra_decode_length", type=int, default=50,
                        help="decode up to this many tokens past the source length (that of "
                             "the longest source of its batch, rounded up to a multiple of 16)")
    parser.add_argument("--batch_size", type=int, default=128)
    common.add_checkpoint_choice(parser)


def run(args, overrides: list[str]) -> int:
    from jaxformer.errors import UserError

    if args.input != "-" and not os.path.isfile(args.input):
        raise UserError(f"--input {args.input}: no such file")
    if args.beam_size < 1 or args.batch_size < 1:
        raise UserError("--beam_size and --batch_size must be >= 1")
    if args.extra_decode_length < 0:
        raise UserError(f"--extra_decode_length must be >= 0, got {args.extra_decode_length}")
    common.host_devices_per_core(os.cpu_count() or 1)
    from jaxformer.inference.seq2seq import translate_texts
    from jaxformer.inference.workdir import load_run

    lines = read_lines(args.input)
    run_ = load_run(args.workdir, step=args.step, average_last=args.average_last)
    if run_.config.task.name != "translation":
        raise UserError(f"{args.workdir} holds a {run_.config.task.name!r} run, not a "
                        "translation one")
    print(f"translating with {run_.describe()} of {args.workdir}", file=sys.stderr)
    for text in translate_texts(run_.task, run_.params, lines, beam_size=args.beam_size,
                                length_penalty=args.length_penalty,
                                extra_length=args.extra_decode_length,
                                batch_size=args.batch_size):
        print(text)
    return 0


def read_lines(path: str) -> list[str]:
    """The lines of `--input` (`-`: stdin) without their ends, read as UTF-8 with universal
    newlines from stdin too (a CRLF ends a line there as in a file)."""
    from jaxformer.errors import UserError

    source = (io.TextIOWrapper(sys.stdin.buffer, encoding="utf-8") if path == "-"
              else open(path, encoding="utf-8"))
    try:
        with source as f:
            return [line.rstrip("\n") for line in f]
    except UnicodeDecodeError as e:
        raise UserError(f"--input {path}: not UTF-8 text ({e})") from e
