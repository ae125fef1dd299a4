"""`jaxformer detect --workdir=DIR --image=PATH --out=IMAGE [--threshold=0.7]`.

Prints the objects a DETR run finds in an image, one per line (`name score x0 y0 x1 y1`, in
the image's pixels, best first), and draws their boxes with class names and scores on the
image, written to `--out` (enlarged `--scale` times, so that labels of small images read).
"""

from __future__ import annotations

import sys

from jaxformer.commands import common

HELP = "draw the boxes a DETR workdir finds in an image"
MAX_DRAWN_SIDE = 8192  # Pixels of an enlarged drawing's longer side.
TAKES_OVERRIDES = False


def add_arguments(parser) -> None:
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--image", required=True, help="an image file")
    parser.add_argument("--out", required=True,
                        help="the image to write (.png, .jpg, ...: the format its extension "
                             "names; PNG without one)")
    parser.add_argument("--threshold", type=float, default=0.7,
                        help="the lowest score shown (default 0.7)")
    parser.add_argument("--scale", type=int, default=0,
                        help="enlarge the drawing this many times (default: to >= 512 px)")
    common.add_checkpoint_choice(parser)


def run(args, overrides: list[str]) -> int:
    from jaxformer.config import read_workdir_config
    from jaxformer.errors import UserError
    from jaxformer.inference import detection, images
    from jaxformer.inference.workdir import load_run

    if not 0.0 <= args.threshold <= 1.0:
        raise UserError(f"--threshold must be in [0, 1], got {args.threshold}")
    if args.scale < 0:
        raise UserError(f"--scale must be >= 0, got {args.scale}")
    images.prepare_output(args.out, make_directory=False, image=args.image)
    config = read_workdir_config(args.workdir)
    if config.task.name != "detection":
        raise UserError(f"{args.workdir} holds a {config.task.name!r} run; this command needs "
                        "a detection run (e.g. configs/detr/composed.py)")
    run_ = load_run(args.workdir, step=args.step, average_last=args.average_last)
    pixels = images.read_image(args.image, run_.data.preprocess.channels)
    longer = max(pixels.shape[:2])
    scale = args.scale or max(1, -(-512 // longer))
    if scale > 1 and scale * longer > MAX_DRAWN_SIDE:  # Only enlargement is capped.
        raise UserError(f"--scale {scale} would draw the {pixels.shape[1]}x{pixels.shape[0]} "
                        f"image {scale * longer} px wide; at most {MAX_DRAWN_SIDE} px a side "
                        "when enlarged")
    found = detection.detect(run_.task, run_.data, run_.params, pixels,
                             threshold=args.threshold)
    images.save_image(detection.draw(pixels, found, scale=scale), args.out)
    print(f"{len(found)} objects at score >= {args.threshold} by {run_.describe()} of "
          f"{args.workdir}; drawn to {args.out}", file=sys.stderr)
    for d in found:
        print(f"{d.name}\t{d.score:.3f}\t" + " ".join(f"{v:.1f}" for v in d.box))
    return 0
