"""`type="few_shot"`: few-shot classification by in-context learning (Flamingo's), for
interleaved image-text models.

A query image is classified after `k` labelled examples (shots) of the split's support set:
each class's caption (the split's template, "an emoji of a mammal.") is put after the query's
`<image>`, and the class whose caption the model finds most likely is the prediction:

    <image> shot 1's class caption <|endofchunk|> ... <image> caption of class c <|endofchunk|>
    images [shot 1, ..., shot k, query]

A class's score is the sum of the log-probabilities of the query chunk's tokens after its
`<image>` (the caption and `<|endofchunk|>`): a total, not a mean, so that every class is
scored on the same event, the whole chunk. Shots are drawn per query with `(seed, query)`
(`FewShotSplit.shots`): the same for every class and every run, and never the query itself
when the support set is the queries. A shot is captioned with its class's
caption, as the candidates are.

Options: `split` (a few-shot split of the data, e.g. `heldout_groups`), `shots` (default
(0, 4, 8)), `num_queries` (-1: all; else N of them drawn with `seed`), `seed` (0: which
queries and which shots), `batch_size` (queries per model call; default the eval batch,
rounded up to a multiple of the local devices).

Reports `top1_{k}shot` for each k; `calibrated_top1_{k}shot`, the same with each class's
score less its score when the query image is blank (zeros after normalisation, the data's
mean colour) after the same shots: contextual calibration (Zhao et al., 2021), which takes
out the language model's prior over the class captions, a prior that decides the ranking of
a small model by itself; and the baselines `chance` (1 / classes) and `majority` (the share
of the commonest label among the queries).

Each query's k + 1 images go through the image tower and resampler once, and its shots'
chunks through the language model once: a row packs them (segment 0) with every class's query
chunk after them (segment c + 1, `packed_layout` in jaxformer/models/flamingo.py), each chunk
attending to the shots and to itself, at the positions it would have after the shots alone,
so that every class is scored as in a sequence of its own; the vocabulary projection runs at
the scored positions only. Rows are right-padded to `k * longest chunk + the classes' chunks`
tokens (a fixed shape per k; the padding comes after every scored position and attention is
causal, so it changes no score); a class's chunk after the longest shots must fit the
language model's `block_size`. Batches run under the strategy, like the loss evaluator's.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from jaxformer.data.common import Shard
from jaxformer.data.interleaved_pipeline import InterleavedData
from jaxformer.evaluators.base import Context, Evaluator, sum_over_batches

PAD_ID = 0


def class_scores(model: Any, params: Any, batch: dict, visual: jax.Array | None = None
                 ) -> jax.Array:
    """float32 `[queries, classes]`: the summed log-probability of each class's query chunk.

    `batch`: `images` float32 `[queries, media, H, W, C]`; the packed rows' int32 `inputs`
    and `segments` `[queries, length]` (see `score_rows`); per class and scored slot, the
    row index whose logits predict the slot's token (`logits_at`), the token (`targets`, both
    int32) and float32 `weights` (0 at padding slots), each `[queries, classes, width]`.
    `visual`: the images' visual tokens (`encode_images`), if already computed.
    """
    queries, classes, width = batch["targets"].shape
    if visual is None:
        visual = model.apply({"params": params}, batch["images"], method="encode_images")
    logits = model.apply({"params": params}, visual, batch["inputs"],
                         segments=batch["segments"],
                         logits_at=batch["logits_at"].reshape(queries, classes * width),
                         method="decode_text")  # [queries, classes * width, vocab]
    targets = batch["targets"].reshape(queries, classes * width, 1)
    picked = jnp.take_along_axis(logits, targets, axis=-1)[..., 0]
    log_probs = (picked - jax.nn.logsumexp(logits, axis=-1)).reshape(queries, classes, width)
    return (log_probs * batch["weights"]).sum(-1)


def subset(count: int, size: int, seed: int) -> np.ndarray:
    """All of `range(count)` (`size` -1 or >= count), else `size` of them drawn with `seed`,
    in order (the splits can be sorted by class, so their first N would not do)."""
    if size < 0 or size >= count:
        return np.arange(count)
    return np.sort(np.random.default_rng(seed).choice(count, size, replace=False))


def score_rows(prefix: Sequence[int], candidates: Sequence[Sequence[int]], length: int,
               width: int) -> dict[str, np.ndarray]:
    """One packed row: `inputs` and `segments` `[length]`, `prefix` (segment 0) then each
    candidate chunk but its last token (segment c + 1), then padding (segment classes + 1);
    and per candidate `[classes, width]`, its tokens after its first (its `<image>`) as
    `targets`, the row index whose logits predict each (`logits_at`) and weight 1 (0 in the
    slots after them)."""
    classes = len(candidates)
    inputs = np.full((length,), PAD_ID, np.int32)
    segments = np.full((length,), classes + 1, np.int32)
    logits_at = np.zeros((classes, width), np.int32)
    targets = np.full((classes, width), PAD_ID, np.int32)
    weights = np.zeros((classes, width), np.float32)
    used = len(prefix) + sum(len(chunk) - 1 for chunk in candidates)
    if used > length or max(len(chunk) for chunk in candidates) - 1 > width:
        raise ValueError(f"a row of {used} tokens does not fit {length}, or a chunk "
                         f"{width} scored tokens")
    inputs[:len(prefix)] = prefix
    segments[:len(prefix)] = 0
    at = len(prefix)
    for c, chunk in enumerate(candidates):
        scored = len(chunk) - 1  # Its <image> predicts the first caption token.
        inputs[at:at + scored] = chunk[:-1]
        segments[at:at + scored] = c + 1
        logits_at[c, :scored] = np.arange(at, at + scored)
        targets[c, :scored] = chunk[1:]
        weights[c, :scored] = 1.0
        at += scored
    return {"inputs": inputs, "segments": segments, "logits_at": logits_at,
            "targets": targets, "weights": weights}


class FewShotEvaluator(Evaluator):
    def __init__(self, name: str, config: ml_collections.ConfigDict, context: Context):
        super().__init__(name, config, context)
        data = context.data
        if not isinstance(data, InterleavedData):
            raise ValueError(f"evals.{name}: the data ({type(data).__name__}) has no few-shot "
                             "splits; few_shot needs interleaved image-text data")
        self.split = data.few_shot(config.get("split", "") or None)
        split = self.split
        self.shots = tuple(int(k) for k in config.get("shots", (0, 4, 8)))
        if not self.shots or min(self.shots) < 0 or len(set(self.shots)) != len(self.shots):
            raise ValueError(f"evals.{name}.shots must be distinct counts >= 0, got "
                             f"{tuple(self.shots)}")
        pool = len(split.support) - (split.support is split.queries)
        if max(self.shots) > pool:
            raise ValueError(f"evals.{name}: {max(self.shots)} shots but {pool} support "
                             "examples")
        limit = config.get("num_queries", -1)
        if limit == 0 or limit < -1:
            raise ValueError(f"evals.{name}.num_queries must be -1 or positive, got {limit}")
        self.seed = config.get("seed", 0)
        self.query_indices = subset(len(split.queries), limit, self.seed)
        self.labels = np.asarray([int(split.queries[int(i)]["label"])
                                  for i in self.query_indices])  # Of the chosen queries.
        self.candidates = [data.chunk_ids(split.caption(c))
                           for c in range(len(split.class_names))]
        longest = max(len(ids) for ids in self.candidates)
        self.width = longest - 1  # Scored tokens of the longest chunk.
        block_size = context.task.model.lm_spec.block_size
        for k in self.shots:
            if (k + 1) * longest - 1 > block_size:
                raise ValueError(
                    f"evals.{name}: {k} shots need up to {(k + 1) * longest - 1} input tokens "
                    f"({k + 1} chunks of up to {longest}), more than the language model's "
                    f"block_size {block_size}; use fewer shots")
        chunks = sum(len(ids) - 1 for ids in self.candidates)
        self.lengths = {k: k * longest + chunks for k in self.shots}  # Packed rows.
        devices = jax.local_device_count()
        per_call = config.get("batch_size", 0) or context.batch_size
        self.batch_size = math.ceil(per_call / devices) * devices
        self._images: dict[tuple[str, int], np.ndarray] = {}
        self._sums = context.strategy.reduce_fn(self.sums)

    def image(self, which: str, index: int) -> np.ndarray:
        """The eval view of `queries[index]` or `support[index]` (kept once computed)."""
        key = (which, index)
        if key not in self._images:
            source = self.split.queries if which == "queries" else self.split.support
            self._images[key] = self.context.data.eval_image(source[index])
        return self._images[key]

    def sequences(self, k: int, query: int) -> tuple[list[int], list[int]]:
        """(the support indices of query `query`'s k shots, the token ids before its chunk)."""
        shots = self.split.shots(query, k, self.seed)
        labels = [int(self.split.support[i]["label"]) for i in shots]
        prefix = [t for label in labels
                  for t in self.context.data.chunk_ids(self.split.caption(label))]
        return shots, prefix

    def batch(self, k: int, queries: Sequence[int], length: int | None = None
              ) -> dict[str, np.ndarray]:
        """The packed rows of `queries` with k shots (`length` tokens: default the fixed
        length for k); query -1 is padding (label -1, no weight)."""
        length = length or self.lengths[k]
        classes = len(self.candidates)
        images = np.zeros((len(queries), k + 1, *self.context.data.image_shape), np.float32)
        scored = (len(queries), classes, self.width)
        rows = {"inputs": np.full((len(queries), length), PAD_ID, np.int32),
                "segments": np.full((len(queries), length), classes + 1, np.int32),
                "logits_at": np.zeros(scored, np.int32),
                "targets": np.full(scored, PAD_ID, np.int32),
                "weights": np.zeros(scored, np.float32)}
        labels = np.full((len(queries),), -1, np.int32)
        for row, query in enumerate(queries):
            if query < 0:
                continue
            shots, prefix = self.sequences(k, query)
            for slot, index in enumerate(shots):
                images[row, slot] = self.image("support", index)
            images[row, k] = self.image("queries", query)
            for key, value in score_rows(prefix, self.candidates, length, self.width).items():
                rows[key][row] = value
            labels[row] = int(self.split.queries[query]["label"])
        return {"images": images, **rows, "label": labels}

    def batches(self, k: int):
        shard = Shard(self.batch_size, jax.process_index(), jax.process_count())
        queries = [int(i) for i in self.query_indices]
        for start in range(0, len(queries), shard.global_batch):
            block = queries[start:start + shard.global_batch]
            block += [-1] * (shard.global_batch - len(block))
            yield self.batch(k, [block[r] for r in shard.rows])

    def sums(self, params, batch):
        model = self.context.task.model
        visual = model.apply({"params": params}, batch["images"], method="encode_images")
        scores = class_scores(model, params, batch, visual)
        # The prior: the query image blank (zeros, the mean colour after normalisation),
        # encoded once for the batch (media are encoded one by one, at their index).
        blank = model.apply({"params": params}, jnp.zeros_like(batch["images"][:1]),
                            method="encode_images")[:, -1:]
        prior = class_scores(model, params, batch, visual.at[:, -1:].set(blank))
        labels = batch["label"]
        real = labels >= 0
        correct = (jnp.argmax(scores, axis=-1) == labels) & real
        calibrated = (jnp.argmax(scores - prior, axis=-1) == labels) & real
        return {"correct": correct.sum(), "calibrated": calibrated.sum(), "count": real.sum()}

    def run(self, params) -> dict[str, float]:
        metrics = {}
        for k in self.shots:
            totals = sum_over_batches(self._sums, params, self.batches(k), self.context.strategy)
            count = max(totals["count"], 1)
            metrics[f"top1_{k}shot"] = float(totals["correct"] / count)
            metrics[f"calibrated_top1_{k}shot"] = float(totals["calibrated"] / count)
        classes = len(self.split.class_names)
        metrics["chance"] = 1.0 / classes
        metrics["majority"] = float(np.bincount(self.labels, minlength=classes).max()
                                    / len(self.labels))
        return metrics


def build(name: str, config: ml_collections.ConfigDict, context: Context) -> FewShotEvaluator:
    return FewShotEvaluator(name, config, context)
