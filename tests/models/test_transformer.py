"""The encoder-decoder Transformer: sizes, masks, decoding with the cache, label smoothing."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from jaxformer.inference.seq2seq import init_cache
from jaxformer.losses.cross_entropy import label_smoothed_nll
from jaxformer.models.transformer import (
    VARIANTS,
    Transformer,
    build,
    shift_right,
)

VOCAB = 37_000


def _param_count(model, src_len=8, tgt_len=8):
    shapes = jax.eval_shape(lambda: model.init(
        jax.random.key(0), jnp.ones((1, src_len), jnp.int32), jnp.ones((1, tgt_len), jnp.int32)))
    return sum(x.size for x in jax.tree.leaves(shapes["params"]))


def _expected_count(num_layers, d, d_ff, vocab):
    """Counted by hand from the paper's architecture (biases and LayerNorms included)."""
    attention = 4 * (d * d + d)
    ffn = d * d_ff + d_ff + d_ff * d + d
    norm = 2 * d
    encoder_layer = attention + ffn + 2 * norm
    decoder_layer = 2 * attention + ffn + 3 * norm
    return vocab * d + num_layers * (encoder_layer + decoder_layer)


@pytest.mark.parametrize("variant, paper_millions", [("base", 65), ("big", 213)])
def test_parameter_counts_match_the_architecture_and_the_paper(variant, paper_millions):
    sizes = VARIANTS[variant]
    model = Transformer(vocab_size=VOCAB, max_len=256, **sizes)
    count = _param_count(model)
    assert count == _expected_count(sizes["num_layers"], sizes["d_model"], sizes["mlp_dim"],
                                    VOCAB)
    assert abs(count / 1e6 - paper_millions) / paper_millions < 0.04


def test_unshared_embeddings_add_a_target_table_and_an_output_matrix():
    shared = Transformer(vocab_size=100, max_len=16, **VARIANTS["tiny"])
    separate = shared.clone(share_embeddings=False)
    assert _param_count(separate) - _param_count(shared) == 2 * 100 * 32


def _tiny(**kwargs):
    model = Transformer(vocab_size=50, max_len=32, bos_id=1, **{**VARIANTS["tiny"], **kwargs})
    params = model.init(jax.random.key(0), jnp.ones((1, 8), jnp.int32),
                        jnp.ones((1, 8), jnp.int32))["params"]
    return model, params


@pytest.mark.slow
@pytest.mark.parametrize("norm_first", [False, True])
@pytest.mark.parametrize("positions", ["sinusoidal", "learned"])
def test_padding_changes_nothing_at_real_positions(norm_first, positions):
    model, params = _tiny(norm_first=norm_first, positions=positions)
    source = jnp.array([[5, 6, 7, 2]])
    target = jnp.array([[8, 9, 2]])
    logits = model.apply({"params": params}, source, target)
    padded = model.apply({"params": params}, jnp.pad(source, ((0, 0), (0, 5))),
                         jnp.pad(target, ((0, 0), (0, 4))))
    np.testing.assert_allclose(padded[:, :3], logits, atol=1e-5)
    encoded = model.apply({"params": params}, source, method="encode")
    encoded_padded = model.apply({"params": params}, jnp.pad(source, ((0, 0), (0, 5))),
                                 method="encode")
    np.testing.assert_allclose(encoded_padded[:, :4], encoded, atol=1e-5)


def test_decoder_does_not_see_future_targets():
    model, params = _tiny()
    source = jnp.array([[5, 6, 7, 2]])
    a = model.apply({"params": params}, source, jnp.array([[8, 9, 10, 11, 2]]))
    b = model.apply({"params": params}, source, jnp.array([[8, 9, 30, 40, 41]]))
    # Position t predicts target t from targets < t: positions 0..2 only saw [BOS, 8, 9].
    np.testing.assert_allclose(a[:, :3], b[:, :3], atol=1e-6)
    assert not np.allclose(a[:, 3], b[:, 3])


def test_source_tokens_matter_and_padding_ids_do_not_leak():
    model, params = _tiny()
    target = jnp.array([[8, 9, 2]])
    a = model.apply({"params": params}, jnp.array([[5, 6, 7, 2]]), target)
    b = model.apply({"params": params}, jnp.array([[5, 6, 12, 2]]), target)
    assert not np.allclose(a, b)


def test_shift_right_starts_with_bos():
    np.testing.assert_array_equal(shift_right(jnp.array([[4, 5, 2, 0]]), 1), [[1, 4, 5, 2]])


@pytest.mark.slow
def test_cached_decoding_matches_teacher_forcing():
    model, params = _tiny(dropout_rate=0.0)
    source = jnp.array([[5, 6, 7, 2, 0], [9, 2, 0, 0, 0]])
    target = jnp.array([[8, 9, 10, 2], [11, 12, 2, 0]])
    full = model.apply({"params": params}, source, target)
    encoded = model.apply({"params": params}, source, method="encode")
    decoder_inputs = shift_right(target, 1)
    cache = init_cache(model, encoded, source, max_len=6)
    steps = []
    for t in range(target.shape[1]):
        logits, variables = model.apply(
            {"params": params, "cache": cache}, encoded, source, decoder_inputs[:, t:t + 1],
            decode=True, mutable=["cache"], method="decode")
        cache = variables["cache"]
        steps.append(logits[:, 0])
    np.testing.assert_allclose(jnp.stack(steps, axis=1), full, atol=1e-5)


def test_build_reads_variant_or_explicit_sizes():
    config = ml_collections.ConfigDict(dict(
        variant="", num_layers=1, d_model=16, num_heads=2, mlp_dim=32, dropout_rate=0.0,
        attention_dropout_rate=0.0, norm_first=True, positions="learned",
        share_embeddings=True))
    model = build(config, vocab_size=20, max_len=10, bos_id=1, dtype=jnp.float32, remat=False)
    assert (model.num_layers, model.d_model, model.norm_first) == (1, 16, True)
    config.variant = "base"
    assert build(config, vocab_size=20, max_len=10, bos_id=1, dtype=jnp.float32,
                 remat=False).d_model == 512
    config.variant = "huge"
    with pytest.raises(ValueError, match="unknown Transformer variant"):
        build(config, vocab_size=20, max_len=10, bos_id=1, dtype=jnp.float32, remat=False)


def test_label_smoothing_matches_the_smoothed_target_cross_entropy():
    logits = jax.random.normal(jax.random.key(1), (3, 7))
    targets = jnp.array([0, 3, 6])
    eps = 0.1
    smoothed = np.full((3, 7), eps / 6)
    smoothed[np.arange(3), np.asarray(targets)] = 1 - eps
    log_probs = np.asarray(jax.nn.log_softmax(logits))
    kl = (smoothed * (np.log(smoothed) - log_probs)).sum(-1)  # KL(smoothed || model)
    loss, nll = label_smoothed_nll(logits, targets, eps)
    np.testing.assert_allclose(loss, kl, rtol=1e-5)
    np.testing.assert_allclose(nll, -log_probs[np.arange(3), np.asarray(targets)], rtol=1e-6)
    unsmoothed, _ = label_smoothed_nll(logits, targets, 0.0)
    np.testing.assert_allclose(unsmoothed, nll)
