"""Text continuation with a trained language model, past its context if need be."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from jaxformer.inference.generate import generate


def continue_text(task: Any, params: Any, prompt: str, *, max_new_tokens: int,
                  num_samples: int = 1, seed: int = 0, **options: Any) -> list[str]:
    """`num_samples` continuations of `prompt` by `max_new_tokens` tokens (`options`: the
    sampling settings of `generate`).

    Past the context length the newest half window is kept and decoding continues from there:
    one prefill per half window instead of a full recomputation per token.
    """
    ids = task.tokenizer.encode(prompt)
    if not ids:
        raise ValueError("the prompt encodes to no tokens; give a non-empty --prompt")
    window = task.block_size
    keep = window // 2
    sequence = jnp.asarray([ids] * num_samples, jnp.int32)
    total = sequence.shape[1] + max_new_tokens
    rng = jax.random.key(seed)
    while sequence.shape[1] < total:
        context = sequence if sequence.shape[1] < window else sequence[:, -keep:]
        steps = min(total - sequence.shape[1], window - context.shape[1])
        rng, step_rng = jax.random.split(rng)
        out = generate(task.model, params, context, max_new_tokens=steps, rng=step_rng,
                       max_length=window, **options)
        sequence = jnp.concatenate([sequence, out[:, context.shape[1]:]], axis=1)
    return [task.tokenizer.decode([int(t) for t in row]) for row in jax.device_get(sequence)]
