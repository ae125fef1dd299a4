"""ViT: parameter counts, patch order, position-embedding resizing, attention, pooling, build."""

import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from jaxformer.inference.attention_map import collect_attention
from jaxformer.models import vit
from jaxformer.models.vit import VARIANTS, PatchEmbedding, ViT, ViTEncoder

# Published parameter counts at 224 x 224 with 1000 classes and a linear head (the
# fine-tuned ImageNet models of the ViT paper, as listed by timm).
PUBLISHED_COUNTS = {
    "Ti/16": 5_717_416,
    "S/16": 22_050_664,
    "B/16": 86_567_656,
    "B/32": 88_224_232,
    "L/16": 304_326_632,
    "H/14": 632_045_800,
}


def expected_count(d, layers, mlp, patch, channels=3, image=224, classes=1000, tokens_extra=1):
    """Per block: qkv 3d^2+3d, attention out d^2+d, MLP 2dm+m+d, two LayerNorms 4d. Plus the
    patch embedding p^2 C d + d, class token d, positions (N+1) d, final LayerNorm 2d, head."""
    patches = (image // patch) ** 2
    block = 4 * d * d + 4 * d + 2 * d * mlp + mlp + d + 4 * d
    return (layers * block + patch * patch * channels * d + d + d * tokens_extra
            + (patches + tokens_extra) * d + 2 * d + d * classes + classes)


def count(model, image_shape=(224, 224, 3)):
    shapes = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, *image_shape)))
    return sum(math.prod(s.shape) for s in jax.tree.leaves(shapes["params"]))


@pytest.mark.parametrize("variant", list(PUBLISHED_COUNTS))
def test_parameter_counts(variant):
    sizes = vit.parse_variant(variant)
    assert expected_count(sizes["d_model"], sizes["num_layers"], sizes["mlp_dim"],
                          sizes["patch_size"]) == PUBLISHED_COUNTS[variant]
    assert count(ViT(num_classes=1000, **sizes)) == PUBLISHED_COUNTS[variant]


def test_b16_count_and_sizes():
    assert count(ViT(num_classes=1000, **vit.parse_variant("B/16"))) == 86_567_656
    table = {name: (v["d_model"], v["num_layers"], v["num_heads"], v["mlp_dim"])
             for name, v in VARIANTS.items()}
    assert table == {"Ti": (192, 12, 3, 768), "S": (384, 12, 6, 1536), "B": (768, 12, 12, 3072),
                     "L": (1024, 24, 16, 4096), "H": (1280, 32, 16, 5120)}


def test_imagenet_config_widths_match_the_variants():
    import importlib.util
    import os
    path = os.path.join(os.path.dirname(__file__), "../../configs/vit/imagenet.py")
    spec = importlib.util.spec_from_file_location("imagenet_config", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.WIDTHS == {name: v["d_model"] for name, v in VARIANTS.items()}
    assert module.get_config("variant=L/16").model.representation_size == 1024


def test_representation_layer_and_gap_counts():
    sizes = vit.parse_variant("B/16")
    with_rep = count(ViT(num_classes=1000, representation_size=768, **sizes))
    assert with_rep == 86_567_656 + 768 * 768 + 768
    gap = count(ViT(num_classes=1000, pool_type="gap", **sizes))
    assert gap == 86_567_656 - 768 - 768  # No class token, one position fewer.


@pytest.mark.parametrize("variant", ["B", "B/", "X/16", "B/x", "B/0"])
def test_bad_variant_names(variant):
    with pytest.raises(ValueError, match="unknown ViT variant"):
        vit.parse_variant(variant)


def numpy_patchify(images, p):
    """[B, H, W, C] -> [B, (H/p)(W/p), p*p*C], patches in row-major order."""
    b, h, w, c = images.shape
    x = images.reshape(b, h // p, p, w // p, p, c).transpose(0, 1, 3, 2, 4, 5)
    return x.reshape(b, (h // p) * (w // p), p * p * c)


def test_patch_embedding_matches_patchify_and_matmul():
    rng = np.random.default_rng(0)
    images = rng.normal(size=(2, 12, 20, 3)).astype(np.float32)  # A 3 x 5 grid of 4x4 patches.
    module = PatchEmbedding(features=8, patch_size=4)
    params = module.init(jax.random.key(1), images)["params"]
    assert params["kernel"].shape == (4, 4, 3, 8) and params["bias"].shape == (8,)
    params = {"kernel": params["kernel"], "bias": jnp.asarray(rng.normal(size=8), jnp.float32)}
    tokens = np.asarray(module.apply({"params": params}, images))
    assert tokens.shape == (2, 15, 8)
    expected = (numpy_patchify(images, 4) @ np.asarray(params["kernel"]).reshape(48, 8)
                + np.asarray(params["bias"]))
    np.testing.assert_allclose(tokens, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("i,j", [(0, 0), (0, 4), (1, 2), (2, 0), (2, 4)])
def test_patch_i_j_is_token_i_times_grid_width_plus_j(i, j):
    images = np.zeros((1, 12, 20, 1), np.float32)
    images[0, 4 * i:4 * i + 4, 4 * j:4 * j + 4] = 1.0  # Only patch (i, j) is lit.
    module = PatchEmbedding(features=6, patch_size=4)
    params = module.init(jax.random.key(0), images)
    tokens = np.asarray(module.apply(params, images))[0]  # [15, 6]; zero bias at init.
    lit = np.flatnonzero(np.abs(tokens).sum(axis=1) > 0)
    assert lit.tolist() == [i * 5 + j]


def test_resize_position_embedding_identity_and_shapes():
    rng = np.random.default_rng(0)
    posemb = rng.normal(size=(1, 1 + 14 * 14, 16)).astype(np.float32)
    same = vit.resize_position_embedding(posemb, (14, 14))
    np.testing.assert_array_equal(same, posemb)
    bigger = vit.resize_position_embedding(posemb, (24, 24))  # 224 -> 384 at patch 16.
    assert bigger.shape == (1, 1 + 24 * 24, 16) and bigger.dtype == np.float32
    np.testing.assert_array_equal(bigger[:, :1], posemb[:, :1])  # The class token's is kept.
    no_prefix = vit.resize_position_embedding(posemb[:, 1:], (7, 7), num_prefix_tokens=0)
    assert no_prefix.shape == (1, 49, 16)
    with pytest.raises(ValueError, match="square"):
        vit.resize_position_embedding(posemb[:, :-1], (7, 7))


def corner_aligned_bilinear(grid, new_h, new_w):
    """Independent reference: separable linear interpolation with the corners aligned."""
    old_h, old_w, channels = grid.shape
    ys, xs = np.linspace(0, old_h - 1, new_h), np.linspace(0, old_w - 1, new_w)
    rows = np.stack([[np.interp(ys, np.arange(old_h), grid[:, x, c]) for x in range(old_w)]
                     for c in range(channels)], axis=-1)  # [old_w, new_h, c]
    rows = rows.transpose(1, 0, 2)  # [new_h, old_w, c]
    return np.stack([[np.interp(xs, np.arange(old_w), rows[y, :, c]) for y in range(new_h)]
                     for c in range(channels)], axis=-1)  # [new_h, new_w, c]


def test_resize_position_embedding_is_bilinear_on_a_known_grid():
    # A plane a * row + b * col + c on a 4 x 4 grid is reproduced exactly at every size.
    rows, cols = np.meshgrid(np.arange(4.0), np.arange(4.0), indexing="ij")
    plane = np.stack([2 * rows + cols, -rows + 3 * cols + 1], axis=-1) / 3.0  # [4, 4, 2]
    posemb = np.concatenate([np.full((1, 1, 2), 7.0), plane.reshape(1, 16, 2)], axis=1)
    resized = vit.resize_position_embedding(posemb, (7, 7))[0, 1:].reshape(7, 7, 2)
    r, c = np.meshgrid(np.linspace(0, 3, 7), np.linspace(0, 3, 7), indexing="ij")
    np.testing.assert_allclose(resized, np.stack([2 * r + c, -r + 3 * c + 1], -1) / 3.0,
                               atol=1e-5)
    # Arbitrary values, against the separable reference, growing and shrinking.
    rng = np.random.default_rng(1)
    grid = rng.normal(size=(5, 5, 3)).astype(np.float32)
    posemb = np.concatenate([rng.normal(size=(1, 1, 3)), grid.reshape(1, 25, 3)], axis=1)
    for side in (3, 9):
        resized = vit.resize_position_embedding(posemb, (side, side))[0, 1:]
        np.testing.assert_allclose(resized.reshape(side, side, 3),
                                   corner_aligned_bilinear(grid, side, side), atol=1e-5)


def tiny(**kwargs):
    fields = dict(num_classes=10, patch_size=4, num_layers=3, num_heads=2, d_model=16,
                  mlp_dim=32)
    return ViT(**{**fields, **kwargs})


def images(batch=2, size=16, channels=1, seed=0):
    return np.random.default_rng(seed).normal(size=(batch, size, size, channels)).astype(
        np.float32)


def dig(tree, keys):
    for key in keys:
        tree = tree[key]
    return tree


@pytest.mark.slow
def test_adapt_params_for_fine_tuning_at_another_size():
    source = tiny(representation_size=16)
    params = source.init(jax.random.key(0), images(1, 16))["params"]
    target = tiny(num_classes=5)
    wanted = jax.eval_shape(target.init, jax.random.key(0), images(1, 32))["params"]
    adapted = vit.adapt_params(params, wanted)
    assert "pre_logits" not in adapted
    assert adapted["encoder"]["pos_embedding"].shape == (1, 1 + 8 * 8, 16)
    assert adapted["head"]["kernel"].shape == (16, 5) and not np.any(adapted["head"]["kernel"])
    kept = ("encoder", "transformer", "block_1", "mlp", "fc", "kernel")
    np.testing.assert_array_equal(dig(adapted, kept), dig(params, kept))
    logits = target.apply({"params": adapted}, images(2, 32))
    assert logits.shape == (2, 5)


def test_attention_weights_are_sown_and_rows_sum_to_one():
    model = tiny()
    x = images(3)
    params = model.init(jax.random.key(0), x)["params"]
    logits, state = model.apply({"params": params}, x, mutable=["intermediates"])
    layers = collect_attention(state["intermediates"])
    assert len(layers) == 3
    for weights in layers:
        assert weights.shape == (3, 2, 17, 17)  # [batch, heads, 1 + 16 patches, same]
        assert np.all(weights >= 0)
        np.testing.assert_allclose(weights.sum(-1), 1.0, atol=1e-5)
    np.testing.assert_allclose(logits, model.apply({"params": params}, x), atol=1e-6)


def test_scanned_layers_give_the_same_attention():
    x = images(2)
    looped, scanned = tiny(), tiny(scan_layers=True)
    params = looped.init(jax.random.key(0), x)["params"]
    blocks = params["encoder"]["transformer"]
    stacked = jax.tree.map(lambda *leaves: jnp.stack(leaves),
                           *[blocks[f"block_{i}"] for i in range(3)])
    scan_params = jax.tree.map(lambda a: a, params)
    scan_params["encoder"]["transformer"] = {"layers": stacked,
                                             "final_norm": blocks["final_norm"]}
    out_loop, state_loop = looped.apply({"params": params}, x, mutable=["intermediates"])
    out_scan, state_scan = scanned.apply({"params": scan_params}, x, mutable=["intermediates"])
    np.testing.assert_allclose(out_scan, out_loop, atol=1e-5)
    for a, b in zip(collect_attention(state_loop["intermediates"]),
                    collect_attention(state_scan["intermediates"]), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-6)


def test_encode_returns_tokens_and_pooled_class_token():
    model = tiny()
    x = images(2)
    params = model.init(jax.random.key(0), x)["params"]
    rng = np.random.default_rng(3)  # A non-zero head, so that the logits depend on it.
    params["head"] = {"kernel": jnp.asarray(rng.normal(size=(16, 10)), jnp.float32),
                      "bias": jnp.asarray(rng.normal(size=10), jnp.float32)}
    tokens, pooled = model.apply({"params": params}, x, method=ViT.encode)
    assert tokens.shape == (2, 17, 16) and pooled.shape == (2, 16)
    np.testing.assert_array_equal(pooled, tokens[:, 0])
    logits = model.apply({"params": params}, x)
    np.testing.assert_allclose(
        logits, pooled @ params["head"]["kernel"] + params["head"]["bias"], atol=1e-5)
    # The tower alone, with the classifier's encoder parameters.
    encoder = ViTEncoder(patch_size=4, num_layers=3, num_heads=2, d_model=16, mlp_dim=32)
    alone, _ = encoder.apply({"params": params["encoder"]}, x)
    np.testing.assert_allclose(alone, tokens, atol=1e-6)


def test_gap_pooling_has_no_class_token_and_averages():
    model = tiny(pool_type="gap")
    x = images(2)
    params = model.init(jax.random.key(0), x)["params"]
    assert "cls" not in params["encoder"]
    assert params["encoder"]["pos_embedding"].shape == (1, 16, 16)
    tokens, pooled = model.apply({"params": params}, x, method=ViT.encode)
    assert tokens.shape == (2, 16, 16)
    np.testing.assert_allclose(pooled, tokens.mean(axis=1), atol=1e-6)


def test_initialisation_and_head_start_at_zero():
    model = tiny(representation_size=8)
    params = model.init(jax.random.key(0), images(1))["params"]
    assert not np.any(params["encoder"]["cls"]) and not np.any(params["head"]["kernel"])
    assert params["pre_logits"]["kernel"].shape == (16, 8)
    posemb = np.asarray(params["encoder"]["pos_embedding"])
    assert abs(posemb.std() - 0.02) < 0.004
    logits = model.apply({"params": params}, images(2))
    np.testing.assert_array_equal(logits, 0.0)  # Zero head: uniform predictions at start.


def test_dropout_only_in_training():
    model = tiny(dropout_rate=0.5)
    x = images(2)
    params = model.init(jax.random.key(0), x)["params"]
    params["head"]["kernel"] = jnp.ones_like(params["head"]["kernel"])
    evaluated = [model.apply({"params": params}, x) for _ in range(2)]
    np.testing.assert_array_equal(evaluated[0], evaluated[1])
    trained = [model.apply({"params": params}, x, train=True, rngs={"dropout": jax.random.key(k)})
               for k in range(2)]
    assert not np.allclose(trained[0], trained[1])


def test_mlp_uses_exact_gelu():
    x = jnp.linspace(-3, 3, 13)
    exact = 0.5 * x * (1 + jax.scipy.special.erf(x / np.sqrt(2)))
    np.testing.assert_allclose(vit.gelu_exact(x), exact, atol=1e-6)
    assert not np.allclose(vit.gelu_exact(x), jax.nn.gelu(x, approximate=True), atol=1e-5)


def model_config(**overrides):
    fields = dict(name="vit", variant="", patch_size=4, num_layers=2, num_heads=2, d_model=16,
                  mlp_dim=32, pool_type="tok", representation_size=0, dropout_rate=0.0,
                  attention_dropout_rate=0.0)
    return ml_collections.ConfigDict({**fields, **overrides})


def test_build_variants_and_errors():
    model = vit.build(model_config(variant="S/16"), num_classes=7, image_shape=(32, 32, 3),
                      dtype=jnp.float32, remat=False)
    assert (model.d_model, model.num_layers, model.num_heads, model.mlp_dim, model.patch_size) == (
        384, 12, 6, 1536, 16)
    model = vit.build(model_config(), num_classes=10, image_shape=(28, 28, 1),
                      dtype=jnp.float32, remat=True)
    assert (model.patch_size, model.d_model, model.remat) == (4, 16, True)
    with pytest.raises(ValueError, match="not a multiple of the patch size 16"):
        vit.build(model_config(variant="B/16"), num_classes=10, image_shape=(28, 28, 1),
                  dtype=jnp.float32, remat=False)
    with pytest.raises(ValueError, match="unknown pool_type"):
        vit.build(model_config(pool_type="max"), num_classes=10, image_shape=(28, 28, 1),
                  dtype=jnp.float32, remat=False)
    with pytest.raises(ValueError, match="not divisible by 3 heads"):
        vit.build(model_config(num_heads=3), num_classes=10, image_shape=(28, 28, 1),
                  dtype=jnp.float32, remat=False)


def test_bfloat16_compute_keeps_float32_params_and_logits():
    model = tiny(dtype=jnp.bfloat16)
    x = images(2)
    params = model.init(jax.random.key(0), x)["params"]
    assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(params))
    assert model.apply({"params": params}, x).dtype == jnp.float32
