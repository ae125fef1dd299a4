"""Carion et al., 2020 (DETR): box AP of the detector and the paper's ablations of the
encoder (Table 2) and of the box losses (Table 4), at CPU scale.

Args (`jaxformer reproduce experiments/carion2020 --scale=...`):
  scale=cpu    (default) the chain of configs/detr/composed.py on the composed canvases:
               first the ResNet backbone trained to classify the canvases' objects
               (`backbone`, configs/detr/backbone.py; DETR's ImageNet pretraining), then the
               DETR that loads it (`detr`, 2 encoder layers) and its ablations:
               `no-encoder` (the backbone's features go straight to the decoder),
               `encoder-4` (4 encoder layers), `class+l1` (no GIoU term, in the loss or
               in the matching cost) and `class+giou` (no L1 term).
  scale=paper  DETR-R50 and DETR-R101 on COCO (configs/detr/coco.py), for their parameter
               counts.
  runlocal     the rows with tiny models for a few steps (smoke tests).
"""

import ml_collections

from configs import common
from configs.detr import backbone as backbone_config
from configs.detr import coco, composed

PAPER_ROWS = ("r50", "r101")
RUNS = ("backbone", "detr")
# Training steps of each run of the chain at CPU scale.
STEPS = {"backbone": 3000, "detr": 4000}
# The sizes of the `cpu` DETR (models.detr.VARIANTS["cpu"]; configs import no model code),
# for the rows that change one of them.
CPU_SIZES = dict(backbone="tiny", d_model=64, num_heads=4, num_encoder_layers=2,
                 num_decoder_layers=2, mlp_dim=256, num_queries=10)
# Table row: the config fields it changes.
ABLATIONS = {
    "detr": {},
    "no-encoder": {"model": {"num_encoder_layers": 0}},
    "encoder-4": {"model": {"num_encoder_layers": 4}},
    "class+l1": {"task": {"giou_weight": 0.0}},
    "class+giou": {"task": {"bbox_weight": 0.0}},
}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    arg = common.experiment_arg(arg, run="detr", backbone="", ablation="detr", variant="r50")
    if arg.scale == "paper":
        return coco.get_config(f"variant={arg.variant}")
    if arg.run not in RUNS:
        raise ValueError(f"unknown run {arg.run!r}; available: {', '.join(RUNS)}")
    local = "runlocal" if arg.runlocal else f"steps={STEPS[arg.run]}"
    if arg.run == "backbone":
        return backbone_config.get_config(local)
    if arg.ablation not in ABLATIONS:
        raise ValueError(f"unknown ablation {arg.ablation!r}; available: "
                         f"{', '.join(ABLATIONS)}")
    config = composed.get_config(f"{local},backbone={arg.backbone}" if arg.backbone else local)
    changes = ABLATIONS[arg.ablation]
    if "model" in changes:
        config.model.update(variant="", **{**CPU_SIZES, **changes["model"]})
    config.task.update(changes.get("task", {}))
    return config


def get_sweep(hyper, arg: str | None = None) -> list[dict]:
    arg = common.experiment_arg(arg)
    if arg.scale == "paper":
        return [{"name": name, "arg": f"variant={name}"} for name in PAPER_ROWS]
    backbone = f"backbone={hyper.workdir_of('backbone')}"
    return [{"name": "backbone", "arg": "run=backbone"},
            *[{"name": row, "arg": f"run=detr,{backbone},ablation={row}"}
              for row in ABLATIONS]]
