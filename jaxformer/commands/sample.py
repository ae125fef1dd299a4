"""`jaxformer sample --workdir=DIR [--prompt=TEXT] [--max_new_tokens=N] ...`."""

from __future__ import annotations

import sys

from jaxformer.commands import common

HELP = "generate text from a trained language-model workdir"
TAKES_OVERRIDES = False


def add_arguments(parser) -> None:
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--prompt", default=None, help="text to continue (default: config)")
    parser.add_argument("--max_new_tokens", type=int, default=None,
                        help="tokens to generate (past the model's context, decoding slides "
                             "over the newest half window)")
    parser.add_argument("--temperature", type=float, default=None)
    parser.add_argument("--top_k", type=int, default=None)
    parser.add_argument("--top_p", type=float, default=None)
    parser.add_argument("--num_samples", type=int, default=1)
    parser.add_argument("--greedy", action="store_true")
    parser.add_argument("--seed", type=int, default=0)
    common.add_checkpoint_choice(parser)


def run(args, overrides: list[str]) -> int:
    from jaxformer.errors import UserError, as_user_error

    if args.num_samples < 1:
        raise UserError(f"--num_samples must be >= 1, got {args.num_samples}")
    from jaxformer.inference.sampling import continue_text
    from jaxformer.inference.workdir import load_run

    run_ = load_run(args.workdir, step=args.step, average_last=args.average_last)
    if run_.config.task.name != "lm":
        raise UserError(f"{args.workdir} holds a {run_.config.task.name!r} run; sample needs "
                        "a language model")
    defaults = run_.config.sample
    prompt = defaults.prompt if args.prompt is None else args.prompt
    max_new_tokens = defaults.max_new_tokens if args.max_new_tokens is None else (
        args.max_new_tokens)
    if max_new_tokens < 1:
        raise UserError(f"--max_new_tokens must be >= 1, got {max_new_tokens}")
    options = dict(
        temperature=defaults.temperature if args.temperature is None else args.temperature,
        top_k=(defaults.top_k if args.top_k is None else args.top_k) or None,
        top_p=defaults.top_p if args.top_p is None else args.top_p, greedy=args.greedy)
    print(f"sampling from {run_.describe()} of {args.workdir}", file=sys.stderr)
    with as_user_error("sample"):
        texts = continue_text(run_.task, run_.params, prompt, max_new_tokens=max_new_tokens,
                              num_samples=args.num_samples, seed=args.seed, **options)
    for text in texts:
        print(text)
        print("-" * 40)
    return 0
