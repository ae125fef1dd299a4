"""The Flamingo-style model: the frozen GPT's output at initialisation, loading the frozen parts
from CLIP and GPT parameter trees, the masking rule end to end, cached decoding."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from configs.flamingo import emoji as flamingo_config
from jaxformer.inference import generate
from jaxformer.models import clip, flamingo, gpt
from jaxformer.train import transfer

pytestmark = pytest.mark.slow  # Trains or launches runs.

VOCAB, BLOCK, MEDIA = 40, 24, 3
LM = dict(num_layers=2, num_heads=2, d_model=32, mlp_ratio=4)
CLIP_MODEL = dict(embed_dim=8, patch_size=8, vision_width=16, vision_layers=1, vision_heads=2,
                  vision_mlp_dim=32, text_width=8, text_layers=1, text_heads=2, text_mlp_dim=16)
WIDTH = CLIP_MODEL["vision_width"]


def build(**options):
    config = ml_collections.ConfigDict({
        **dict(lm=LM, vision=CLIP_MODEL, num_latents=4, resampler_depth=1, num_heads=2, head_dim=8,
               cross_attention_every=1), **options})
    return flamingo.build(config, vocab_size=VOCAB, block_size=BLOCK, media_id=MEDIA,
                          image_shape=(16, 16, 3), dtype=jnp.float32, remat=False)


def inputs(seed=0):
    rng = np.random.default_rng(seed)
    images = jnp.asarray(rng.normal(size=(2, 2, 16, 16, 3)), jnp.float32)
    tokens = np.asarray(rng.integers(4, VOCAB, size=(2, 12)), np.int32)
    tokens[:, [2, 7]] = MEDIA  # Two images per row; positions 0-1 see none.
    return images, jnp.asarray(tokens)


def open_gates(params, value=0.7):
    flat = transfer.flat_paths(params)
    for path in flat:
        if path.endswith("_gate"):
            flat[path] = jnp.float32(value)
    return transfer.unflatten_paths(flat)


def with_source(params, source, mapping):
    loaded, _ = transfer.merge_params(params, transfer.flat_paths(source), task=None,
                                      mapping=mapping, strict=True)
    return transfer.with_loaded(params, loaded)


@pytest.fixture(scope="module")
def model_and_params():
    model = build()
    images, tokens = inputs()
    params = model.init(jax.random.key(0), images, tokens)["params"]
    lm = gpt.GPT(vocab_size=VOCAB, block_size=BLOCK, **LM)
    lm_params = lm.init(jax.random.key(1), tokens)["params"]
    return model, with_source(params, lm_params, flamingo_config.LM_MAPPING), lm, lm_params


def test_untrained_model_is_the_frozen_language_model(model_and_params):
    model, params, lm, lm_params = model_and_params
    images, tokens = inputs()
    expected = lm.apply({"params": lm_params}, tokens)
    np.testing.assert_allclose(model.apply({"params": params}, images, tokens), expected,
                               atol=1e-6, rtol=0)
    opened = model.apply({"params": open_gates(params)}, images, tokens)
    assert np.abs(opened - expected).max() > 1e-3


def test_language_model_options_carry_over():
    """A GPT with its own LayerNorm epsilon and a longer position table (an imported GPT-2's
    1,024 positions) is the same frozen model inside Flamingo."""
    options = dict(LM, layer_norm_epsilon=1e-2, max_positions=2 * BLOCK)
    model = build(lm=options)
    images, tokens = inputs()
    params = model.init(jax.random.key(0), images, tokens)["params"]
    lm = gpt.build(ml_collections.ConfigDict(dict(options, dropout_rate=0.0)),
                   vocab_size=VOCAB, block_size=BLOCK, dtype=jnp.float32, remat=False)
    lm_params = lm.init(jax.random.key(1), tokens)["params"]
    params = with_source(params, lm_params, flamingo_config.LM_MAPPING)
    np.testing.assert_allclose(model.apply({"params": params}, images, tokens),
                               lm.apply({"params": lm_params}, tokens), atol=1e-6, rtol=0)


def test_frozen_parts_load_from_clip_and_gpt_runs(model_and_params):
    model, params, _, lm_params = model_and_params
    clip_model = clip.CLIP(vocab_size=VOCAB, eot_id=2, context_length=8, **CLIP_MODEL)
    clip_params = clip_model.init(jax.random.key(2), jnp.zeros((1, 16, 16, 3)),
                                  jnp.zeros((1, 8), jnp.int32))["params"]
    loaded = with_source(params, clip_params, (("vision_encoder", "image_encoder"),))
    flat, source = transfer.flat_paths(loaded), transfer.flat_paths(clip_params)
    vision = [p for p in flat if p.startswith("vision_encoder/")]
    assert vision and all(
        np.array_equal(flat[p], source["image_encoder" + p[len("vision_encoder"):]])
        for p in vision)
    # Every LM parameter came from the GPT; the frozen patterns cover exactly those two parts.
    frozen_patterns = flamingo_config.FROZEN_VISION + flamingo_config.FROZEN_LM
    trained, frozen = transfer.count_frozen(params, frozen_patterns)
    gpt_count = sum(x.size for x in jax.tree.leaves(lm_params))
    vision_count = sum(x.size for x in jax.tree.leaves(clip_params["image_encoder"]))
    assert frozen == gpt_count + vision_count
    assert trained == sum(x.size for x in jax.tree.leaves(params)) - frozen


def test_text_sees_only_its_most_recent_image(model_and_params):
    model, params, _, _ = model_and_params
    params = open_gates(params)
    images, tokens = inputs()
    base = model.apply({"params": params}, images, tokens)
    second = model.apply({"params": params}, images.at[:, 1].add(1.0), tokens)
    first = model.apply({"params": params}, images.at[:, 0].add(1.0), tokens)
    # Positions 0-1 precede every image; 2-6 follow the first; 7- follow the second.
    np.testing.assert_array_equal(second[:, :7], base[:, :7])
    assert np.abs(second[:, 7:] - base[:, 7:]).min() > 0
    np.testing.assert_array_equal(first[:, :2], base[:, :2])
    assert np.abs(first[:, 2:7] - base[:, 2:7]).min() > 0
    # Later text depends on the first image only through the causal self-attention, which
    # the gated blocks feed: it changes too, but position 7's own cross-attention does not
    # see image 1 (checked on the masking rule in tests/layers).


def test_cached_decoding_matches_the_full_forward_pass(model_and_params):
    model, params, _, _ = model_and_params
    params = open_gates(params)
    images, tokens = inputs()
    full = model.apply({"params": params}, images, tokens)
    visual = model.apply({"params": params}, images, method=model.encode_images)
    cache = generate.init_cache(model, 2, BLOCK, context=(visual,), method="decode_text")
    logits, cache = generate.decode_step(model, params, cache, tokens[:, :5],
                                         context=(visual,), method="decode_text")
    steps = [logits]
    for t in range(5, tokens.shape[1]):  # One token at a time, across the second <image>.
        logits, cache = generate.decode_step(model, params, cache, tokens[:, t:t + 1],
                                             context=(visual,), method="decode_text")
        steps.append(logits)
    np.testing.assert_allclose(jnp.concatenate(steps, axis=1), full, atol=2e-5, rtol=0)


def test_logits_at_given_positions_are_those_of_the_full_pass(model_and_params):
    model, params, _, _ = model_and_params
    params = open_gates(params)
    images, tokens = inputs()
    full = model.apply({"params": params}, images, tokens)
    visual = model.apply({"params": params}, images, method=model.encode_images)
    at = jnp.asarray([[0, 6, 6, 3], [9, 1, 4, 2]], jnp.int32)  # Any order, repeats.
    some = model.apply({"params": params}, visual, tokens, logits_at=at,
                       method=model.decode_text)
    assert some.shape == (2, 4, full.shape[-1])
    np.testing.assert_allclose(some, jnp.take_along_axis(full, at[..., None], axis=1),
                               atol=2e-5, rtol=0)


def test_a_packed_row_scores_each_continuation_as_after_the_prefix_alone(model_and_params):
    """A row of a prefix and three continuations (each starting with an <image>, then
    padding) gives each continuation the logits of prefix + continuation on its own."""
    model, params, _, _ = model_and_params
    params = open_gates(params)
    images, _ = inputs()
    visual = model.apply({"params": params}, images[:1], method=model.encode_images)
    prefix = [MEDIA, 5, 6, 7]
    continuations = [[MEDIA, 8, 9], [MEDIA, 10], [MEDIA, 11, 12, 13]]
    row = prefix + [t for c in continuations for t in c] + [0, 0]
    segments = [0] * len(prefix) + [s for s, c in enumerate(continuations, 1) for _ in c]
    segments += [len(continuations) + 1] * 2
    packed = model.apply({"params": params}, visual, jnp.asarray([row], jnp.int32),
                         segments=jnp.asarray([segments], jnp.int32),
                         method=model.decode_text)[0]
    at = len(prefix)
    for continuation in continuations:
        alone = model.apply({"params": params}, visual,
                            jnp.asarray([prefix + continuation], jnp.int32),
                            method=model.decode_text)[0]
        np.testing.assert_allclose(packed[at:at + len(continuation)], alone[len(prefix):],
                                   atol=2e-5, rtol=0)
        at += len(continuation)
    np.testing.assert_allclose(packed[:len(prefix)], alone[:len(prefix)], atol=2e-5, rtol=0)
    # Without the segments, the later continuations see the earlier ones: other logits.
    plain = model.apply({"params": params}, visual, jnp.asarray([row], jnp.int32),
                        method=model.decode_text)[0]
    assert np.abs(plain[len(prefix) + 3:] - packed[len(prefix) + 3:]).max() > 1e-3
    with pytest.raises(ValueError, match="not for decoding"):
        model.apply({"params": params}, visual, jnp.asarray([row], jnp.int32),
                    segments=jnp.asarray([segments], jnp.int32), decode=True,
                    method=model.decode_text, mutable=["cache"])


def test_ablations_change_the_trained_parts():
    images, tokens = inputs()
    params = build(gated=False).init(jax.random.key(0), images, tokens)["params"]
    assert not [p for p in transfer.flat_paths(params) if p.endswith("_gate")]
    mean = build(connector="mean")
    params = mean.init(jax.random.key(0), images, tokens)["params"]
    assert "resampler" not in params and "connector_projection" in params
    visual = mean.apply({"params": params}, images, method=mean.encode_images)
    assert visual.shape == (2, 2, 1, WIDTH)
    every = build(cross_attention_every=2).init(jax.random.key(0), images, tokens)["params"]
    assert sorted(k for k in every["lm"] if k.startswith("gated")) == ["gated_block_1"]


def test_resampled_tokens_per_image_do_not_depend_on_the_resolution():
    model = build()
    tokens = inputs()[1]
    for size in (16, 32):
        images = jnp.zeros((2, 2, size, size, 3))
        params = model.init(jax.random.key(0), images, tokens)["params"]
        visual = model.apply({"params": params}, images, method=model.encode_images)
        assert visual.shape == (2, 2, 4, WIDTH)


def test_config_errors_are_value_errors():
    with pytest.raises(ValueError, match="cross_attention_every"):
        build(cross_attention_every=3)
    with pytest.raises(ValueError, match="connector"):
        images, tokens = inputs()
        build(connector="mlp").init(jax.random.key(0), images, tokens)
