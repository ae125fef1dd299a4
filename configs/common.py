"""Config blocks that several experiment configs share (data only: no model code)."""

import ml_collections

# Model widths of the translation Transformer's named variants (for the rsqrt learning rate).
TRANSFORMER_WIDTHS = {"base": 512, "big": 1024}


def train(**fields) -> ml_collections.ConfigDict:
    """The `train` block with the trainer's defaults, updated by `fields`."""
    block = dict(batch_size=64, num_steps=1000, grad_accum_steps=1, compute_dtype="float32",
                 remat=False, strategy="sharded", log_every=50, checkpoint_every=1000,
                 keep_checkpoints=3, average_last=0)
    block.update(fields)
    return ml_collections.ConfigDict(block)


def add_transfer(config: ml_collections.ConfigDict) -> None:
    """`init_from` (no source by default) and `freeze` (nothing by default); see
    jaxformer/train/transfer.py."""
    config.init_from = ml_collections.ConfigDict(dict(
        workdir="", step=-1, mapping=(("", ""),), strict=True))
    config.freeze = ()


def evaluator(type_: str, *, every_steps: int = 0, split: str = "", **options
              ) -> ml_collections.ConfigDict:
    """One `config.evals` entry: runs every `every_steps` steps (0: at the end only)."""
    return ml_collections.ConfigDict(dict(type=type_, every_steps=every_steps, at_end=True,
                                          split=split, **options))
