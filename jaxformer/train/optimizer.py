"""Optimizer and learning-rate schedule from `config.optim`."""

from __future__ import annotations

import re
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import ml_collections
import optax

from jaxformer.train.transfer import flat_paths, unflatten_paths, with_freeze

SCHEDULES = ("cosine", "linear", "constant", "step", "rsqrt")
OPTIMIZERS = ("adamw", "adam", "sgd")


def make_schedule(config: ml_collections.ConfigDict) -> optax.Schedule:
    """Linear warmup from 0, then `config.schedule` down to `config.min_lr` (`step`: the peak
until `decay_steps`, `min_lr` after, DETR's learning-rate drop).

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
    elif config.schedule == "step":
        decay = optax.piecewise_constant_schedule(peak, {decay_steps: floor / peak if peak
                                                         else 0.0})
    else:
        raise ValueError(f"unknown schedule {config.schedule!r}; available: {', '.join(SCHEDULES)}")
    if warmup == 0:
        return decay
    return optax.join_schedules([optax.linear_schedule(0.0, peak, warmup), decay], [warmup])


def decay_mask(params):
    """Weight decay on matrices (and higher-rank kernels) only: not on biases, norms, scalars."""
    return jax.tree.map(lambda p: p.ndim >= 2, params)


def scale_matching(multipliers: Sequence[tuple[str, float]]) -> optax.GradientTransformation:
    """Multiplies the update of each parameter whose path fully matches a pattern by that
    pattern's factor (the first that matches): its own learning rate, weight decay included,
    as a PyTorch parameter group's (DETR trains its backbone at 0.1x)."""
    compiled = [(re.compile(pattern), float(factor)) for pattern, factor in multipliers]

    def factors(tree):
        return unflatten_paths({path: next((f for c, f in compiled if c.fullmatch(path)), 1.0)
                                for path in flat_paths(tree)})

    def init(params):
        paths = list(flat_paths(params))
        for pattern, _ in compiled:
            if not any(pattern.fullmatch(p) for p in paths):
                raise ValueError(f"optim.lr_mults pattern {pattern.pattern!r} matches no "
                                 f"parameter; parameters look like {paths[0]!r}")
        return optax.EmptyState()

    def update(updates, state, params=None):
        del params
        return jax.tree.map(lambda u, f: u * f, updates, factors(updates)), state

    return optax.GradientTransformation(init, update)


def make_optimizer(config: ml_collections.ConfigDict, freeze: tuple[str, ...] = ()
                   ) -> optax.GradientTransformation:
    """Global-norm clipping followed by the configured optimizer with its schedule; the
    parameters matching `freeze` (see `train.transfer`) are left out of both, and
    `config.lr_mults` ((pattern, factor) pairs) scales the updates of the parameters
    matching a pattern."""
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
    opt = with_freeze(opt, freeze)
    multipliers = tuple(config.get("lr_mults", ()))
    return optax.chain(opt, scale_matching(multipliers)) if multipliers else opt
