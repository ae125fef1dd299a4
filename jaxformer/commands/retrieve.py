"""`jaxformer retrieve --workdir=DIR --text="a red apple" --images=DIR [--top_k=5]`.

Prints the images of a directory most similar to a text under a contrastive image-text run,
best first, with their cosine similarity:

    0.412  images/apple.png
"""

from __future__ import annotations

import sys

from jaxformer.commands import common

HELP = "find the images of a directory that best match a text, with a CLIP-style workdir"
TAKES_OVERRIDES = False


def add_arguments(parser) -> None:
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--text", required=True)
    parser.add_argument("--images", required=True, help="a directory of image files")
    parser.add_argument("--top_k", type=int, default=5, help="images shown (default 5)")
    common.add_checkpoint_choice(parser)


def run(args, overrides: list[str]) -> int:
    from jaxformer.config import read_workdir_config
    from jaxformer.errors import UserError
    from jaxformer.inference import images, two_tower

    if args.top_k < 1:
        raise UserError(f"--top_k must be >= 1, got {args.top_k}")
    if not args.text.strip():
        raise UserError("--text is empty")
    two_tower.check_config(read_workdir_config(args.workdir), args.workdir)
    paths = images.list_images(args.images, "--images")
    from jaxformer.inference.workdir import load_run

    run_ = load_run(args.workdir, step=args.step, average_last=args.average_last)
    ranked = two_tower.retrieve(run_, args.text, paths, args.top_k)
    print(f"retrieved with {run_.describe()} of {args.workdir}", file=sys.stderr)
    for path, score in zip(ranked.names, ranked.scores, strict=True):
        print(f"{score:.3f}  {path}")
    return 0
