"""What the two-tower evaluators (zero-shot, retrieval, linear probe) share: embedding a whole
eval split, or a list of texts, with the task's towers.

These run on the host's first device, in batches, and every process computes the same
result: the splits they read are small (held-out classes, a retrieval set, a probe's
features), and retrieval and the probe need all of a split's embeddings at once.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import numpy as np

from jaxformer.evaluators.base import Context

TEXT_BATCH = 256


def host_params(context: Context, params: Any) -> Any:
    """`params` as placed for training -> one copy (pmap keeps one per device)."""
    return context.strategy.host_state(params)


def embed_images(context: Context, params: Any, split: str,
                 num_batches: int = -1) -> tuple[np.ndarray, np.ndarray]:
    """(float32 `[N, D]` image embeddings, int `[N]` labels) of the real rows of `split`, in
    the split's order."""
    encode = jax.jit(context.task.encode_images)
    embeddings, labels = [], []
    for batch in context.data.eval_iter(batch_size=context.batch_size, num_batches=num_batches,
                                        split=split, process_index=0, process_count=1):
        real = np.asarray(batch["label"]) >= 0
        embeddings.append(np.asarray(encode(params, batch["image"]))[real])
        labels.append(np.asarray(batch["label"])[real])
    if not embeddings:
        raise ValueError(f"the {split} split has no eval batches")
    return np.concatenate(embeddings), np.concatenate(labels)


def embed_texts(context: Context, params: Any, texts: Sequence[str]) -> np.ndarray:
    """float32 `[len(texts), D]` text embeddings."""
    encode = jax.jit(context.task.encode_texts)
    tokens = context.data.tokenize(list(texts))
    parts = []
    for start in range(0, len(tokens), TEXT_BATCH):
        chunk = tokens[start:start + TEXT_BATCH]
        padded = np.zeros((TEXT_BATCH, chunk.shape[1]), chunk.dtype)  # One compiled shape.
        padded[:len(chunk)] = chunk
        parts.append(np.asarray(encode(params, padded))[:len(chunk)])
    return np.concatenate(parts)


def class_embeddings(context: Context, params: Any, class_names: Sequence[str],
                     templates: Sequence[str]) -> np.ndarray:
    """float32 `[classes, D]`: for each class the mean of its normalised prompt embeddings
    over `templates` (each with "{}" for the name), normalised again (CLIP's prompt
    ensembling)."""
    prompts = [template.format(name) for name in class_names for template in templates]
    embeddings = embed_texts(context, params, prompts).reshape(
        len(class_names), len(templates), -1).mean(axis=1)
    return embeddings / np.linalg.norm(embeddings, axis=-1, keepdims=True).clip(1e-12)
