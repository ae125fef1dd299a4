"""ResNet backbones: torchvision's parameter counts and names, strides, frozen BatchNorm."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

from jaxformer.models import resnet
from jaxformer.models.resnet import Bottleneck, FrozenBatchNorm

# torchvision's resnet{18,34,50,101} without `fc`, BatchNorm scale and shift included
# (torchvision: 11,689,512, 21,797,672, 25,557,032 and 44,549,160 with the 1000-class fc).
TORCHVISION_COUNTS = {"resnet18": 11_176_512, "resnet34": 21_284_672,
                      "resnet50": 23_508_032, "resnet101": 42_500_160}


def shapes(variant, image_shape=(224, 224, 3)):
    model = resnet.resnet(variant)
    images = jnp.zeros((1, *image_shape))
    variables = jax.eval_shape(model.init, jax.random.key(0), images)
    return model, variables["params"], jax.eval_shape(model.apply, variables, images)


def flat(params):
    return {"/".join(k): v for k, v in traverse_util.flatten_dict(params).items()}


@pytest.mark.parametrize("variant", list(TORCHVISION_COUNTS))
def test_parameter_counts_match_torchvision(variant):
    _, params, _ = shapes(variant)
    counts = {"all": 0, "statistics": 0}
    for path, leaf in flat(params).items():
        counts["all"] += math.prod(leaf.shape)
        if path.endswith(("/mean", "/var")):
            counts["statistics"] += math.prod(leaf.shape)
    assert counts["all"] - counts["statistics"] == TORCHVISION_COUNTS[variant]
    batchnorm_channels = {"resnet18": 4_800, "resnet34": 8_512, "resnet50": 26_560,
                          "resnet101": 52_672}[variant]
    assert counts["statistics"] == 2 * batchnorm_channels


def test_torchvision_names_and_layouts():
    _, params, _ = shapes("resnet50")
    paths = flat(params)
    assert paths["conv1/kernel"].shape == (7, 7, 3, 64)
    assert {p for p in paths if p.startswith("bn1/")} == {"bn1/scale", "bn1/bias", "bn1/mean",
                                                          "bn1/var"}
    block = {p.removeprefix("layer2/block_0/"): v.shape for p, v in paths.items()
             if p.startswith("layer2/block_0/") and p.endswith("kernel")}
    assert block == {"conv1/kernel": (1, 1, 256, 128), "conv2/kernel": (3, 3, 128, 128),
                     "conv3/kernel": (1, 1, 128, 512), "downsample/conv/kernel": (1, 1, 256, 512)}
    assert "layer2/block_1/downsample/conv/kernel" not in paths
    assert "layer1/block_0/downsample/bn/var" in paths  # 64 -> 256 channels at stride 1.
    convs = [p for p in paths if p.endswith("/kernel")]
    norms = [p for p in paths if p.endswith("/scale")]
    assert len(convs) == len(norms) == 53  # torchvision's resnet50: 53 conv + 53 bn.
    assert all(p.rsplit("/", 2)[-2].startswith("bn") for p in norms)
    assert sorted({p.split("/")[0] for p in paths}) == ["bn1", "conv1", "layer1", "layer2",
                                                       "layer3", "layer4"]


def test_bottleneck_strides_on_the_3x3_convolution():
    """ResNet v1.5 (torchvision): the 1x1 reduction keeps the resolution, the 3x3 halves it."""
    x = jnp.zeros((1, 16, 16, 64))
    block = Bottleneck(32, strides=2)
    variables = jax.eval_shape(block.init, jax.random.key(0), x)
    _, state = jax.eval_shape(lambda v: block.apply(v, x, capture_intermediates=True,
                                                    mutable=["intermediates"]), variables)
    outputs = {name: value["__call__"][0].shape
               for name, value in state["intermediates"].items() if name != "__call__"}
    assert outputs["conv1"] == (1, 16, 16, 32)
    assert outputs["conv2"] == (1, 8, 8, 32)
    assert outputs["conv3"] == outputs["downsample"] == (1, 8, 8, 128)


@pytest.mark.parametrize("variant,image_shape,expected", [
    ("resnet50", (224, 224, 3), (7, 7, 2048)),
    ("resnet50", (100, 70, 3), (4, 3, 2048)),  # ceil(H / 32) x ceil(W / 32).
    ("resnet18", (800, 1216, 3), (25, 38, 512)),
    ("tiny", (64, 64, 3), (8, 8, 64)),
    ("tiny", (60, 50, 3), (8, 7, 64)),
])
def test_output_shape_and_stride(variant, image_shape, expected):
    model, _, features = shapes(variant, image_shape)
    assert features.shape == (1, *expected)
    assert model.num_features == expected[-1]
    assert math.ceil(image_shape[0] / model.stride) == expected[0]
    assert model.stride == (8 if variant == "tiny" else 32)


def test_frozen_batchnorm_is_detrs_formula_and_learns_no_statistics():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 3, 3, 5)).astype(np.float32)
    params = {"scale": rng.normal(size=5), "bias": rng.normal(size=5),
              "mean": rng.normal(size=5), "var": rng.uniform(0.1, 2.0, size=5)}
    params = {k: jnp.asarray(v, jnp.float32) for k, v in params.items()}
    norm = FrozenBatchNorm()
    out = norm.apply({"params": params}, x)
    expected = ((x - params["mean"]) / np.sqrt(params["var"] + 1e-5) * params["scale"]
                + params["bias"])
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)

    grads = jax.grad(lambda p: norm.apply({"params": p}, x).sum())(params)
    assert not np.any(grads["mean"]) and not np.any(grads["var"])
    assert np.all(grads["scale"] != 0) and np.all(grads["bias"] != 0)

    init = norm.init(jax.random.key(0), x)["params"]  # The identity, up to eps.
    np.testing.assert_allclose(norm.apply({"params": init}, x), x / np.sqrt(1 + 1e-5),
                               rtol=1e-6)


@pytest.mark.slow
def test_tiny_forward_is_finite_and_unknown_variant_fails():
    model = resnet.resnet("tiny")
    images = jax.random.normal(jax.random.key(0), (2, 64, 64, 3))
    variables = model.init(jax.random.key(1), images)
    features = model.apply(variables, images)
    assert features.shape == (2, 8, 8, 64) and bool(jnp.isfinite(features).all())
    assert float(features.std()) > 0
    with pytest.raises(ValueError, match="unknown ResNet variant 'resnet152'"):
        resnet.resnet("resnet152")


# torchvision's counts with the 1000-class fc (statistics not counted), per variant.
TORCHVISION_CLASSIFIER_COUNTS = {"resnet18": 11_689_512, "resnet34": 21_797_672,
                                 "resnet50": 25_557_032, "resnet101": 44_549_160}


@pytest.mark.parametrize("variant", list(TORCHVISION_CLASSIFIER_COUNTS))
def test_classifier_counts_match_torchvision(variant):
    model = resnet.ResNetClassifier(variant, num_classes=1000)
    params = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 224, 224, 3)))
    counts = {p: math.prod(x.shape) for p, x in flat(params["params"]).items()}
    assert sorted({p.split("/")[0] for p in counts}) == ["backbone", "fc"]
    assert sum(n for p, n in counts.items()
               if not p.endswith(("/mean", "/var"))) == TORCHVISION_CLASSIFIER_COUNTS[variant]


def test_classifier_is_the_mean_of_the_features_through_fc():
    model = resnet.ResNetClassifier("tiny", num_classes=5)
    images = jax.random.normal(jax.random.key(1), (2, 32, 32, 3))
    variables = model.init(jax.random.key(0), images)
    features = resnet.resnet("tiny").apply(
        {"params": variables["params"]["backbone"]}, images)
    fc = variables["params"]["fc"]
    expected = features.mean(axis=(1, 2)) @ fc["kernel"] + fc["bias"]
    np.testing.assert_allclose(model.apply(variables, images), expected, rtol=1e-5, atol=1e-5)
