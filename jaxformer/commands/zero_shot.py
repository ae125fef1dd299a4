"""`jaxformer zero-shot --workdir=DIR --image=PATH --labels="cat,dog,owl" [--template=T]`.

Prints each label's probability for the image, most likely first, from a contrastive
image-text run: the labels become prompts through the run's templates (or `--template`, with
"{}" exactly once for the label; other braces are kept as written) and the image is compared
with each.

    0.912  cat
    0.061  owl
"""

from __future__ import annotations

import sys

from jaxformer.commands import common

HELP = "classify an image among labels given as text, with a CLIP-style workdir"
TAKES_OVERRIDES = False


def add_arguments(parser) -> None:
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--image", required=True, help="an image file")
    parser.add_argument("--labels", required=True, help='comma-separated, e.g. "cat,dog,owl"')
    parser.add_argument("--template", default="",
                        help='one prompt template with "{}" exactly once for the label, e.g. '
                             '"a photo of a {}." (other braces are kept as written; default: '
                             "the run's templates, ensembled)")
    common.add_checkpoint_choice(parser)


def run(args, overrides: list[str]) -> int:
    from jaxformer.config import read_workdir_config
    from jaxformer.errors import UserError
    from jaxformer.inference import two_tower

    labels = [label.strip() for label in args.labels.split(",") if label.strip()]
    if len(labels) < 2:
        raise UserError(f"--labels needs at least two labels, got {args.labels!r}")
    repeated = sorted({label for label in labels if labels.count(label) > 1})
    if repeated:  # Two equal prompts would share one probability between them.
        raise UserError(f"--labels names {', '.join(map(repr, repeated))} more than once")
    if args.template:
        two_tower.user_template(args.template)
    two_tower.check_config(read_workdir_config(args.workdir), args.workdir)
    from jaxformer.inference.workdir import load_run

    run_ = load_run(args.workdir, step=args.step, average_last=args.average_last)
    ranked = two_tower.zero_shot(run_, args.image, labels, args.template)
    print(f"zero-shot with {run_.describe()} of {args.workdir}", file=sys.stderr)
    for label, probability in zip(ranked.names, ranked.scores, strict=True):
        print(f"{probability:.3f}  {label}")
    return 0
