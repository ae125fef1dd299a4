"""`type="captioning"`: greedy captions of an eval split's images, scored against every
reference caption of each image by CIDEr-D and BLEU-4 (the COCO caption evaluation's scorers,
`caption_metrics`).

Each image is captioned after the prompt `<image>` (preceded by the chunks of `shots` other
images when `shots > 0`) by greedy decoding over the KV cache, stopped at `<|endofchunk|>`
(`inference.captioning`). Options: `split` (an eval split; default the data's first),
`num_examples` (-1: all; else N drawn with `seed`), `max_new_tokens` (20), `shots` (0; with
k > 0 each image is captioned after k other images of the same split, drawn per image with
`(seed, index)`, never the image itself, each shown with its canonical caption, the split's
`caption` feature), `seed` (0), `batch_size` (images per decoding batch; default the eval
batch). Every process decodes the whole split on its local devices (the splits are small).
With shots, prompts differ in length and each length compiles its own decoder (once per
process: later runs reuse them).

Reports `cider` (CIDEr-D: n-grams 1-4, tf-idf weights with document frequencies from the
references of the evaluated images, clipped counts, a Gaussian length penalty of sigma 6,
times 10; on pycocoevalcap's scale, which papers print times 100) and `bleu4` (corpus BLEU-4
with the closest reference length, 0 to 1).

Text is normalised before scoring by lower-casing, turning every punctuation character into
a space and splitting on whitespace: a stand-in for the COCO evaluation's PTB tokenizer,
which needs Java ("t-shirt" becomes "t shirt" and "man's" "man s" in hypotheses and
references alike, where PTB keeps "t-shirt" and splits "man 's").

`predictions` gives the captions themselves (with their references), for a look by eye.
"""

from __future__ import annotations

import dataclasses
import unicodedata
from collections.abc import Sequence
from typing import Any

import ml_collections
import numpy as np

from jaxformer.console import log
from jaxformer.evaluators import caption_metrics
from jaxformer.evaluators.base import Context, Evaluator
from jaxformer.evaluators.few_shot import subset
from jaxformer.inference import captioning
from jaxformer.tasks.captioning import CaptioningTask


def normalize(text: str) -> str:
    """Lower case, punctuation replaced by spaces, words joined by single spaces."""
    chars = (" " if unicodedata.category(c).startswith("P") else c for c in text.lower())
    return " ".join("".join(chars).split())


def scores(hypotheses: Sequence[str], references: Sequence[Sequence[str]]) -> dict[str, float]:
    """`cider` (CIDEr-D) and `bleu4` of one hypothesis per image against its references
    (normalised first)."""
    if len(hypotheses) != len(references):
        raise ValueError(f"{len(hypotheses)} hypotheses for {len(references)} images")
    if not hypotheses:
        raise ValueError("no captions to score")
    if any(len(refs) == 0 for refs in references):
        raise ValueError("every image needs at least one reference caption")
    hypotheses = [normalize(h) for h in hypotheses]
    references = [[normalize(r) for r in refs] for refs in references]
    return {"cider": caption_metrics.cider_d(hypotheses, references),
            "bleu4": caption_metrics.bleu4(hypotheses, references)}


def shot_indices(count: int, index: int, shots: int, seed: int) -> list[int]:
    """`shots` distinct examples of a split of `count`, other than `index`, drawn with
    `(seed, index)`."""
    pool = np.delete(np.arange(count), index)
    if shots > len(pool):
        raise ValueError(f"{shots} shots but {len(pool)} other examples")
    rng = np.random.default_rng([seed, index])
    return [int(i) for i in rng.choice(pool, shots, replace=False)]


@dataclasses.dataclass(frozen=True)
class Prediction:
    """One image's caption, its references, and the shots it was captioned after."""

    index: int
    caption: str
    references: tuple[str, ...]
    shots: tuple[int, ...] = ()


def predictions(context: Context, params: Any, *, split: str | None = None,
                num_examples: int = -1, shots: int = 0, seed: int = 0,
                max_new_tokens: int = 20, batch_size: int = 8) -> list[Prediction]:
    """The greedy captions of `num_examples` images of `split` (-1: all; else drawn with
    `seed`, in the split's order), each after `shots` other images of the split with their
    canonical captions. `params` is one copy (`strategy.host_state`)."""
    data = context.data
    eval_split = data.split(split or None)
    source, references = eval_split.source, eval_split.captions
    indices = [int(i) for i in subset(len(source), num_examples, seed)]
    images = {}

    def image(i: int) -> np.ndarray:
        if i not in images:
            images[i] = data.eval_image(source[i])
        return images[i]

    chosen = [shot_indices(len(source), i, shots, seed) if shots else [] for i in indices]
    example_shots = [[(image(j), str(source[j]["caption"])) for j in shots_of]
                     for shots_of in chosen]
    captions = captioning.caption_batch(
        context.task, params, [image(i) for i in indices], example_shots,
        max_new_tokens=max_new_tokens, batch_size=batch_size)
    return [Prediction(i, text, tuple(references[i]), tuple(shots_of))
            for i, text, shots_of in zip(indices, captions, chosen, strict=True)]


class CaptioningEvaluator(Evaluator):
    def __init__(self, name: str, config: ml_collections.ConfigDict, context: Context):
        super().__init__(name, config, context)
        if not isinstance(context.task, CaptioningTask):
            raise ValueError(f"evals.{name}: captioning needs a captioning task (an "
                             "interleaved image-text model)")
        self.split = config.get("split", "") or None
        eval_split = context.data.split(self.split)  # An unknown split fails here.
        self.shots = config.get("shots", 0)
        if self.shots < 0 or self.shots >= len(eval_split.source):
            raise ValueError(f"evals.{name}.shots must be in [0, {len(eval_split.source)}), "
                             f"got {self.shots}")
        self.max_new_tokens = config.get("max_new_tokens", 20)
        if self.max_new_tokens < 1:
            raise ValueError(f"evals.{name}.max_new_tokens must be >= 1, got "
                             f"{self.max_new_tokens}")
        longest = max(len(context.data.chunk_ids(str(eval_split.source[i]["caption"])))
                      for i in range(len(eval_split.source)))
        needed = self.shots * longest + 1 + self.max_new_tokens
        block_size = context.task.model.lm_spec.block_size
        if needed > block_size:
            raise ValueError(f"evals.{name}: {self.shots} shots (chunks of up to {longest} "
                             f"tokens), <image> and max_new_tokens {self.max_new_tokens} need "
                             f"up to {needed} tokens, more than the language model's "
                             f"block_size {block_size}")

    def run(self, params) -> dict[str, float]:
        cfg = self.config
        results = predictions(
            self.context, self.context.strategy.host_state(params), split=self.split,
            num_examples=cfg.get("num_examples", -1), shots=self.shots,
            seed=cfg.get("seed", 0), max_new_tokens=self.max_new_tokens,
            batch_size=cfg.get("batch_size", 0) or self.context.batch_size)
        metrics = scores([p.caption for p in results], [p.references for p in results])
        examples = "; ".join(f"{p.references[0]!r} -> {p.caption!r}" for p in results[:3])
        log(f"{self.name}: CIDEr-D {metrics['cider']:.3f}, BLEU-4 {metrics['bleu4']:.3f} on "
            f"{len(results)} images, {self.shots} shots; e.g. {examples}")
        return metrics


def build(name: str, config: ml_collections.ConfigDict, context: Context
          ) -> CaptioningEvaluator:
    return CaptioningEvaluator(name, config, context)
