"""Beam search and greedy decoding over a KV cache, for any model.

The translation Transformer (Vaswani et al., 2017) decodes with beam 4 and length penalty
alpha 0.6. The model is seen only through a one-position decoder

    logits_fn(tokens int32 [batch * beam, 1], cache)
        -> (logits float32 [batch * beam, vocab], new cache)

that closes over its parameters (and, for an encoder-decoder, the encoder outputs, tiled with
`tile_beams`). The cache is any pytree: leaves with ndim >= 1 carry the `batch * beam` rows as
their leading dimension (row `b * beam + k` is beam `k` of example `b`) and are reordered with
the beams after every step; scalar leaves (e.g. `cache_index`) are shared by all rows. Caches
whose leading axis is not the batch (`nn.scan`-stacked layers) must be transposed first.

The search follows tensor2tensor / flax's wmt example / t5x, with K = `beam_size`:
  * the state holds K alive hypotheses (no EOS yet) with their log-probs, and the K best
    finished hypotheses (ended by EOS) with their scores, -inf marking an empty slot;
  * each step extends every alive hypothesis by every token and takes the top 2K of the K * V
    candidates. At most K of them end in EOS (one per alive hypothesis), so the best K others
    become the new alive set. EOS candidates ranked in the top K join the finished set, which
    keeps its best K. Those ranked K+1..2K are dropped, as in fairseq and Hugging Face (flax's
    wmt example keeps them): one beam with alpha 0 is then exactly greedy decoding. (With
    alpha > 0 one beam goes on after greedy's EOS while a longer hypothesis may score higher.)
  * the loop stops after `max_len` tokens, or once no alive hypothesis can still beat the worst
    finished one: log-probs only decrease as a hypothesis grows, so an alive log-prob L < 0
    scores at most L / max_n lp(n) over its possible final lengths n (for alpha >= 0,
    lp(max_len)). With K at least the number of possible sequences nothing is pruned, and
    the best hypothesis is the exact argmax of the score over finished sequences.

Scores are log P(y) / lp(|y|) with the GNMT length penalty lp(n) = ((5 + n) / 6) ** alpha
(Wu et al., 2016), n counting the generated tokens including EOS (not BOS): the convention of
tensor2tensor and flax's wmt example (`brevity_penalty(alpha, cur_index + 1)`). A row with no
finished hypothesis at the end returns its alive ones, scored at their length (no EOS).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

Cache = Any
LogitsFn = Callable[[jax.Array, Cache], tuple[jax.Array, Cache]]

PAD_ID = 0


def tile_beams(tree: Any, beam_size: int) -> Any:
    """Repeats every array leaf with ndim >= 1 `beam_size` times: `[B, ...] -> [B * beam, ...]`.

    Row `b * beam_size + k` is a copy of row `b`; scalar leaves are returned unchanged.
    """
    return jax.tree.map(
        lambda x: jnp.repeat(x, beam_size, axis=0) if jnp.ndim(x) else x, tree)


def length_penalty(length: jax.Array | int, alpha: float | jax.Array) -> jax.Array:
    """GNMT length penalty ((5 + length) / 6) ** alpha, float32."""
    return ((5.0 + jnp.asarray(length, jnp.float32)) / 6.0) ** alpha


def _gather_rows(cache: Cache, rows: jax.Array) -> Cache:
    """Takes rows `rows` int32 `[B * beam]` of every leaf with ndim >= 1."""
    return jax.tree.map(lambda x: jnp.take(x, rows, axis=0) if jnp.ndim(x) else x, cache)


def beam_search(
    logits_fn: LogitsFn,
    cache: Cache,
    *,
    batch_size: int,
    beam_size: int,
    max_len: int,
    bos_id: int,
    eos_id: int,
    alpha: float = 0.6,
    min_len: int = 0,
) -> tuple[jax.Array, jax.Array]:
    """The `beam_size` best hypotheses of each example, best first.

    Args:
      logits_fn: one decoding step, see the module docstring; first called with `bos_id`.
      cache: its state, with leading dimension `batch_size * beam_size` (see `tile_beams`).
      batch_size, beam_size, max_len: static sizes; at most `max_len` tokens are generated.
      bos_id: the first input token. eos_id: the token that ends a hypothesis.
      alpha: length penalty exponent (0: plain log-prob).
      min_len: EOS is forbidden until this many tokens precede it.

    Returns:
      sequences int32 `[batch, beam, max_len]` (no BOS; EOS included; 0 after it) and scores
      float32 `[batch, beam]` (log-prob / length penalty, descending). Finished slots left
      empty (fewer than `beam` hypotheses finished) have score -inf and all-0 tokens.
    """
    if beam_size < 1 or max_len < 1:
        raise ValueError(f"beam_size and max_len must be >= 1, got {beam_size}, {max_len}")
    B, K = batch_size, beam_size
    neg_inf = jnp.float32(-jnp.inf)
    row_offset = (jnp.arange(B) * K)[:, None]  # [B, 1]

    def cond(state):
        i, _, alive_logp, _, finished_scores, _, _ = state
        # A row is done when its worst finished score (-inf until K have finished) is no lower
        # than the best score an alive hypothesis could still reach (alive_logp <= 0).
        best_alive = alive_logp[:, 0] / jnp.maximum(
            length_penalty(i + 1, alpha), length_penalty(max_len, alpha))
        return (i < max_len) & ~jnp.all(finished_scores[:, -1] >= best_alive)

    def body(state):
        i, alive_seqs, alive_logp, finished_seqs, finished_scores, tokens, cache = state
        logits, cache = logits_fn(tokens.reshape(B * K, 1), cache)
        logp = jax.nn.log_softmax(logits.astype(jnp.float32).reshape(B, K, -1))  # [B, K, V]
        vocab = logp.shape[-1]
        logp = logp.at[..., eos_id].set(jnp.where(i < min_len, neg_inf, logp[..., eos_id]))

        # The 2K best extensions: [B, 2K] log-probs, source beams and tokens.
        candidates = (alive_logp[..., None] + logp).reshape(B, K * vocab)
        top_logp, top_index = jax.lax.top_k(candidates, min(2 * K, K * vocab))
        top_beam, top_token = top_index // vocab, top_index % vocab
        top_seqs = jnp.take_along_axis(alive_seqs, top_beam[..., None], axis=1)
        top_seqs = top_seqs.at[:, :, i].set(top_token)  # [B, 2K, max_len]
        top_eos = top_token == eos_id

        # Alive: the K best candidates that do not end in EOS.
        alive_logp, keep = jax.lax.top_k(jnp.where(top_eos, neg_inf, top_logp), K)
        alive_seqs = jnp.take_along_axis(top_seqs, keep[..., None], axis=1)
        tokens = jnp.take_along_axis(top_token, keep, axis=1)
        source_rows = row_offset + jnp.take_along_axis(top_beam, keep, axis=1)
        cache = _gather_rows(cache, source_rows.reshape(B * K))

        # Finished: the K best of the old ones and the EOS candidates ranked in the top K. (A
        # mask, not a slice `[:, :K]`: XLA would fold that slice into the first top-k, which
        # then compiles to a full sort of the K * V candidates, ~100x slower on XLA:CPU.)
        new_scores = jnp.where(top_eos & (jnp.arange(top_eos.shape[1]) < K),
                               top_logp / length_penalty(i + 1, alpha), neg_inf)
        finished_scores, keep = jax.lax.top_k(
            jnp.concatenate([finished_scores, new_scores], axis=1), K)
        finished_seqs = jnp.take_along_axis(
            jnp.concatenate([finished_seqs, top_seqs], axis=1), keep[..., None], axis=1)
        return i + 1, alive_seqs, alive_logp, finished_seqs, finished_scores, tokens, cache

    empty_seqs = jnp.full((B, K, max_len), PAD_ID, jnp.int32)
    alive_logp = jnp.full((B, K), neg_inf).at[:, 0].set(0.0)  # One live hypothesis: BOS.
    state = (jnp.int32(0), empty_seqs, alive_logp, empty_seqs, jnp.full((B, K), neg_inf),
             jnp.full((B, K), bos_id, jnp.int32), cache)
    i, alive_seqs, alive_logp, finished_seqs, finished_scores, _, _ = jax.lax.while_loop(
        cond, body, state)

    has_finished = finished_scores[:, 0] > neg_inf  # [B]
    alive_scores = alive_logp / length_penalty(i, alpha)
    sequences = jnp.where(has_finished[:, None, None], finished_seqs, alive_seqs)
    scores = jnp.where(has_finished[:, None], finished_scores, alive_scores)
    return sequences, scores


def greedy_search(
    logits_fn: LogitsFn,
    cache: Cache,
    *,
    batch_size: int,
    max_len: int,
    bos_id: int,
    eos_id: int,
) -> jax.Array:
    """Argmax decoding until EOS: int32 `[batch, max_len]`, 0 after EOS.

    `logits_fn` and `cache` are as for `beam_search` with one beam (`batch_size` rows).
    """
    if max_len < 1:
        raise ValueError(f"max_len must be >= 1, got {max_len}")

    def cond(state):
        i, _, finished, _, _ = state
        return (i < max_len) & ~jnp.all(finished)

    def body(state):
        i, sequences, finished, tokens, cache = state
        logits, cache = logits_fn(tokens[:, None], cache)
        # Argmax of the log-probs (not the logits), so as to break ties as beam search does.
        logp = jax.nn.log_softmax(logits.astype(jnp.float32).reshape(batch_size, -1))
        tokens = jnp.argmax(logp, axis=-1).astype(jnp.int32)
        sequences = sequences.at[:, i].set(jnp.where(finished, PAD_ID, tokens))
        return i + 1, sequences, finished | (tokens == eos_id), tokens, cache

    state = (jnp.int32(0), jnp.full((batch_size, max_len), PAD_ID, jnp.int32),
             jnp.zeros(batch_size, jnp.bool_), jnp.full(batch_size, bos_id, jnp.int32), cache)
    return jax.lax.while_loop(cond, body, state)[1]
