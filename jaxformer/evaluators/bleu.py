"""`type="bleu"`: sacreBLEU of beam-search translations of an eval split.

Options: `split` ("validation"), `max_examples` (-1: all), `beam_size` (4),
`length_penalty` (0.6), `extra_decode_length` (50: decode up to source length + 50, the
paper's setting), `decode_batch_size` (128). Reports `bleu`.
"""

from __future__ import annotations

import ml_collections

from jaxformer.console import log
from jaxformer.evaluators.base import Context, Evaluator
from jaxformer.inference.seq2seq import bleu, translate_texts


class BleuEvaluator(Evaluator):
    def run(self, params) -> dict[str, float]:
        cfg = self.config
        split = cfg.get("split", "validation")
        data = self.context.data
        sources, references = data.sources(split), data.references(split)
        limit = cfg.get("max_examples", -1)
        if limit >= 0:
            sources, references = sources[:limit], references[:limit]
        beam_size, alpha = cfg.get("beam_size", 4), cfg.get("length_penalty", 0.6)
        hypotheses = translate_texts(
            self.context.task, params, sources, beam_size=beam_size, length_penalty=alpha,
            extra_length=cfg.get("extra_decode_length", 50),
            batch_size=cfg.get("decode_batch_size", 128))
        score = bleu(hypotheses, references)
        log(f"{split} BLEU {score:.2f} on {len(sources)} sentences (beam {beam_size}, "
            f"alpha {alpha})")
        return {"bleu": score}


def build(name: str, config: ml_collections.ConfigDict, context: Context) -> BleuEvaluator:
    return BleuEvaluator(name, config, context)
