"""Config blocks that several experiment configs share (data only: no model code)."""

import ml_collections

# Model widths of the translation Transformer's named variants (for the rsqrt learning rate).
TRANSFORMER_WIDTHS = {"base": 512, "big": 1024}


def train(**fields) -> ml_collections.ConfigDict:
    """The `train` block with the trainer's defaults, updated by `fields`."""
    block = dict(batch_size=64, num_steps=1000, grad_accum_steps=1, compute_dtype="float32",
                 remat=False, strategy="sharded", fsdp=1, cpu_matmuls="onednn", log_every=50,
                 checkpoint_every=1000, keep_checkpoints=3, average_last=0, profile_steps=0,
                 profile_start=10)
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


def translation_evals(*, loss_every: int, bleu_every: int, bleu_examples: int
                      ) -> ml_collections.ConfigDict:
    """Validation loss and BLEU every few steps, test BLEU at the end, decoding as the paper:
    beam 4, length penalty 0.6, up to the source length + 50 tokens."""
    search = dict(beam_size=4, length_penalty=0.6, extra_decode_length=50,
                  decode_batch_size=128)
    return ml_collections.ConfigDict(dict(
        val=evaluator("loss", every_steps=loss_every, split="validation", num_batches=-1,
                      perplexity_of="nll"),
        val_bleu=evaluator("bleu", every_steps=bleu_every, split="validation",
                           max_examples=bleu_examples, **search),
        test_bleu=evaluator("bleu", split="test", max_examples=-1, **search)))


SCALES = ("cpu", "paper")  # The scales of a paper table in experiments/.


def experiment_arg(arg: str | None, **extra) -> ml_collections.ConfigDict:
    """The arg string of an experiments/<paper>/config.py: `scale=cpu|paper`, `runlocal`, and
    the experiment's own `extra` keys (with their defaults)."""
    from jaxformer.config import parse_arg

    parsed = parse_arg(arg, scale="cpu", runlocal=False, **extra)
    if parsed.scale not in SCALES:
        raise ValueError(f"unknown scale {parsed.scale!r}; available: {', '.join(SCALES)}")
    return parsed
