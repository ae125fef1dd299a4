"""Subword GPT on the embedded Shakespeare corpus: a sentencepiece BPE vocabulary (trained on
the train split, saved in the workdir) instead of characters. Same arg strings as
shakespeare_char.py (`:cpu`, `:runlocal`, `:variant=...`).

  jaxformer train --config=configs/gpt/shakespeare_bpe.py:cpu --workdir=/tmp/shakespeare_bpe
"""

import ml_collections

from configs.gpt import shakespeare_char


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    return shakespeare_char.get_config(",".join(x for x in (arg, "tokenizer=bpe") if x))
