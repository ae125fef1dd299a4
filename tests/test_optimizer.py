"""Schedules against nanoGPT's get_lr and the Transformer paper's formula; decay mask."""

import math

import jax.numpy as jnp
import ml_collections
import numpy as np

from jaxformer.train.optimizer import decay_mask, make_schedule


def optim(**kw):
    base = dict(name="adamw", lr=1e-3, min_lr=1e-4, schedule="cosine", warmup_steps=100,
                decay_steps=2000, b1=0.9, b2=0.99, eps=1e-8, weight_decay=0.1, grad_clip=1.0)
    return ml_collections.ConfigDict({**base, **kw})


def nanogpt_lr(it, lr=1e-3, min_lr=1e-4, warmup=100, decay=2000):
    if it < warmup:
        return lr * it / warmup
    if it > decay:
        return min_lr
    ratio = (it - warmup) / (decay - warmup)
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * ratio)) * (lr - min_lr)


def test_warmup_cosine_matches_reference():
    schedule = make_schedule(optim())
    for step in [0, 1, 50, 99, 100, 101, 500, 1000, 1999, 2000, 2500]:
        np.testing.assert_allclose(float(schedule(step)), nanogpt_lr(step), rtol=1e-5, atol=1e-9)


def test_rsqrt_is_the_transformer_paper_schedule():
    d_model, warmup = 512, 4000
    schedule = make_schedule(optim(schedule="rsqrt", lr=d_model**-0.5, warmup_steps=warmup))
    for step in [0, 1, 3999, 4000, 10000]:
        n = step + 1
        expected = d_model**-0.5 * min(n**-0.5, n * warmup**-1.5)
        np.testing.assert_allclose(float(schedule(jnp.asarray(step))), expected, rtol=1e-5)


def test_weight_decay_on_matrices_only():
    params = {"dense": {"kernel": jnp.ones((3, 4)), "bias": jnp.ones(4)},
              "norm": {"scale": jnp.ones(4)}, "embed": jnp.ones((10, 4))}
    mask = decay_mask(params)
    assert mask == {"dense": {"kernel": True, "bias": False}, "norm": {"scale": False},
                    "embed": True}
