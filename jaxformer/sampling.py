"""Text generation from a trained language-model workdir (`jaxformer sample`)."""

from __future__ import annotations

import json
import os
from types import SimpleNamespace
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections

from jaxformer import decode, registry
from jaxformer.data.tokenizers import load_tokenizer
from jaxformer.train.checkpoint import Checkpointer
from jaxformer.train.optimizer import make_optimizer
from jaxformer.train.state import TrainState, create_state

TOKENIZER_FILES = ("tokenizer.model", "tokenizer.json")


def load_config(workdir: str) -> ml_collections.ConfigDict:
    """The config a workdir was trained with (its config.json)."""
    config_path = os.path.join(workdir, "config.json")
    if not os.path.isfile(config_path):
        raise FileNotFoundError(f"{workdir} is not a training workdir: no config.json")
    with open(config_path, encoding="utf-8") as f:
        return ml_collections.ConfigDict(json.load(f))


def load_workdir(workdir: str, *, average_last: int = 0):
    """(config, task, params) of the newest readable checkpoint in `workdir`.

    With `average_last > 1`, the params are the mean of the newest `average_last` checkpoints.
    """
    config = load_config(workdir)
    assets = os.path.join(workdir, "assets")
    paths = [os.path.join(assets, name) for name in TOKENIZER_FILES]
    existing = [p for p in paths if os.path.isfile(p)]
    if not existing:
        raise FileNotFoundError(
            f"no tokenizer in {assets} (looked for {', '.join(TOKENIZER_FILES)})")
    tokenizer = load_tokenizer(existing[0])
    data = SimpleNamespace(tokenizer=tokenizer, vocab_size=tokenizer.vocab_size)
    task = registry.lookup("tasks", config.task.name).build(config, data)
    if average_last > 1:
        return config, task, average_params(workdir, config, task, average_last)
    return config, task, restore_state(workdir, config, task).params


def _abstract_state(config: ml_collections.ConfigDict, task: Any) -> TrainState:
    tx = make_optimizer(config.optim)
    device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=device),
                        jax.eval_shape(lambda: create_state(task, tx, config.seed)))


def average_params(workdir: str, config: ml_collections.ConfigDict, task: Any, last: int):
    """The mean parameters of the newest `last` checkpoints, on the first device."""
    checkpointer = Checkpointer(workdir, keep=config.train.keep_checkpoints, async_save=False)
    try:
        params, _ = checkpointer.average_params(_abstract_state(config, task), last)
    finally:
        checkpointer.close()
    return params


def restore_state(workdir: str, config: ml_collections.ConfigDict, task: Any) -> TrainState:
    """The newest readable checkpoint's train state, on the first device."""
    checkpointer = Checkpointer(workdir, keep=config.train.keep_checkpoints, async_save=False)
    state = checkpointer.restore(_abstract_state(config, task))
    checkpointer.close()
    if state is None:
        raise FileNotFoundError(f"no checkpoint in {workdir}/checkpoints: train first")
    return state


def sample_from_workdir(workdir: str, *, prompt: str | None = None,
                        max_new_tokens: int | None = None, temperature: float | None = None,
                        top_k: int | None = None, top_p: float | None = None,
                        num_samples: int = 1, greedy: bool = False, seed: int = 0) -> list[str]:
    """Continues `prompt` with the trained model; unset options come from `config.sample`."""
    config, task, params = load_workdir(workdir)
    defaults = config.sample
    prompt = defaults.prompt if prompt is None else prompt
    max_new_tokens = defaults.max_new_tokens if max_new_tokens is None else max_new_tokens
    ids = task.tokenizer.encode(prompt)
    if not ids:
        raise ValueError("the prompt encodes to no tokens; give a non-empty --prompt")
    options = dict(
        temperature=defaults.temperature if temperature is None else temperature,
        top_k=(defaults.top_k if top_k is None else top_k) or None,
        top_p=defaults.top_p if top_p is None else top_p, greedy=greedy)
    # Past the context length, keep the newest half window and continue from there: one
    # prefill per half window instead of a full recomputation per token.
    window, keep = task.block_size, task.block_size // 2
    sequence = jnp.asarray([ids] * num_samples, jnp.int32)
    total = len(ids) + max_new_tokens
    rng = jax.random.key(seed)
    while sequence.shape[1] < total:
        context = sequence if sequence.shape[1] < window else sequence[:, -keep:]
        steps = min(total - sequence.shape[1], window - context.shape[1])
        rng, step_rng = jax.random.split(rng)
        out = decode.generate(task.model, params, context, max_new_tokens=steps, rng=step_rng,
                              **options)
        sequence = jnp.concatenate([sequence, out[:, context.shape[1]:]], axis=1)
    return [task.tokenizer.decode([int(t) for t in row]) for row in jax.device_get(sequence)]
