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
    from jaxformer.config import read_workdir_config
    from jaxformer.errors import UserError, as_user_error

    if args.num_samples < 1:
        raise UserError(f"--num_samples must be >= 1, got {args.num_samples}")
    config = read_workdir_config(args.workdir)  # Options are checked before anything loads.
    if config.task.name != "lm":
        raise UserError(f"{args.workdir} holds a {config.task.name!r} run; sample needs a "
                        "language model")
    given = {name: getattr(args, name) for name in ("prompt", "max_new_tokens", "temperature",
                                                   "top_k", "top_p")}
    value = {name: config.sample[name] if v is None else v for name, v in given.items()}
    if value["max_new_tokens"] < 1:
        raise UserError(f"--max_new_tokens must be >= 1, got {value['max_new_tokens']}")
    temperature, top_k, top_p = value["temperature"], value["top_k"] or None, value["top_p"]
    if not args.greedy and not (temperature > 0 and 0 < top_p <= 1 and (top_k or 1) >= 1):
        raise UserError(f"need --temperature > 0, --top_p in (0, 1] and --top_k >= 0 (0: all), "
                        f"got {temperature}, {top_p} and {top_k or 0}")
    from jaxformer.inference.sampling import continue_text
    from jaxformer.inference.workdir import load_run

    run_ = load_run(args.workdir, step=args.step, average_last=args.average_last)
    prompt = value["prompt"]
    with as_user_error("--prompt"):  # Before the line below: an error is one line.
        if not run_.task.tokenizer.encode(prompt):
            raise ValueError("it encodes to no tokens; give a non-empty --prompt")
    print(f"sampling from {run_.describe()} of {args.workdir}", file=sys.stderr)
    with as_user_error("sample"):
        texts = continue_text(run_.task, run_.params, prompt,
                              max_new_tokens=value["max_new_tokens"], num_samples=args.num_samples,
                              seed=args.seed, temperature=temperature, top_k=top_k, top_p=top_p,
                              greedy=args.greedy)
    for text in texts:
        print(text)
        print("-" * 40)
    return 0
