"""GPT-2: parameter counts, initialisation, tied head, causality, dropout, `build`."""

import functools
import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from jaxformer.models import gpt
from jaxformer.models.gpt import GPT, VARIANTS

# Parameter counts of the Hugging Face / nanoGPT GPT-2 checkpoints (vocab 50257, context 1024).
GPT2_COUNTS = {
    "gpt2-small": 124_439_808,
    "gpt2-medium": 354_823_168,
    "gpt2-large": 774_030_080,
    "gpt2-xl": 1_557_611_200,
}
SIZES = {  # (num_layers, d_model), from the GPT-2 paper.
    "gpt2-small": (12, 768), "gpt2-medium": (24, 1024), "gpt2-large": (36, 1280),
    "gpt2-xl": (48, 1600),
}


def expected_count(num_layers, d, vocab=50257, context=1024):
    """Per block: qkv 3d^2+3d, attention out d^2+d, MLP 8d^2+5d, two LayerNorms 4d.
    Plus token and position tables and the final LayerNorm; the head is tied."""
    return 12 * num_layers * d**2 + 13 * num_layers * d + 2 * d + vocab * d + context * d


def _count(model):
    shapes = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 8), jnp.int32))
    return sum(math.prod(s.shape) for s in jax.tree.leaves(shapes["params"]))


@pytest.mark.parametrize("variant", list(GPT2_COUNTS))
def test_gpt2_parameter_counts(variant):
    assert expected_count(*SIZES[variant]) == GPT2_COUNTS[variant]
    model = GPT(vocab_size=50257, block_size=1024, **VARIANTS[variant])
    assert _count(model) == GPT2_COUNTS[variant]


@pytest.mark.parametrize("variant", ["nano", "tiny"])
def test_small_variant_counts_match_formula(variant):
    sizes = VARIANTS[variant]
    model = GPT(vocab_size=65, block_size=256, **sizes)
    assert _count(model) == expected_count(sizes["num_layers"], sizes["d_model"], 65, 256)


def _tiny(**kwargs):
    return GPT(vocab_size=67, block_size=16, **{**VARIANTS["tiny"], **kwargs})


def _tokens(seed, shape=(3, 12), vocab=67):
    return np.random.default_rng(seed).integers(0, vocab, shape).astype(np.int32)


def _init(model, tokens):
    return jax.jit(model.init)(jax.random.key(0), tokens)["params"]


@pytest.mark.slow
def test_initialisation_follows_gpt2():
    num_layers, d_model = 8, 256
    model = GPT(vocab_size=512, block_size=128, num_layers=num_layers, num_heads=4,
                d_model=d_model)
    params = _init(model, np.zeros((1, 4), np.int32))
    residual_std = 0.02 / math.sqrt(2 * num_layers)
    block = params["transformer"]["block_3"]
    stds = {
        "token_embedding": (params["token_embedding"]["embedding"], 0.02),
        "position_embedding": (params["position_embedding"]["embedding"], 0.02),
        "qkv": (block["attention"]["qkv"]["kernel"], 0.02),
        "mlp fc": (block["mlp"]["fc"]["kernel"], 0.02),
        "attention out": (block["attention"]["out"]["kernel"], residual_std),
        "mlp proj": (block["mlp"]["proj"]["kernel"], residual_std),
    }
    for name, (weights, std) in stds.items():
        assert abs(float(np.std(weights)) - std) < 0.05 * std, name
        assert abs(float(np.mean(weights))) < 0.05 * std, name
    for path, leaf in jax.tree_util.tree_leaves_with_path(params):
        name = jax.tree_util.keystr(path)
        if name.endswith("['bias']"):
            np.testing.assert_array_equal(leaf, 0.0, err_msg=name)
        if name.endswith("['scale']"):
            np.testing.assert_array_equal(leaf, 1.0, err_msg=name)


def test_initial_loss_is_log_vocab():
    model = GPT(vocab_size=256, block_size=32, **VARIANTS["nano"])
    tokens = _tokens(0, (4, 32), vocab=256)
    params = _init(model, tokens)
    logits = jax.jit(model.apply)({"params": params}, tokens)
    loss = optax.softmax_cross_entropy_with_integer_labels(logits[:, :-1], tokens[:, 1:]).mean()
    assert abs(float(loss) - math.log(256)) < 0.2  # Near-uniform predictions at init.


def test_head_is_tied_to_token_embedding():
    model = _tiny()
    tokens = _tokens(0)
    params = _init(model, tokens)
    assert set(params) == {"token_embedding", "position_embedding", "transformer"}
    apply = jax.jit(functools.partial(model.apply, capture_intermediates=True,
                                      mutable=["intermediates"]))
    logits, state = apply({"params": params}, tokens)
    assert logits.shape == (3, 12, 67) and logits.dtype == jnp.float32
    (hidden,) = state["intermediates"]["transformer"]["__call__"]  # After the final LayerNorm.
    expected = np.asarray(hidden) @ np.asarray(params["token_embedding"]["embedding"]).T
    np.testing.assert_allclose(logits, expected, atol=1e-5, rtol=1e-5)


def test_logits_are_causal():
    model = _tiny()
    tokens = _tokens(0)
    params = _init(model, tokens)
    apply = jax.jit(model.apply)
    logits = apply({"params": params}, tokens)
    t = 5
    changed = tokens.copy()
    changed[:, t + 1:] = (changed[:, t + 1:] + 1) % 67
    changed_logits = apply({"params": params}, changed)
    np.testing.assert_allclose(changed_logits[:, : t + 1], logits[:, : t + 1], atol=1e-6)
    assert not np.allclose(changed_logits[:, t + 1:], logits[:, t + 1:], atol=1e-4)


@pytest.mark.slow
def test_bfloat16_compute_keeps_float32_params_and_logits():
    tokens = _tokens(0)
    params = _init(_tiny(), tokens)
    logits32 = jax.jit(_tiny().apply)({"params": params}, tokens)
    model16 = _tiny(dtype=jnp.bfloat16)
    assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(_init(model16, tokens)))
    logits16 = jax.jit(model16.apply)({"params": params}, tokens)
    assert logits16.dtype == jnp.float32
    np.testing.assert_allclose(logits16, logits32, atol=0.05)


@pytest.mark.slow
def test_dropout_only_in_training():
    model = _tiny(dropout_rate=0.2)
    tokens = _tokens(0)
    params = _init(model, tokens)
    clean = jax.jit(model.apply)({"params": params}, tokens)
    train = jax.jit(lambda key: model.apply({"params": params}, tokens, train=True,
                                            rngs={"dropout": key}))
    np.testing.assert_array_equal(train(jax.random.key(1)), train(jax.random.key(1)))
    assert not np.allclose(train(jax.random.key(1)), clean, atol=1e-4)
    assert not np.allclose(train(jax.random.key(1)), train(jax.random.key(2)), atol=1e-4)


def test_scan_layers_and_remat_give_the_same_logits():
    tokens = _tokens(0)
    params = _init(_tiny(), tokens)
    blocks = [params["transformer"][f"block_{i}"] for i in range(2)]
    scanned = {**params, "transformer": {
        "layers": jax.tree.map(lambda *xs: jnp.stack(xs), *blocks),
        "final_norm": params["transformer"]["final_norm"]}}
    expected = jax.jit(_tiny().apply)({"params": params}, tokens)
    model = _tiny(scan_layers=True, remat=True)
    np.testing.assert_allclose(
        jax.jit(model.apply)({"params": scanned}, tokens), expected, atol=1e-5)


def test_sequence_longer_than_block_size_is_rejected():
    model = _tiny()
    with pytest.raises(ValueError, match="block_size"):
        jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 17), jnp.int32))


def _model_config(**overrides):
    config = ml_collections.ConfigDict(dict(
        name="gpt", variant="", num_layers=3, num_heads=2, d_model=24, mlp_ratio=4,
        dropout_rate=0.1))
    config.update(overrides)
    return config


def test_build_uses_explicit_fields_or_variant():
    model = gpt.build(_model_config(), vocab_size=65, block_size=64, dtype=jnp.bfloat16,
                      remat=True)
    assert (model.num_layers, model.num_heads, model.d_model) == (3, 2, 24)
    assert (model.vocab_size, model.block_size, model.dropout_rate) == (65, 64, 0.1)
    assert model.dtype == jnp.bfloat16 and model.remat
    model = gpt.build(_model_config(variant="nano"), vocab_size=65, block_size=64,
                      dtype=jnp.float32, remat=False)
    assert (model.num_layers, model.num_heads, model.d_model) == (4, 4, 128)
    assert model.mlp_ratio == 4 and not model.remat


def test_build_rejects_unknown_variant():
    with pytest.raises(ValueError, match="gpt2-small.*nano"):
        gpt.build(_model_config(variant="gpt5"), vocab_size=65, block_size=64,
                  dtype=jnp.float32, remat=False)
