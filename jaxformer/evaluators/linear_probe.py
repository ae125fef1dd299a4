"""`type="linear_probe"`: logistic regression (scikit-learn) on frozen image embeddings, as
the CLIP paper's linear-probe evaluation.

The probe is fitted on `train_split` and scored on `split`; its inverse regularisation `C`
is chosen from `cs` (default 10^-2 ... 10^3) on a held-out fifth of `train_split` (fixed
seed), then refitted on all of it. Options: `train_split`, `split`, `num_batches` (-1: all),
`cs`. Reports `top1` on `split` and the chosen `c`.
"""

from __future__ import annotations

from collections.abc import Sequence

import ml_collections
import numpy as np

from jaxformer.evaluators import embeddings
from jaxformer.evaluators.base import Context, Evaluator

DEFAULT_CS = (0.01, 0.1, 1.0, 10.0, 100.0, 1000.0)


def fit_probe(train_x: np.ndarray, train_y: np.ndarray, cs: Sequence[float], seed: int = 0):
    """A logistic regression on (train_x, train_y) with C chosen on a held-out fifth."""
    from sklearn.linear_model import LogisticRegression

    order = np.random.default_rng(seed).permutation(len(train_x))
    cut = len(order) * 4 // 5
    fit, held = order[:cut], order[cut:]

    def probe(c):
        return LogisticRegression(C=c, max_iter=1000)

    scores = [probe(c).fit(train_x[fit], train_y[fit]).score(train_x[held], train_y[held])
              for c in cs]
    best = cs[int(np.argmax(scores))]
    return probe(best).fit(train_x, train_y), best


class LinearProbeEvaluator(Evaluator):
    def run(self, params) -> dict[str, float]:
        params = embeddings.host_params(self.context, params)
        num_batches = self.config.get("num_batches", -1)
        train_x, train_y = embeddings.embed_images(
            self.context, params, self.config.train_split, num_batches)
        test_x, test_y = embeddings.embed_images(
            self.context, params, self.config.get("split", "") or None, num_batches)
        probe, c = fit_probe(train_x, train_y, tuple(self.config.get("cs", DEFAULT_CS)))
        return {"top1": float(probe.score(test_x, test_y)), "c": float(c)}


def build(name: str, config: ml_collections.ConfigDict, context: Context
          ) -> LinearProbeEvaluator:
    if not config.get("train_split", ""):
        raise ValueError(f"evals.{name}: a linear probe needs train_split")
    return LinearProbeEvaluator(name, config, context)
