"""Decoding with a trained encoder-decoder: batched beam search, detokenization, BLEU.

Sources are sorted by length and decoded in batches, each padded to a multiple of
`LENGTH_STEP` positions (so only a few shapes compile) and split over the local devices. A
batch decodes up to `source length + extra_length` tokens, capped at `max_length` (the
paper's "input length + 50").
"""

from __future__ import annotations

import functools
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import sacrebleu
from flax import linen as nn
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from jaxformer.inference import beam_search
from jaxformer.inference.generate import empty_cache

LENGTH_STEP = 16


def init_cache(model: nn.Module, encoded: jax.Array, inputs: jax.Array, max_len: int) -> Any:
    """An empty self-attention KV cache of the model's `decode` method for `max_len` target
    positions of the given sources.

    The cross-attention projection of `encoded` is not cached: a decoding loop closes over
    `encoded`, so XLA hoists the projection out of the loop.
    """
    tokens = jnp.zeros((encoded.shape[0], max_len), jnp.int32)
    return empty_cache(model, encoded, inputs, tokens, method="decode")


def strip_eos(ids: np.ndarray, eos_id: int) -> list[int]:
    """The tokens before the first EOS (or all of them)."""
    ids = [int(i) for i in ids]
    return ids[:ids.index(eos_id)] if eos_id in ids else ids


def _local_search(model: nn.Module, params: Any, inputs: jax.Array, *, beam_size: int,
                  length_penalty: float, max_length: int, bos_id: int, eos_id: int) -> jax.Array:
    """Best beam of each source: int32 `[batch, max_length]`, 0 after EOS."""
    batch = inputs.shape[0]
    encoded = model.apply({"params": params}, inputs, method="encode")
    encoded, inputs = beam_search.tile_beams((encoded, inputs), beam_size)
    cache = init_cache(model, encoded, inputs, max_length)

    def logits_fn(tokens, cache):
        logits, variables = model.apply(
            {"params": params, "cache": cache}, encoded, inputs, tokens, decode=True,
            mutable=["cache"], method="decode")
        return logits[:, -1], variables["cache"]

    sequences, _ = beam_search.beam_search(
        logits_fn, cache, batch_size=batch, beam_size=beam_size, max_len=max_length,
        bos_id=bos_id, eos_id=eos_id, alpha=length_penalty)
    return sequences[:, 0]


@functools.partial(jax.jit, static_argnames=(
    "model", "mesh", "beam_size", "length_penalty", "max_length", "bos_id", "eos_id"))
def _search(model: nn.Module, params: Any, inputs: jax.Array, *, mesh: Mesh, **options
            ) -> jax.Array:
    """`_local_search` on each device's rows: sources are independent, so the devices never
    communicate (an automatically partitioned search would exchange caches every step)."""
    search = functools.partial(_local_search, model, **options)
    return jax.shard_map(search, mesh=mesh, in_specs=(PartitionSpec(), PartitionSpec("data")),
                         out_specs=PartitionSpec("data"), check_vma=False)(params, inputs)


def translate_ids(
    model: nn.Module, params: Any, sources: list[list[int]], *, beam_size: int,
    length_penalty: float, extra_length: int, max_length: int, batch_size: int, bos_id: int,
    eos_id: int,
) -> list[list[int]]:
    """Target ids (without EOS) of each source id list, in the order given."""
    devices = jax.local_devices()
    mesh = Mesh(np.array(devices), ("data",))
    rows = math.ceil(batch_size / len(devices)) * len(devices)
    params = jax.device_put(jax.device_get(params), NamedSharding(mesh, PartitionSpec()))
    order = sorted(range(len(sources)), key=lambda i: len(sources[i]))
    outputs: list[list[int]] = [[] for _ in sources]
    for start in range(0, len(order), rows):
        chunk = order[start:start + rows]
        longest = max(len(sources[i]) for i in chunk)
        width = min(math.ceil(longest / LENGTH_STEP) * LENGTH_STEP, model.max_len)
        if longest > width:
            raise ValueError(f"a source has {longest} tokens, more than the model's "
                             f"{model.max_len} positions")
        inputs = np.zeros((rows, width), np.int32)  # Unused rows stay all padding.
        for row, i in enumerate(chunk):
            inputs[row, :len(sources[i])] = sources[i]
        inputs = jax.device_put(inputs, NamedSharding(mesh, PartitionSpec("data")))
        decode_length = min(width + extra_length, max_length, model.max_len)
        best = np.asarray(_search(
            model, params, inputs, mesh=mesh, beam_size=beam_size, length_penalty=length_penalty,
            max_length=decode_length, bos_id=bos_id, eos_id=eos_id))
        for row, i in enumerate(chunk):
            outputs[i] = strip_eos(best[row], eos_id)
    return outputs


def bleu(hypotheses: list[str], references: list[str]) -> float:
    """Corpus BLEU (sacreBLEU's defaults: 13a tokenization, exact match of case)."""
    if len(hypotheses) != len(references):
        raise ValueError(f"{len(hypotheses)} hypotheses for {len(references)} references")
    return float(sacrebleu.corpus_bleu(hypotheses, [references]).score)


def translate_texts(task: Any, params: Any, sources: list[str], *, beam_size: int,
                    length_penalty: float, extra_length: int, batch_size: int) -> list[str]:
    """Detokenized translations of `sources` by a translation task's model (empty lines stay
    empty), in the order given."""
    todo = [i for i, line in enumerate(sources) if line.strip()]
    outputs = translate_ids(
        task.model, params, [task.encode_source(sources[i]) for i in todo],
        beam_size=beam_size, length_penalty=length_penalty, extra_length=extra_length,
        max_length=task.max_decode_length, batch_size=batch_size, bos_id=task.bos_id,
        eos_id=task.eos_id)
    translations = [""] * len(sources)
    for i, ids in zip(todo, outputs):
        translations[i] = task.tokenizer.decode(ids)
    return translations
