"""Command line: `jaxformer <command> ...` (also `python -m jaxformer ...`).

Commands are registered in `COMMANDS`, one module each in `jaxformer/commands/`. Exit codes:
0 done, 1 an error of the program (traceback shown) or no readable checkpoint, 2 bad input
(config, flags, paths, data: one line on stderr), 3 non-finite loss, 128+N stopped by
signal N after saving a checkpoint. The `jaxformer` executable (and `python -m jaxformer`)
runs with glibc's malloc tuned for XLA:CPU (huge pages, memory kept between steps;
jaxformer/allocator.py).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import signal
import sys

from jaxformer.allocator import tune_malloc
from jaxformer.errors import EXIT_USER_ERROR, UserError

COMMANDS = {
    "train": "jaxformer.commands.train",
    "evaluate": "jaxformer.commands.evaluate",
    "sample": "jaxformer.commands.sample",
    "translate": "jaxformer.commands.translate",
    "attention-map": "jaxformer.commands.attention_map",
    "fill-mask": "jaxformer.commands.fill_mask",
    "classify": "jaxformer.commands.classify",
    "tag": "jaxformer.commands.tag",
    "answer": "jaxformer.commands.answer",
    "zero-shot": "jaxformer.commands.zero_shot",
    "retrieve": "jaxformer.commands.retrieve",
    "caption": "jaxformer.commands.caption",
    "detect": "jaxformer.commands.detect",
    "average": "jaxformer.commands.average",
    "import-weights": "jaxformer.commands.import_weights",
    "export-weights": "jaxformer.commands.export_weights",
    "bench": "jaxformer.commands.bench",
    "params": "jaxformer.commands.params",
    "baseline": "jaxformer.commands.baseline",
    "sweep": "jaxformer.commands.sweep",
    "results": "jaxformer.commands.results",
    "reproduce": "jaxformer.commands.reproduce",
}


class _Parser(argparse.ArgumentParser):
    def __init__(self, *args, **kwargs):
        kwargs.setdefault("allow_abbrev", False)  # A flag's prefix is a typo, not the flag.
        super().__init__(*args, **kwargs)

    def error(self, message):
        self.exit(EXIT_USER_ERROR, f"{self.prog}: error: {message}\n")


def make_parser() -> tuple[argparse.ArgumentParser, dict]:
    parser = _Parser(prog="jaxformer", description="A JAX/Flax framework for transformer models.")
    subparsers = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    modules = {}
    for name, path in COMMANDS.items():
        module = importlib.import_module(path)
        epilog = ("any --config.a.b=VALUE overrides the config's field a.b (type checked)"
                  if module.TAKES_OVERRIDES else None)
        module.add_arguments(subparsers.add_parser(name, help=module.HELP, epilog=epilog))
        modules[name] = module
    return parser, modules


def _split_overrides(parser, rest: list[str]) -> list[str]:
    overrides, i = [], 0
    while i < len(rest):
        item = rest[i]
        if not item.startswith("--config."):
            parser.error(f"unrecognized argument: {item}")
        item = item[len("--config."):]
        if "=" not in item and i + 1 < len(rest) and not rest[i + 1].startswith("--"):
            item, i = f"{item}={rest[i + 1]}", i + 1
        overrides.append(item)
        i += 1
    return overrides


def main(argv: list[str] | None = None) -> int:
    parser, modules = make_parser()
    args, rest = parser.parse_known_args(argv)
    module = modules[args.command]
    if module.TAKES_OVERRIDES:
        overrides = _split_overrides(parser, rest)
    elif rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    else:
        overrides = []
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        return module.run(args, overrides)
    except UserError as e:
        print(f"jaxformer {args.command}: error: {e}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:  # Ctrl-C outside the trainer's own handling (or twice in it).
        print(f"jaxformer {args.command}: interrupted", file=sys.stderr)
        return 128 + signal.SIGINT
    except BrokenPipeError:  # Output piped into a reader that stopped (`| head`).
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except Exception as e:
        code = getattr(e, "exit_code", None)  # The trainer's own stops carry their exit code.
        if code is None:
            raise
        print(f"jaxformer {args.command}: {e}", file=sys.stderr)
        return code


def run() -> int:
    """The `jaxformer` executable: `main`, with glibc's malloc tuned (jaxformer/allocator.py)."""
    tune_malloc()
    return main()


if __name__ == "__main__":
    sys.exit(run())
