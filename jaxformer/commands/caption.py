"""`jaxformer caption --workdir=DIR --image=PATH [--shots=SPEC] [--max_new_tokens=N]`.

Prints the greedy caption of an image by a Flamingo-style captioning run, optionally after a
few captioned examples (in-context shots):

    jaxformer caption --workdir=runs/flamingo_emoji --image=cat.png \
        --shots="dog.png=an emoji of a dog.,owl.png=an emoji of an owl."
    jaxformer caption --workdir=runs/flamingo_emoji --image=cat.png --shots=examples/

`--shots` is a comma list of `PATH=caption` pairs (so captions cannot hold commas), or a
directory of images each captioned by its file stem with underscores as spaces
(`red_apple.png` -> "red apple"), shown in the order of their names. Captions are plain text:
one holding a special token's text (`<image>`, `<|endofchunk|>`) is refused. Images are read
with Pillow, converted to the run's channels and given its evaluation view and normalisation.
"""

from __future__ import annotations

import sys

from jaxformer.commands import common

HELP = "caption an image (after optional example captions) with a Flamingo-style workdir"
TAKES_OVERRIDES = False


def add_arguments(parser) -> None:
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--image", required=True, help="an image file")
    parser.add_argument("--shots", default="",
                        help='examples shown first: "a.png=a caption,b.png=another" or a '
                             "directory of images named by their captions (red_apple.png)")
    parser.add_argument("--max_new_tokens", type=int, default=20,
                        help="the longest caption, in tokens (default 20)")
    common.add_checkpoint_choice(parser)


def run(args, overrides: list[str]) -> int:
    from jaxformer.config import read_workdir_config
    from jaxformer.errors import UserError
    from jaxformer.inference import captioning

    if args.max_new_tokens < 1:
        raise UserError(f"--max_new_tokens must be >= 1, got {args.max_new_tokens}")
    captioning.check_config(read_workdir_config(args.workdir), args.workdir)
    shots = captioning.parse_shots(args.shots)
    from jaxformer.inference.workdir import load_run

    run_ = load_run(args.workdir, step=args.step, average_last=args.average_last)
    prompt = captioning.prompt_ids(run_.task, [text for _, text in shots])
    image = captioning.load_image(run_.data, args.image)
    examples = [(captioning.load_image(run_.data, path), text) for path, text in shots]
    block_size = run_.task.model.lm_spec.block_size
    if len(prompt) + args.max_new_tokens > block_size:
        raise UserError(f"the prompt ({len(examples)} shots, {len(prompt)} tokens) and "
                        f"--max_new_tokens {args.max_new_tokens} exceed the language model's "
                        f"context of {block_size} tokens")
    text = captioning.caption(run_.task, run_.params, image, examples,
                              max_new_tokens=args.max_new_tokens)
    print(f"caption by {run_.describe()} of {args.workdir}, {len(examples)} shots",
          file=sys.stderr)
    print(text)
    return 0
