"""KV-cache decoding against full recomputation; sampling filters and determinism."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxformer.inference import generate as decode
from jaxformer.models.gpt import GPT, VARIANTS

VOCAB, BLOCK = 67, 24
NEG_INF = -np.inf


def generate(model, params, prompt, **options):
    return decode.generate(model, params, prompt, max_length=BLOCK, **options)


def recompute(model, params, prompt, **options):
    return decode.greedy_by_recompute(model, params, prompt, max_length=BLOCK, **options)


@pytest.fixture(scope="module")
def model_and_params():
    model = GPT(vocab_size=VOCAB, block_size=BLOCK, **VARIANTS["tiny"])
    params = jax.jit(model.init)(jax.random.key(0), jnp.zeros((1, BLOCK), jnp.int32))["params"]
    # Sharper than the GPT-2 init, so that greedy continuations vary instead of repeating.
    return model, jax.tree.map(lambda a: 5.0 * a, params)


def _prompt(seed, batch, length):
    return np.random.default_rng(seed).integers(0, VOCAB, (batch, length)).astype(np.int32)


@pytest.mark.parametrize("prefill", [1, 5])
def test_cached_logits_match_full_forward(model_and_params, prefill):
    model, params = model_and_params
    tokens = _prompt(0, 3, 10)
    expected = jax.jit(model.apply)({"params": params}, tokens)
    cache = decode.init_cache(model, batch_size=3, max_len=10)
    step = jax.jit(functools.partial(decode.decode_step, model))
    logits, cache = step(params, cache, tokens[:, :prefill])
    outputs = [logits]
    for t in range(prefill, 10):
        logits, cache = step(params, cache, tokens[:, t:t + 1])
        outputs.append(logits)
    np.testing.assert_allclose(np.concatenate(outputs, axis=1), expected, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("prompt_len,max_new_tokens", [(1, 12), (4, 16), (9, 15)])
def test_cached_greedy_equals_greedy_by_recompute(model_and_params, prompt_len, max_new_tokens):
    model, params = model_and_params
    prompt = _prompt(prompt_len, 3, prompt_len)
    cached = np.asarray(generate(model, params, prompt, max_new_tokens=max_new_tokens,
                                        greedy=True))
    reference = np.asarray(recompute(model, params, prompt,
                                                      max_new_tokens=max_new_tokens))
    assert cached.shape == (3, prompt_len + max_new_tokens) and cached.dtype == np.int32
    np.testing.assert_array_equal(cached[:, :prompt_len], prompt)
    np.testing.assert_array_equal(cached, reference)
    assert all(len(set(row[prompt_len:])) > 2 for row in cached)  # Not a constant run.


def test_top_k_filter():
    logits = jnp.array([[1.0, 5.0, 3.0, 2.0], [0.0, -1.0, 4.0, 4.0]])
    np.testing.assert_array_equal(
        decode.top_k_filter(logits, 2), [[NEG_INF, 5, 3, NEG_INF], [NEG_INF, NEG_INF, 4, 4]])
    np.testing.assert_array_equal(  # Ties with the k-th largest are kept.
        decode.top_k_filter(logits, 1), [[NEG_INF, 5, NEG_INF, NEG_INF], [NEG_INF, NEG_INF, 4, 4]])
    np.testing.assert_array_equal(decode.top_k_filter(logits, 10), logits)


def test_top_p_filter():
    probs = np.array([[0.15, 0.5, 0.05, 0.3]])
    logits = jnp.log(probs)
    kept = lambda p: np.isfinite(decode.top_p_filter(logits, p))[0].tolist()  # noqa: E731
    assert kept(0.45) == [False, True, False, False]  # The top token alone has 0.5 >= 0.45.
    assert kept(0.6) == [False, True, False, True]  # 0.5 + 0.3 >= 0.6.
    assert kept(0.85) == [True, True, False, True]
    assert kept(1.0) == [True, True, True, True]
    np.testing.assert_allclose(decode.top_p_filter(logits, 0.6)[0, [1, 3]], logits[0, [1, 3]])


def test_sampling_frequencies_follow_filtered_distribution():
    probs = np.array([0.1, 0.4, 0.2, 0.3])
    logits = jnp.broadcast_to(jnp.log(probs), (20_000, 4))
    samples = np.asarray(decode.sample_logits(logits, jax.random.key(0), top_k=2))
    frequencies = np.bincount(samples, minlength=4) / len(samples)
    np.testing.assert_allclose(frequencies, [0, 4 / 7, 0, 3 / 7], atol=0.02)
    samples = np.asarray(decode.sample_logits(logits, jax.random.key(1), temperature=0.5))
    frequencies = np.bincount(samples, minlength=4) / len(samples)
    np.testing.assert_allclose(frequencies, probs**2 / np.sum(probs**2), atol=0.02)


def test_sampling_is_deterministic_per_seed(model_and_params):
    model, params = model_and_params
    prompt = _prompt(1, 2, 3)
    sample = functools.partial(generate, model, params, prompt, max_new_tokens=12,
                               temperature=1.5, top_k=20, top_p=0.95)
    first = np.asarray(sample(rng=jax.random.key(7)))
    np.testing.assert_array_equal(sample(rng=jax.random.key(7)), first)
    assert not np.array_equal(sample(rng=jax.random.key(8)), first)
    np.testing.assert_array_equal(first[:, :3], prompt)
    assert first.min() >= 0 and first.max() < VOCAB


@pytest.mark.slow
def test_low_temperature_and_top_1_equal_greedy(model_and_params):
    model, params = model_and_params
    prompt = _prompt(2, 3, 4)
    greedy = generate(model, params, prompt, max_new_tokens=10, greedy=True)
    cold = generate(model, params, prompt, max_new_tokens=10, rng=jax.random.key(0),
                           temperature=1e-4)
    top_1 = generate(model, params, prompt, max_new_tokens=10, rng=jax.random.key(0),
                            top_k=1)
    np.testing.assert_array_equal(cold, greedy)
    np.testing.assert_array_equal(top_1, greedy)


def test_invalid_requests_are_rejected(model_and_params):
    model, params = model_and_params
    prompt = _prompt(3, 1, 10)
    with pytest.raises(ValueError, match="context"):
        generate(model, params, prompt, max_new_tokens=BLOCK - 9, greedy=True)
    with pytest.raises(ValueError, match="context"):
        recompute(model, params, prompt, max_new_tokens=BLOCK)
    with pytest.raises(ValueError, match="rng"):
        generate(model, params, prompt, max_new_tokens=2)
    with pytest.raises(ValueError, match="temperature"):
        generate(model, params, prompt, max_new_tokens=2, rng=jax.random.key(0),
                        temperature=0.0)
    with pytest.raises(ValueError, match="top_p"):
        generate(model, params, prompt, max_new_tokens=2, rng=jax.random.key(0),
                        top_p=1.5)
    np.testing.assert_array_equal(
        generate(model, params, prompt, max_new_tokens=0, greedy=True), prompt)
    np.testing.assert_array_equal(  # Exactly filling the context is fine.
        generate(model, params, prompt, max_new_tokens=BLOCK - 10, greedy=True),
        recompute(model, params, prompt, max_new_tokens=BLOCK - 10))
