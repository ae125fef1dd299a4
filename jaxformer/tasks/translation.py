"""Sequence-to-sequence translation: label-smoothed teacher forcing, token accuracy, BLEU.

Batches are `{"inputs": int32[b, s], "targets": int32[b, t]}`, both ending in EOS and padded
with id 0. Losses and accuracy are averaged over the non-padding target tokens. At evaluation
the task also translates the validation split with beam search and scores it with sacreBLEU
(`eval/bleu`), and at the end of training the test split (`test/bleu`).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import ml_collections

from jaxformer import registry, translate
from jaxformer.tasks.lm import compute_dtype
from jaxformer.train.metrics import log


def label_smoothed_cross_entropy(
    logits: jax.Array, targets: jax.Array, smoothing: float
) -> tuple[jax.Array, jax.Array]:
    """Per-token (smoothed loss, plain negative log-likelihood), both `[...]`.

    The smoothed target puts `1 - smoothing` on the true token and spreads `smoothing` over the
    other `vocab - 1` tokens. Its entropy is subtracted, so the loss is the KL divergence to
    the smoothed target: 0 for a perfect fit, whatever the smoothing.
    """
    vocab = logits.shape[-1]
    log_probs = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    nll = -jnp.take_along_axis(log_probs, targets[..., None], axis=-1)[..., 0]
    if smoothing == 0.0:
        return nll, nll
    confidence, low = 1.0 - smoothing, smoothing / (vocab - 1)
    entropy = -(confidence * jnp.log(confidence) + (vocab - 1) * low * jnp.log(low))
    # Cross-entropy with the smoothed target: the true token's share plus the others'.
    cross_entropy = (confidence - low) * nll - low * log_probs.sum(axis=-1)
    return cross_entropy - entropy, nll


class TranslationTask:
    """Teacher-forced training of `config.model` on `{"inputs", "targets"}` batches."""

    def __init__(self, config: ml_collections.ConfigDict, data: Any):
        self.config = config.task
        tokenizer = data.tokenizer
        self.tokenizer = tokenizer
        self.pad_id, self.bos_id, self.eos_id = tokenizer.pad_id, tokenizer.bos_id, tokenizer.eos_id
        if self.pad_id != 0:
            raise ValueError(f"the tokenizer's pad id must be 0, got {self.pad_id}")
        self.max_source_length = config.data.max_source_length
        self.max_target_length = config.data.max_target_length
        self.model = registry.lookup("models", config.model.name).build(
            config.model, vocab_size=tokenizer.vocab_size,
            max_len=max(self.max_source_length, self.max_target_length,
                        self.config.max_decode_length),
            bos_id=self.bos_id, dtype=compute_dtype(config.train.compute_dtype),
            remat=config.train.remat)

    def dummy_batch(self, batch_size: int) -> dict[str, jax.Array]:
        return {"inputs": jnp.ones((batch_size, self.max_source_length), jnp.int32),
                "targets": jnp.ones((batch_size, self.max_target_length), jnp.int32)}

    def init(self, rng: jax.Array) -> Any:
        batch = self.dummy_batch(1)
        return self.model.init(rng, batch["inputs"], batch["targets"])["params"]

    def _token_metrics(self, params, batch, rng, train: bool) -> dict[str, jax.Array]:
        """Sums over the non-padding target tokens, and their number as `weight`."""
        logits = self.model.apply({"params": params}, batch["inputs"], batch["targets"],
                                  train=train, rngs={"dropout": rng})
        targets = batch["targets"]
        weights = (targets != self.pad_id).astype(jnp.float32)
        loss, nll = label_smoothed_cross_entropy(logits, targets, self.config.label_smoothing)
        correct = (logits.argmax(-1) == targets).astype(jnp.float32)
        return {"loss": (loss * weights).sum(), "nll": (nll * weights).sum(),
                "accuracy": (correct * weights).sum(), "weight": weights.sum()}

    def loss(self, params, batch, rng, *, train: bool):
        """Means over the batch's target tokens; their number is `weight` (see train.state)."""
        sums = self._token_metrics(params, batch, rng, train)
        weight = sums.pop("weight")
        means = {k: v / jnp.maximum(weight, 1.0) for k, v in sums.items()}
        return means.pop("loss"), {**means, "weight": weight}

    def eval_metrics(self, params, batch) -> dict[str, jax.Array]:
        return self._token_metrics(params, batch, jax.random.key(0), train=False)

    def decode_metrics(self, params, data, *, step: int, final: bool) -> dict[str, float]:
        """BLEU of beam-search translations: validation every `bleu_every` steps, test at end."""
        cfg = self.config
        splits = []
        if cfg.bleu_every and (step % cfg.bleu_every == 0 or final):
            splits.append(("validation", "eval/bleu"))
        if final and cfg.test_bleu:
            splits.append(("test", "test/bleu"))
        scalars = {}
        for split, key in splits:
            sources, references = data.sources(split), data.references(split)
            if split == "validation" and cfg.bleu_examples > 0:
                sources, references = sources[:cfg.bleu_examples], references[:cfg.bleu_examples]
            hypotheses = self.translate(params, sources)
            scalars[key] = translate.bleu(hypotheses, references)
            log(f"{split} BLEU {scalars[key]:.2f} on {len(sources)} sentences "
                f"(beam {cfg.beam_size}, alpha {cfg.length_penalty})")
        return scalars

    def translate(self, params, sources: list[str], *, beam_size: int | None = None,
                  length_penalty: float | None = None) -> list[str]:
        """Detokenized translations of `sources` (beam search with the config's settings)."""
        cfg = self.config
        ids = [translate.encode_source(self.tokenizer, s, self.max_source_length)
               for s in sources]
        outputs = translate.translate_ids(
            self.model, params, ids,
            beam_size=cfg.beam_size if beam_size is None else beam_size,
            length_penalty=cfg.length_penalty if length_penalty is None else length_penalty,
            extra_length=cfg.extra_decode_length, max_length=cfg.max_decode_length,
            batch_size=cfg.decode_batch_size, bos_id=self.bos_id, eos_id=self.eos_id)
        return [self.tokenizer.decode(out) for out in outputs]

    def flops_per_example(self, params) -> float:
        """Training FLOPs of one full-length pair: 6 per weight per token it multiplies, plus
        attention scores and sums (PaLM appendix B's counting)."""
        size = lambda tree: sum(x.size for x in jax.tree.leaves(tree))  # noqa: E731
        s, t = self.max_source_length, self.max_target_length
        d, layers = self.model.d_model, self.model.num_layers
        head = d * self.model.vocab_size  # The output projection, once per target token.
        matmuls = 6 * (size(params["encoder"]) * s + (size(params["decoder"]) + head) * t)
        attention = 12 * layers * d * (s * s + t * t + t * s)
        return float(matmuls + attention)


def build(config: ml_collections.ConfigDict, data: Any) -> TranslationTask:
    return TranslationTask(config, data)
