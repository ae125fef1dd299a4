"""Optimizer and learning-rate schedule from `config.optim`."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
import optax

from jaxformer.train.transfer import with_freeze

SCHEDULES = ("cosine", "linear", "constant", "rsqrt")
OPTIMIZERS = ("adamw", "adam", "sgd")


def make_schedule(config: ml_collections.ConfigDict) -> optax.Schedule:
    """Linear warmup from 0, then `config.schedule` down to `config.min_lr`.

    `rsqrt` is the Transformer paper's d_model^-0.5 * min(step^-0.5, step * warmup^-1.5),
    with `config.lr` standing for d_model^-0.5 (times any scale factor).
    """
    peak, warmup, floor = config.lr, config.warmup_steps, config.min_lr
    if config.schedule == "rsqrt":
        def rsqrt(step):
            step = jnp.asarray(step, jnp.float32) + 1.0
            return peak * jnp.minimum(step**-0.5, step * max(warmup, 1) ** -1.5)
        return rsqrt
    decay_steps = max(config.decay_steps - warmup, 1)
    if config.schedule == "cosine":
        decay = optax.cosine_decay_schedule(peak, decay_steps, alpha=floor / peak if peak else 0.0)
    elif config.schedule == "linear":
        decay = optax.linear_schedule(peak, floor, decay_steps)
    elif config.schedule == "constant":
        decay = optax.constant_schedule(peak)
    else:
        raise ValueError(f"unknown schedule {config.schedule!r}; available: {', '.join(SCHEDULES)}")
    if warmup == 0:
        return decay
    return optax.join_schedules([optax.linear_schedule(0.0, peak, warmup), decay], [warmup])


def decay_mask(params):
    """Weight decay on matrices (and higher-rank kernels) only: not on biases, norms, scalars."""
    return jax.tree.map(lambda p: p.ndim >= 2, params)


def make_optimizer(config: ml_collections.ConfigDict, freeze: tuple[str, ...] = ()
                   ) -> optax.GradientTransformation:
    """Global-norm clipping followed by the configured optimizer with its schedule; the
    parameters matching `freeze` (see `train.transfer`) are left out of both."""
    schedule = make_schedule(config)
    if config.name == "adamw":
        opt = optax.adamw(schedule, b1=config.b1, b2=config.b2, eps=config.eps,
                          weight_decay=config.weight_decay, mask=decay_mask)
    elif config.name == "adam":
        opt = optax.adam(schedule, b1=config.b1, b2=config.b2, eps=config.eps)
    elif config.name == "sgd":
        opt = optax.sgd(schedule, momentum=config.b1 or None)
    else:
        raise ValueError(f"unknown optimizer {config.name!r}; available: {', '.join(OPTIMIZERS)}")
    if config.grad_clip > 0:
        opt = optax.chain(optax.clip_by_global_norm(config.grad_clip), opt)
    return with_freeze(opt, freeze)
