"""Radford et al., 2019 (GPT-2), Table 2: the four model sizes.

Args (`jaxformer reproduce experiments/radford2019 --scale=...`):
  scale=paper  gpt2-small, medium, large and xl (vocabulary 50,257, context 1,024) with GPT-2's
               optimizer on synthetic tokens (configs/gpt/gpt2.py): WebText is not available,
               so these rows give parameter counts and throughput, not a language model.
  scale=cpu    (default) model width x depth on the Shakespeare characters
               (configs/gpt/shakespeare_char.py:cpu, 2,000 steps of 12 x 64 tokens): widths
               64, 128, 192 (heads of width 32) and 2 or 4 layers; validation loss per row.
  runlocal     the rows of the scale with a tiny model for a few steps (smoke tests); at
               scale=paper every row trains the `tiny` variant.
"""

import ml_collections

from configs import common
from configs.gpt import gpt2, shakespeare_char

PAPER_ROWS = ("gpt2-small", "gpt2-medium", "gpt2-large", "gpt2-xl")  # Also the variant names.
CPU_WIDTHS = (64, 128, 192)
CPU_DEPTHS = (2, 4)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    arg = common.experiment_arg(arg)
    if arg.scale == "paper":
        return gpt2.get_config("runlocal" if arg.runlocal else "")
    config = shakespeare_char.get_config("runlocal" if arg.runlocal else "cpu")
    config.model.variant = ""  # The rows set the sizes.
    return config


def get_sweep(hyper, arg: str | None = None) -> list[dict]:
    arg = common.experiment_arg(arg)
    if arg.scale == "paper":
        return [{"name": name, **({} if arg.runlocal else {"config.model.variant": name})}
                for name in PAPER_ROWS]
    return [{"name": f"d{width}-l{depth}", "config.model.d_model": width,
             "config.model.num_heads": width // 32, "config.model.num_layers": depth}
            for width in CPU_WIDTHS for depth in CPU_DEPTHS]
