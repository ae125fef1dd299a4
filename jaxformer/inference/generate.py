"""Autoregressive decoding over the KV cache: sampling (temperature, top-k, top-p) and greedy.

`generate` prefills the whole prompt into the cache with one call, then runs a jitted
`lax.scan` of single-token steps. `greedy_by_recompute` recomputes the full sequence at every
step, without a cache: the reference that the cached path is checked against.

The model is any flax module called as `model.apply(variables, *context, tokens,
decode=True, method=method)` that keeps its decoding state in the 'cache' collection. The
`context` arrays condition every step: none for a decoder-only LM, `(encoded, inputs)` for
the translation Transformer's `decode` method, visual features for a captioning model.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
from flax import linen as nn

Params = Any
Cache = Any


def empty_cache(model: nn.Module, *args: Any, **kwargs: Any) -> Cache:
    """The zero 'cache' collection of `model.init(rng, *args, decode=True, **kwargs)`, whose
    inputs set the cache length (no parameters are computed)."""
    shapes = jax.eval_shape(
        lambda: model.init(jax.random.key(0), *args, decode=True, **kwargs)["cache"])
    return jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)


def init_cache(model: nn.Module, batch_size: int, max_len: int, *, context: tuple = (),
               method: str | None = None) -> Cache:
    """An empty cache for decoding up to `max_len` positions."""
    return empty_cache(model, *context, jnp.zeros((batch_size, max_len), jnp.int32),
                       method=method)


def decode_step(model: nn.Module, params: Params, cache: Cache, tokens: jax.Array, *,
                context: tuple = (), method: str | None = None) -> tuple[jax.Array, Cache]:
    """Runs `tokens` `[batch, len]` through the cache: float32 logits `[batch, len, vocab]`."""
    logits, variables = model.apply(
        {"params": params, "cache": cache}, *context, tokens, decode=True, mutable=["cache"],
        method=method)
    return logits, variables["cache"]


def top_k_filter(logits: jax.Array, k: int) -> jax.Array:
    """Keeps the `k` largest logits of each row (ties with the k-th included); others -inf."""
    if k < 1:
        raise ValueError(f"top_k must be >= 1, got {k}")
    k = min(k, logits.shape[-1])
    kth_largest = jax.lax.top_k(logits, k)[0][..., -1:]  # [..., 1]
    return jnp.where(logits < kth_largest, -jnp.inf, logits)


def top_p_filter(logits: jax.Array, p: float | jax.Array) -> jax.Array:
    """Nucleus filter: keeps the smallest set of most likely tokens whose probability is >= p.

    A token is kept when the probability of the tokens more likely than it is < p, so the
    most likely token always survives. Other logits become -inf.
    """
    sorted_logits = jnp.flip(jnp.sort(logits, axis=-1), axis=-1)  # [..., vocab], descending
    sorted_probs = jax.nn.softmax(sorted_logits, axis=-1)
    mass_before = jnp.cumsum(sorted_probs, axis=-1) - sorted_probs
    kept = jnp.where(mass_before < p, sorted_logits, jnp.inf)
    threshold = jnp.min(kept, axis=-1, keepdims=True)  # Smallest kept logit, [..., 1].
    return jnp.where(logits < threshold, -jnp.inf, logits)


def sample_logits(
    logits: jax.Array,
    rng: jax.Array | None,
    *,
    temperature: float | jax.Array = 1.0,
    top_k: int | None = None,
    top_p: float | jax.Array | None = None,
    greedy: bool = False,
) -> jax.Array:
    """Picks one token per row of `logits` `[batch, vocab]`: int32 `[batch]`."""
    if greedy:
        return jnp.argmax(logits, axis=-1).astype(jnp.int32)
    logits = logits.astype(jnp.float32) / temperature
    if top_k is not None:
        logits = top_k_filter(logits, top_k)
    if top_p is not None:
        logits = top_p_filter(logits, top_p)
    return jax.random.categorical(rng, logits, axis=-1).astype(jnp.int32)


def generate(
    model: nn.Module,
    params: Params,
    prompt: jax.Array,
    *,
    max_new_tokens: int,
    rng: jax.Array | None = None,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    greedy: bool = False,
    max_length: int,
    context: tuple = (),
    method: str | None = None,
) -> jax.Array:
    """Continues `prompt` int32 `[batch, prompt_len]` by `max_new_tokens` sampled tokens.

    Returns int32 `[batch, prompt_len + max_new_tokens]`. The same `rng` gives the same
    tokens; `greedy=True` takes the argmax (and needs no `rng`). `max_length` is the model's
    context (its positions); `context` and `method` condition the steps (module docstring).
    """
    prompt = jnp.asarray(prompt, jnp.int32)
    _check_lengths(prompt, max_new_tokens, max_length)
    if not greedy:
        if rng is None:
            raise ValueError("sampling needs an rng (or pass greedy=True)")
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        if top_p is not None and not 0 < top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {top_p}")
        if top_k is not None and top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {top_k}")
    if max_new_tokens == 0:
        return prompt
    if rng is None:
        rng = jax.random.key(0)  # Unused by greedy decoding.
    return _generate(model, params, prompt, rng, jnp.float32(temperature),
                     None if top_p is None else jnp.float32(top_p), tuple(context),
                     max_new_tokens=max_new_tokens, top_k=top_k, greedy=greedy, method=method)


@functools.partial(jax.jit,
                   static_argnames=("model", "max_new_tokens", "top_k", "greedy", "method"))
def _generate(model, params, prompt, rng, temperature, top_p, context, *, max_new_tokens, top_k,
              greedy, method):
    batch_size, prompt_len = prompt.shape
    sample = functools.partial(
        sample_logits, temperature=temperature, top_k=top_k, top_p=top_p, greedy=greedy)
    step_fn = functools.partial(decode_step, model, params, context=context, method=method)
    rngs = jax.random.split(rng, max_new_tokens)

    cache = init_cache(model, batch_size, prompt_len + max_new_tokens, context=context,
                       method=method)
    logits, cache = step_fn(cache, prompt)  # Prefill the whole prompt.
    first = sample(logits[:, -1], rngs[0])  # [batch]

    def step(carry, step_rng):
        cache, token = carry
        logits, cache = step_fn(cache, token[:, None])  # [batch, 1, vocab]
        token = sample(logits[:, -1], step_rng)
        return (cache, token), token

    _, rest = jax.lax.scan(step, (cache, first), rngs[1:])  # [max_new_tokens - 1, batch]
    return jnp.concatenate([prompt, first[:, None], rest.T], axis=1)


def greedy_by_recompute(
    model: nn.Module, params: Params, prompt: jax.Array, *, max_new_tokens: int, max_length: int
) -> jax.Array:
    """Greedy continuation of a decoder-only LM that reruns the model on the whole sequence
    at every step."""
    prompt = jnp.asarray(prompt, jnp.int32)
    _check_lengths(prompt, max_new_tokens, max_length)
    return _greedy_by_recompute(model, params, prompt, max_new_tokens=max_new_tokens)


@functools.partial(jax.jit, static_argnames=("model", "max_new_tokens"))
def _greedy_by_recompute(model, params, prompt, *, max_new_tokens):
    batch_size, prompt_len = prompt.shape
    total_len = prompt_len + max_new_tokens
    # A fixed-size buffer, filled left to right: under causal attention the logits at
    # position t - 1 depend only on tokens < t, not on the zeros after them.
    tokens = jnp.zeros((batch_size, total_len), jnp.int32).at[:, :prompt_len].set(prompt)

    def step(t, tokens):
        logits = model.apply({"params": params}, tokens)  # [batch, total_len, vocab]
        next_token = jnp.argmax(logits[:, t - 1], axis=-1).astype(jnp.int32)
        return tokens.at[:, t].set(next_token)

    return jax.lax.fori_loop(prompt_len, total_len, step, tokens)


def _check_lengths(prompt: jax.Array, max_new_tokens: int, max_length: int) -> None:
    if prompt.ndim != 2 or prompt.shape[1] < 1:
        raise ValueError(f"prompt must be int32 [batch, prompt_len >= 1], got {prompt.shape}")
    if max_new_tokens < 0:
        raise ValueError(f"max_new_tokens must be >= 0, got {max_new_tokens}")
    total_len = prompt.shape[1] + max_new_tokens
    if total_len > max_length:
        raise ValueError(
            f"prompt length {prompt.shape[1]} + max_new_tokens {max_new_tokens} = {total_len} "
            f"exceeds the model's context of {max_length} positions")
