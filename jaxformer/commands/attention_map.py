"""`jaxformer attention-map --workdir=DIR --image=PATH --out=IMAGE`."""

from __future__ import annotations

from jaxformer.commands import common

HELP = "overlay a trained ViT's [class]-token attention on an image"
TAKES_OVERRIDES = False


def add_arguments(parser) -> None:
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--image", required=True, help="an image file (PNG, JPEG, ...)")
    parser.add_argument("--out", required=True,
                        help="the image to write, in the format its extension names (.png, "
                             ".jpg, ...; PNG without one); its directory is made if missing")
    common.add_checkpoint_choice(parser)


def run(args, overrides: list[str]) -> int:
    from jaxformer.errors import UserError
    from jaxformer.inference import attention_map, images
    from jaxformer.inference.workdir import load_run

    images.prepare_output(args.out, make_directory=True, image=args.image)
    run_ = load_run(args.workdir, step=args.step, average_last=args.average_last)
    if run_.config.model.name != "vit":
        raise UserError(f"attention maps need a ViT; {args.workdir} trained "
                        f"{run_.config.model.name!r}")
    maps = attention_map.write_attention_map(run_, args.image, args.out)
    print(f"wrote {args.out}: predicted {maps.class_name} ({maps.probability:.1%}) with "
          f"{run_.describe()}")
    return 0
