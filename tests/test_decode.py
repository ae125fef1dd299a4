"""KV-cache decoding: greedy with the cache == greedy by recomputation; sampling filters."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from jaxformer import decode
from jaxformer.models import gpt


@pytest.fixture(scope="module")
def model_and_params():
    config = ml_collections.ConfigDict(dict(
        name="gpt", variant="", num_layers=2, num_heads=4, d_model=64, mlp_ratio=4,
        dropout_rate=0.0))
    model = gpt.build(config, vocab_size=37, block_size=32, dtype=jnp.float32, remat=False)
    params = model.init(jax.random.key(0), jnp.zeros((1, 32), jnp.int32))["params"]
    # Sharpen the random model so greedy choices are not near-ties.
    params = jax.tree.map(lambda x: x * 3.0 if x.ndim == 2 else x, params)
    return model, params


@pytest.mark.parametrize("prompt_len", [1, 5, 12])
def test_cached_greedy_equals_recompute(model_and_params, prompt_len):
    model, params = model_and_params
    prompt = jax.random.randint(jax.random.key(prompt_len), (3, prompt_len), 0, 37)
    new = 32 - prompt_len
    cached = decode.generate(model, params, prompt, max_new_tokens=new, greedy=True)
    reference = decode.greedy_by_recompute(model, params, prompt, max_new_tokens=new)
    assert cached.shape == (3, 32)
    np.testing.assert_array_equal(cached, reference)
    np.testing.assert_array_equal(cached[:, :prompt_len], prompt)


def test_too_long_is_an_error(model_and_params):
    model, params = model_and_params
    with pytest.raises(ValueError, match="block_size"):
        decode.generate(model, params, jnp.zeros((1, 30), jnp.int32), max_new_tokens=5)


def test_top_k_filter_keeps_k_largest():
    logits = jnp.array([[1.0, 4.0, 2.0, 3.0]])
    filtered = decode.top_k_filter(logits, 2)
    assert np.isfinite(filtered).tolist() == [[False, True, False, True]]
    np.testing.assert_array_equal(filtered[0, [1, 3]], [4.0, 3.0])


def test_top_p_filter_keeps_smallest_nucleus():
    probs = np.array([0.5, 0.3, 0.15, 0.05])
    logits = jnp.log(jnp.asarray(probs))[None]
    # Cumulative 0.5, 0.8, 0.95: p=0.75 needs the first two tokens, p=0.9 the first three.
    assert np.isfinite(decode.top_p_filter(logits, 0.75)).tolist() == [[True, True, False, False]]
    assert np.isfinite(decode.top_p_filter(logits, 0.9)).tolist() == [[True, True, True, False]]


def test_sampling_is_deterministic_for_a_seed(model_and_params):
    model, params = model_and_params
    prompt = jnp.ones((2, 3), jnp.int32)
    kw = dict(max_new_tokens=10, temperature=1.0, top_k=10, top_p=0.9)
    a = decode.generate(model, params, prompt, rng=jax.random.key(7), **kw)
    b = decode.generate(model, params, prompt, rng=jax.random.key(7), **kw)
    c = decode.generate(model, params, prompt, rng=jax.random.key(8), **kw)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_near_zero_temperature_is_greedy(model_and_params):
    model, params = model_and_params
    prompt = jnp.ones((2, 3), jnp.int32)
    cold = decode.generate(model, params, prompt, max_new_tokens=10, rng=jax.random.key(0),
                           temperature=1e-6)
    greedy = decode.generate(model, params, prompt, max_new_tokens=10, greedy=True)
    np.testing.assert_array_equal(cold, greedy)
