"""Schedules against nanoGPT's get_lr and the Transformer paper's formula; decay mask;
per-parameter learning-rate factors against separate optimizers."""

import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from jaxformer.train.optimizer import decay_mask, make_optimizer, make_schedule


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


def _adamw_steps(tx, params, grads_list):
    state = tx.init(params)
    for grads in grads_list:
        updates, state = tx.update(grads, state, params)
        params = jax.tree.map(lambda p, u: p + u, params, updates)
    return params


def test_lr_mults_equal_a_parameter_group_of_its_own():
    """A backbone at 0.1x equals AdamW with a tenth of the schedule on that subtree (PyTorch
    parameter groups), weight decay included; frozen parameters stay put."""
    rng = np.random.default_rng(0)
    params = {"backbone": {"kernel": jnp.asarray(rng.normal(size=(3, 4)), jnp.float32),
                           "bn": {"scale": jnp.ones((4,))}},
              "head": {"kernel": jnp.asarray(rng.normal(size=(4, 2)), jnp.float32)}}
    grads = [jax.tree.map(lambda p: jnp.asarray(rng.normal(size=p.shape), jnp.float32), params)
             for _ in range(3)]
    config = optim(grad_clip=0.0, warmup_steps=1, lr_mults=(("backbone/.*", 0.1),))
    got = _adamw_steps(make_optimizer(config, freeze=("backbone/bn/.*",)), params, grads)

    def adamw(scale):
        schedule = make_schedule(optim(warmup_steps=1))
        return optax.adamw(lambda step: scale * schedule(step), b1=0.9, b2=0.99, eps=1e-8,
                           weight_decay=0.1, mask=decay_mask)

    reference = optax.multi_transform(
        {"backbone": adamw(0.1), "head": adamw(1.0), "frozen": optax.set_to_zero()},
        {"backbone": {"kernel": "backbone", "bn": {"scale": "frozen"}},
         "head": {"kernel": "head"}})
    expected = _adamw_steps(reference, params, grads)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7), got,
                 expected)
    assert not np.allclose(got["backbone"]["kernel"], params["backbone"]["kernel"])
    np.testing.assert_array_equal(got["backbone"]["bn"]["scale"], 1.0)


def test_lr_mults_pattern_that_matches_nothing_is_an_error():
    config = optim(lr_mults=(("encoder/.*", 0.1),))
    with pytest.raises(ValueError, match="lr_mults pattern 'encoder/.\\*' matches no"):
        make_optimizer(config).init({"head": {"kernel": jnp.zeros((2, 2))}})


def test_step_schedule_drops_to_min_lr_at_decay_steps():
    schedule = make_schedule(optim(schedule="step", lr=1e-4, min_lr=1e-5, warmup_steps=10,
                                   decay_steps=200))
    values = [float(schedule(s)) for s in (0, 5, 10, 199, 200, 500)]
    np.testing.assert_allclose(values, [0.0, 5e-5, 1e-4, 1e-4, 1e-5, 1e-5], rtol=1e-6)
