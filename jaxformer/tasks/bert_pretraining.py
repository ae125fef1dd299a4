"""BERT pretraining: masked-LM plus next-sentence prediction, and the ablations of the
paper's Table 5.

Batches (see `jaxformer.data.bert_pretraining_pipeline`): `input_ids`, `segment_ids`: int32
`[batch, seq_length]` (0 is [PAD]); `mlm_positions`, `mlm_ids`: int32
`[batch, max_predictions]`, the masked positions (padded with 0) and their original tokens;
`mlm_weights`: float32 `[batch, max_predictions]`, 1 for a real prediction and 0 for padding;
`next_sentence`: int32 `[batch]`, 0 IsNext, 1 NotNext, -1 a padding row of an eval batch.

The loss is the reference one: the masked-LM cross-entropy averaged over the real masked
positions plus the next-sentence cross-entropy averaged over the real rows. As an `Average`
it counts rows: the total is the next-sentence sum plus the masked-LM sum scaled by
`rows / predictions` of the global batch (`axis_name` sums both over devices), so that
`total / count` is that sum of two means.

`task.objective` chooses the loss (Table 5 of the paper):
  * "mlm_nsp" (default): the above;
  * "mlm": the masked-LM loss only (with `data.next_sentence = false`, so that B always
    follows A), averaged over the real masked positions;
  * "ltr": a left-to-right LM on a `causal` model: the masking is undone and every token
    predicts the next one (through the same tied head), averaged over the real targets.

Config: `task.name = "bert_pretraining"`; the model is `model.name = "bert"` (see
`jaxformer.models.bert.build`). `data.seq_length` and `data.max_predictions` give the input
sizes when the data object does not (a `DataSpec`).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import optax

from jaxformer import registry
from jaxformer.tasks.base import Average, Task, compute_dtype, global_sum


def data_size(config: ml_collections.ConfigDict, data: Any, key: str) -> int:
    """`data.<key>`, or `config.data.<key>` when the data object has none (a `DataSpec`)."""
    value = getattr(data, key, None)
    if value is None:
        value = config.data.get(key, None)
    if value is None:
        raise ValueError(f"data.{key} must be set")
    return int(value)


OBJECTIVES = ("mlm_nsp", "mlm", "ltr")


def argmax_equals(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """`logits.argmax(-1) == labels`, the same booleans (ties and NaNs included).

    `argmax` is a reduction of (value, index) pairs, which XLA's CPU backend runs as scalar
    code: over BERT-tiny's `[32, 20, 8192]` masked-LM logits per device it costs ~20 ms more
    than this. Here the row maximum (a vectorised reduction, shared with the cross-entropy's)
    marks the winning entries, and the smallest marked index is the answer: the first maximum,
    or in a row with NaNs the first NaN, as `argmax` picks.
    """
    vocab = logits.shape[-1]
    if vocab >= 2**24:  # Indices must be exact in float32.
        return logits.argmax(-1) == labels
    nan = jnp.isnan(logits)
    is_top = jnp.where(nan.any(-1, keepdims=True), nan,
                       logits == logits.max(-1, keepdims=True))
    index = jnp.arange(vocab, dtype=jnp.float32)
    first = jnp.min(jnp.where(is_top, index, jnp.float32(vocab)), axis=-1)
    return first.astype(jnp.int32) == labels


def unmasked_tokens(batch: dict[str, jax.Array]) -> jax.Array:
    """`input_ids` with the original token back at every predicted position."""
    ids, positions = jnp.asarray(batch["input_ids"]), batch["mlm_positions"]
    current = jnp.take_along_axis(ids, positions, axis=1)
    values = jnp.where(batch["mlm_weights"] > 0, batch["mlm_ids"], current)
    return ids.at[jnp.arange(ids.shape[0])[:, None], positions].set(values)


class BertPretrainingTask(Task):
    """Masked-LM and next-sentence pretraining of `BertForPreTraining` (or an ablation)."""

    def __init__(self, config: ml_collections.ConfigDict, data: Any):
        self.objective = config.task.get("objective", "mlm_nsp")
        if self.objective not in OBJECTIVES:
            raise ValueError(f"unknown task.objective {self.objective!r}; available: "
                             f"{', '.join(OBJECTIVES)}")
        if config.model.get("causal", False) != (self.objective == "ltr"):
            raise ValueError("task.objective 'ltr' needs model.causal = true, and the other "
                             "objectives a bidirectional model (model.causal = false)")
        self.seq_length = data_size(config, data, "seq_length")
        self.max_predictions = data_size(config, data, "max_predictions")
        self.vocab_size = data.vocab_size
        self.model = registry.lookup("models", config.model.name).build(
            config.model, vocab_size=self.vocab_size, head="pretraining",
            dtype=compute_dtype(config.train.compute_dtype), remat=config.train.remat)

    def dummy_batch(self, batch_size: int) -> dict[str, jax.Array]:
        tokens = jnp.zeros((batch_size, self.seq_length), jnp.int32)
        predictions = jnp.zeros((batch_size, self.max_predictions), jnp.int32)
        return {"input_ids": tokens, "segment_ids": tokens, "mlm_positions": predictions,
                "mlm_ids": predictions,
                "mlm_weights": jnp.zeros((batch_size, self.max_predictions), jnp.float32),
                "next_sentence": jnp.zeros((batch_size,), jnp.int32)}

    def model_inputs(self, batch):
        return batch["input_ids"], batch["segment_ids"], batch["mlm_positions"]

    def loss(self, params, batch, rng, *, train: bool, axis_name=None):
        if self.objective == "ltr":
            return self._left_to_right_loss(params, batch, rng, train=train)
        mlm_logits, nsp_logits = self.model.apply(
            {"params": params}, *self.model_inputs(batch), train=train, rngs={"dropout": rng})
        labels = batch["next_sentence"]
        real = (labels >= 0).astype(jnp.float32)  # [b]
        weights = batch["mlm_weights"].astype(jnp.float32) * real[:, None]  # [b, P]

        mlm_nll = optax.softmax_cross_entropy_with_integer_labels(mlm_logits, batch["mlm_ids"])
        mlm_loss = Average.of(mlm_nll, weights)
        mlm_correct = argmax_equals(mlm_logits, batch["mlm_ids"])
        mlm_metrics = {"mlm_loss": mlm_loss, "mlm_accuracy": Average.of(mlm_correct, weights)}
        if self.objective == "mlm":
            return mlm_loss, mlm_metrics
        safe_labels = jnp.maximum(labels, 0)
        nsp_nll = optax.softmax_cross_entropy_with_integer_labels(nsp_logits, safe_labels)
        nsp_loss = Average.of(nsp_nll, real)
        nsp_correct = nsp_logits.argmax(-1) == safe_labels

        # mean(nsp) + mean(mlm) as a sum over rows: the masked-LM sum is scaled by rows per
        # prediction of the global batch.
        rows = global_sum(nsp_loss.count, axis_name)
        predictions = global_sum(mlm_loss.count, axis_name)
        scale = rows / jnp.maximum(predictions, 1e-9)
        loss = Average(nsp_loss.total + scale * mlm_loss.total, nsp_loss.count)
        return loss, {**mlm_metrics, "nsp_loss": nsp_loss,
                      "nsp_accuracy": Average.of(nsp_correct, real)}

    def _left_to_right_loss(self, params, batch, rng, *, train: bool):
        tokens = unmasked_tokens(batch)
        b, t = tokens.shape
        positions = jnp.broadcast_to(jnp.arange(t, dtype=jnp.int32), (b, t))
        logits, _ = self.model.apply({"params": params}, tokens, batch["segment_ids"],
                                     positions, train=train, rngs={"dropout": rng})
        targets = jnp.pad(tokens[:, 1:], ((0, 0), (0, 1)))  # [PAD] after the last token.
        weights = (targets != 0).astype(jnp.float32)
        nll = optax.softmax_cross_entropy_with_integer_labels(logits, targets)
        loss = Average.of(nll, weights)
        return loss, {"lm_loss": loss,
                      "lm_accuracy": Average.of(argmax_equals(logits, targets), weights)}

    def predict(self, params, batch) -> jax.Array:
        """The masked-LM logits float32 `[batch, P, vocab]` at `batch["mlm_positions"]` (for
        fill-mask), in evaluation mode."""
        mlm_logits, _ = self.model.apply({"params": params}, *self.model_inputs(batch),
                                         train=False)
        return mlm_logits

    def items_per_example(self) -> tuple[int, str]:
        return self.seq_length, "tok"

    def flops_per_example(self, params) -> float:
        """Training FLOPs of one sequence: 6N per item plus attention (PaLM appendix B).

        The encoder blocks run on all T tokens (with attention `12 L d T` per token); the
        masked-LM head and the tied decoder (`vocab x d`) on the P predicted positions (all T
        for "ltr"); the
        pooler and next-sentence head once. Embedding lookups do no matmul work.
        """
        model = self.model
        count = lambda tree: sum(x.size for x in jax.tree.leaves(tree))  # noqa: E731
        encoder = params["encoder"]
        per_token = count(encoder["transformer"])
        per_prediction = count(params["mlm_head"]) + encoder["token_embedding"]["embedding"].size
        per_sequence = count(encoder["pooler"]) + count(params["nsp_head"])
        t = self.seq_length
        predictions = t if self.objective == "ltr" else self.max_predictions
        dense = t * per_token + predictions * per_prediction + per_sequence
        return float(6 * dense + 12 * model.num_layers * model.d_model * t * t)


def build(config: ml_collections.ConfigDict, data: Any) -> BertPretrainingTask:
    return BertPretrainingTask(config, data)
