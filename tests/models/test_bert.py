"""BERT: parameter counts, initialisation, tied decoder, pooler, padding, heads, `build`."""

import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from jaxformer.models import bert
from jaxformer.models.bert import (
    VARIANTS,
    BertClassifier,
    BertEncoder,
    BertForPreTraining,
    BertSpanClassifier,
    BertTokenClassifier,
)
from jaxformer.train import transfer

# Parameter counts of the Hugging Face `BertForPreTraining` checkpoints (vocab 30,522).
REFERENCE_COUNTS = {"base": 110_106_428, "large": 336_226_108}
VOCAB = 30_522
TINY = dict(num_layers=2, d_model=16, num_heads=2, mlp_dim=32, max_position=32,
            dropout_rate=0.0, attention_dropout_rate=0.0)


def expected_count(num_layers, d, mlp, vocab=VOCAB, positions=512, types=2):
    """`BertForPreTraining` in closed form: embeddings (token, position, segment tables and a
    LayerNorm); per block qkv 3d^2+3d, attention out d^2+d, MLP 2dm+m+d and two LayerNorms
    4d; the pooler d^2+d; the MLM transform d^2+d, its LayerNorm 2d and output bias `vocab`
    (the decoder is tied); the NSP head 2d+2."""
    embeddings = (vocab + positions + types) * d + 2 * d
    block = 4 * d * d + 4 * d + 2 * d * mlp + mlp + d + 4 * d
    pooler = d * d + d
    heads = d * d + d + 2 * d + vocab + 2 * d + 2
    return embeddings + num_layers * block + pooler + heads


def _count(model, seq=8, predictions=2):
    ids = jnp.zeros((1, seq), jnp.int32)
    args = (ids, ids) if not isinstance(model, BertForPreTraining) else (
        ids, ids, jnp.zeros((1, predictions), jnp.int32))
    shapes = jax.eval_shape(model.init, jax.random.key(0), *args)
    return sum(math.prod(s.shape) for s in jax.tree.leaves(shapes["params"]))


@pytest.mark.parametrize("variant", list(REFERENCE_COUNTS))
def test_reference_parameter_counts(variant):
    sizes = VARIANTS[variant]
    closed_form = expected_count(sizes["num_layers"], sizes["d_model"], sizes["mlp_dim"])
    assert closed_form == REFERENCE_COUNTS[variant]
    assert _count(BertForPreTraining(vocab_size=VOCAB, **sizes)) == REFERENCE_COUNTS[variant]


@pytest.mark.parametrize("variant", ["tiny", "mini", "small", "medium"])
def test_miniature_counts_match_closed_form(variant):
    sizes = VARIANTS[variant]
    assert sizes["mlp_dim"] == 4 * sizes["d_model"]
    model = BertForPreTraining(vocab_size=VOCAB, **sizes)
    assert _count(model) == expected_count(sizes["num_layers"], sizes["d_model"],
                                           sizes["mlp_dim"])


def _ids(seed, shape=(3, 10), vocab=50, pad_from=None):
    ids = np.random.default_rng(seed).integers(1, vocab, shape).astype(np.int32)
    if pad_from is not None:
        ids[:, pad_from:] = 0
    return ids


def _pretraining(vocab=50, **kwargs):
    return BertForPreTraining(vocab_size=vocab, **{**TINY, **kwargs})


def _init_pretraining(model, ids, positions):
    return jax.jit(model.init)(jax.random.key(0), ids, np.zeros_like(ids), positions)["params"]


def test_initialisation_is_truncated_normal():
    model = BertForPreTraining(vocab_size=500, num_layers=1, d_model=64, num_heads=2,
                               mlp_dim=256)
    ids = _ids(0, (1, 4))
    params = _init_pretraining(model, ids, np.zeros((1, 1), np.int32))
    encoder = params["encoder"]
    for kernel in (encoder["token_embedding"]["embedding"],
                   encoder["transformer"]["block_0"]["mlp"]["fc"]["kernel"],
                   params["mlm_head"]["transform"]["kernel"]):
        kernel = np.asarray(kernel)
        assert np.abs(kernel).max() <= 0.04 + 1e-6  # Cut at two standard deviations.
        assert kernel.std() == pytest.approx(0.02 * 0.8796, rel=0.1)  # The truncated std.
    assert not np.asarray(params["mlm_head"]["output_bias"]).any()
    np.testing.assert_array_equal(encoder["embedding_norm"]["scale"], 1.0)


@pytest.mark.slow
def test_decoder_is_tied_to_the_token_embedding():
    model = _pretraining()
    ids = _ids(1, (2, 8))
    ids[ids == 7] = 8  # Token 7 is never an input.
    positions = np.array([[1, 3], [2, 5]], np.int32)
    params = _init_pretraining(model, ids, positions)
    assert set(params["mlm_head"]) == {"transform", "norm", "output_bias"}  # No own decoder.

    def logit_of_7(params):
        mlm_logits, _ = model.apply({"params": params}, ids, np.zeros_like(ids), positions)
        return mlm_logits[..., 7].sum()

    grads = jax.grad(logit_of_7)(params)
    embedding_grad = np.asarray(grads["encoder"]["token_embedding"]["embedding"])
    # Row 7 is not looked up, so its gradient comes only from the decoder.
    assert np.abs(embedding_grad[7]).max() > 1e-3
    # And the logits follow the table: scaling row 7 moves only the logits of token 7.
    scaled = jax.tree.map(lambda x: x, params)
    table = scaled["encoder"]["token_embedding"]["embedding"]
    scaled["encoder"]["token_embedding"]["embedding"] = table.at[7].multiply(3.0)
    before, _ = model.apply({"params": params}, ids, np.zeros_like(ids), positions)
    after, _ = model.apply({"params": scaled}, ids, np.zeros_like(ids), positions)
    changed = np.abs(np.asarray(after - before)).max(axis=(0, 1)) > 1e-6
    assert changed[7] and changed.sum() == 1


@pytest.mark.slow
def test_mlm_logits_are_the_head_at_the_gathered_positions():
    model = _pretraining()
    ids = _ids(2, (2, 8))
    segments = np.zeros_like(ids)
    every = np.tile(np.arange(8, dtype=np.int32), (2, 1))
    params = _init_pretraining(model, ids, every)
    full, nsp = model.apply({"params": params}, ids, segments, every)
    positions = np.array([[5, 0, 2], [7, 7, 1]], np.int32)
    some, nsp_again = model.apply({"params": params}, ids, segments, positions)
    assert full.dtype == jnp.float32 and some.shape == (2, 3, 50) and nsp.shape == (2, 2)
    np.testing.assert_allclose(some, np.take_along_axis(np.asarray(full), positions[..., None],
                                                        axis=1), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(nsp, nsp_again, rtol=1e-6)


def _encoder(**kwargs):
    return BertEncoder(vocab_size=50, **{**TINY, **kwargs})


def test_pooler_reads_the_first_token():
    encoder = _encoder()
    ids = _ids(3, (2, 8))
    segments = np.array([[0] * 4 + [1] * 4, [0] * 8], np.int32)
    params = jax.jit(encoder.init)(jax.random.key(0), ids, segments)["params"]
    sequence, pooled = encoder.apply({"params": params}, ids, segments)
    dense = params["pooler"]
    want = np.tanh(np.asarray(sequence[:, 0]) @ dense["kernel"] + dense["bias"])
    np.testing.assert_allclose(pooled, want, rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_causal_encoder_sees_only_the_past_and_pools_the_last_real_token():
    encoder = _encoder(causal=True)
    ids = _ids(4, (2, 8), pad_from=6)
    ids[1, 4:] = 0  # Rows of 6 and 4 real tokens.
    segments = np.zeros_like(ids)
    params = jax.jit(encoder.init)(jax.random.key(0), ids, segments)["params"]
    sequence, pooled = encoder.apply({"params": params}, ids, segments)
    changed = ids.copy()
    changed[:, 3] = 7  # A token changes: the states before it do not, those after it do.
    changed_sequence, _ = encoder.apply({"params": params}, changed, segments)
    np.testing.assert_allclose(changed_sequence[:, :3], sequence[:, :3], rtol=1e-5, atol=1e-6)
    moved = np.linalg.norm(np.asarray(changed_sequence[0, 3:6] - sequence[0, 3:6]), axis=-1)
    assert moved.min() > 1e-3
    dense = params["pooler"]
    last = np.asarray(sequence)[[0, 1], [5, 3]]
    np.testing.assert_allclose(pooled, np.tanh(last @ dense["kernel"] + dense["bias"]),
                               rtol=1e-5, atol=1e-6)
    # Same parameters as the bidirectional encoder's.
    bidirectional = jax.jit(_encoder().init)(jax.random.key(0), ids, segments)["params"]
    assert jax.tree.map(np.shape, params) == jax.tree.map(np.shape, bidirectional)


@pytest.mark.slow
def test_padding_is_masked_and_segments_matter():
    encoder = _encoder()
    ids = _ids(4, (2, 6))
    segments = np.array([[0, 0, 0, 1, 1, 1]] * 2, np.int32)
    params = jax.jit(encoder.init)(jax.random.key(0), ids, segments)["params"]
    short_seq, short_pooled = encoder.apply({"params": params}, ids, segments)
    # Four [PAD]s (segment 0) appended: the real positions do not see them.
    padded_ids = np.concatenate([ids, np.zeros((2, 4), np.int32)], axis=1)
    padded_segments = np.concatenate([segments, np.zeros((2, 4), np.int32)], axis=1)
    long_seq, long_pooled = encoder.apply({"params": params}, padded_ids, padded_segments)
    np.testing.assert_allclose(long_seq[:, :6], short_seq, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(long_pooled, short_pooled, rtol=1e-5, atol=1e-5)
    _, other_pooled = encoder.apply({"params": params}, ids, np.zeros_like(segments))
    assert np.abs(np.asarray(other_pooled - short_pooled)).max() > 1e-4


@pytest.mark.slow
def test_dropout_only_in_training():
    encoder = _encoder(dropout_rate=0.3, attention_dropout_rate=0.3)
    ids = _ids(5, (2, 6))
    segments = np.zeros_like(ids)
    params = jax.jit(encoder.init)(jax.random.key(0), ids, segments)["params"]
    eval_a = encoder.apply({"params": params}, ids, segments)[1]
    eval_b = encoder.apply({"params": params}, ids, segments)[1]
    np.testing.assert_array_equal(eval_a, eval_b)
    train = encoder.apply({"params": params}, ids, segments, train=True,
                          rngs={"dropout": jax.random.key(1)})[1]
    assert np.abs(np.asarray(train - eval_a)).max() > 1e-4


@pytest.mark.slow
def test_classifier_heads():
    ids = _ids(6, (3, 8), pad_from=6)
    segments = np.zeros_like(ids)
    sequence_model = BertClassifier(vocab_size=50, num_classes=3, **TINY)
    params = jax.jit(sequence_model.init)(jax.random.key(0), ids, segments)["params"]
    logits = sequence_model.apply({"params": params}, ids, segments)
    assert logits.shape == (3, 3) and logits.dtype == jnp.float32
    token_model = BertTokenClassifier(vocab_size=50, num_classes=5, **TINY)
    token_params = jax.jit(token_model.init)(jax.random.key(0), ids, segments)["params"]
    assert token_model.apply({"params": token_params}, ids, segments).shape == (3, 8, 5)
    assert set(params) == set(token_params) == {"encoder", "classifier"}


def test_encoder_subtree_loads_from_pretraining_with_init_from_mapping():
    ids = _ids(7, (1, 8))
    pretraining = _init_pretraining(_pretraining(), ids, np.zeros((1, 2), np.int32))
    classifier = BertClassifier(vocab_size=50, num_classes=2, **TINY)
    target = jax.eval_shape(classifier.init, jax.random.key(1), ids, np.zeros_like(ids))
    target = target["params"]
    shapes = lambda tree: jax.tree.map(lambda x: (x.shape, x.dtype), tree)  # noqa: E731
    assert shapes(target["encoder"]) == shapes(pretraining["encoder"])
    source = {k: np.asarray(v) for k, v in transfer.flat_paths(pretraining).items()}
    loaded, fresh = transfer.merge_params(target, source, None, [("encoder", "encoder")],
                                          strict=True)
    assert sorted(fresh) == ["classifier/bias", "classifier/kernel"]
    assert set(loaded) == {p for p in source if p.startswith("encoder/")}


@pytest.mark.slow
def test_compute_dtype_keeps_float32_logits():
    model = _pretraining(dtype=jnp.bfloat16)
    ids = _ids(8, (2, 8))
    positions = np.zeros((2, 3), np.int32)
    params = _init_pretraining(model, ids, positions)
    assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(params))
    mlm, nsp = model.apply({"params": params}, ids, np.zeros_like(ids), positions)
    assert mlm.dtype == nsp.dtype == jnp.float32


def _config(**fields):
    return ml_collections.ConfigDict(dict(name="bert", **fields))


def test_build_variants_and_explicit_sizes():
    model = bert.build(_config(variant="mini"), vocab_size=100)
    assert isinstance(model, BertForPreTraining)
    assert (model.num_layers, model.d_model, model.num_heads, model.mlp_dim) == (4, 256, 4, 1024)
    assert (model.max_position, model.type_vocab, model.dropout_rate) == (512, 2, 0.1)
    explicit = bert.build(_config(variant="", num_layers=3, d_model=48, num_heads=4, mlp_dim=96,
                                  dropout_rate=0.0, max_position=64),
                          vocab_size=100, head="sequence", num_classes=4)
    assert isinstance(explicit, BertClassifier) and explicit.num_classes == 4
    assert (explicit.num_layers, explicit.d_model, explicit.max_position) == (3, 48, 64)
    assert explicit.dropout_rate == 0.0
    token = bert.build(_config(variant="tiny"), vocab_size=100, head="token", num_classes=7)
    assert isinstance(token, BertTokenClassifier)
    span = bert.build(_config(variant="tiny"), vocab_size=100, head="span")
    assert isinstance(span, BertSpanClassifier)


def test_build_rejects_bad_configs():
    with pytest.raises(ValueError, match="unknown BERT variant"):
        bert.build(_config(variant="huge"), vocab_size=100)
    with pytest.raises(ValueError, match="unknown BERT head"):
        bert.build(_config(variant="tiny"), vocab_size=100, head="answer")
    with pytest.raises(ValueError, match="at least one class"):
        bert.build(_config(variant="tiny"), vocab_size=100, head="sequence")
    with pytest.raises(ValueError, match="divisible"):
        bert.build(_config(variant="", num_layers=1, d_model=10, num_heads=3, mlp_dim=8),
                   vocab_size=100)
