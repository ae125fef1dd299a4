"""ViT classifiers: Hugging Face `ViTForImageClassification` <-> `models.vit.ViT`.

The checkpoint's encoder, final LayerNorm and classifier on the [class] token are the model's
`encoder` and `head` (no pre-logits layer), with its LayerNorm epsilon (1e-12 in Hugging
Face's configs). A base `ViTModel` (the ImageNet-21k checkpoints) is read too: its pooler,
the pre-training head, is dropped and the head is new (zero, with the data's classes), ready
for fine-tuning (configs/vit/fashion_mnist_transfer.py). Images are the same pixels in either
layout: Hugging Face takes `[batch, C, H, W]`, jaxformer `[batch, H, W, C]`. An import starts
from configs/vit/imagenet.py at the checkpoint's image size; the checkpoint's classes must be
those of the config's data (1000 for ImageNet; `--config` names other data). The image
processor's `preprocessor_config.json`, when there is one, sets the data's normalisation
(`data.mean`, `data.std`) and evaluation resize; an export writes one (a `ViTImageProcessor`
that resizes to the image size) from the run's config. There is no tokenizer.
"""

from __future__ import annotations

import json
import os

import ml_collections
import numpy as np

from jaxformer.weights import data_spec, hf_files
from jaxformer.weights import rules as maps

MODEL_TYPES = ("vit",)
MODEL_NAMES = ("vit",)
# The pooler of a base `ViTModel` (e.g. google/vit-base-patch16-224-in21k) is its
# pre-training head; transfer drops it, as the paper does and `transformers` does.
IGNORED = (r"vit\.pooler\.dense\.(weight|bias)",)
OPTIONAL = {"head": "classifier."}  # A base model's new head is zero, as the model's init.
ARCHITECTURE = "ViTForImageClassification"
BASE_MODEL = "ViTModel"
BASE_CONFIG = "configs/vit/imagenet.py"


def base_config(hf_config: dict) -> str:
    del hf_config  # Every checkpoint starts from the ImageNet config.
    return BASE_CONFIG


def _side(hf_config: dict, key: str, default: int) -> int:
    """A square size of `config.json` (an int, or an equal [height, width] pair)."""
    value = hf_config.get(key, default)
    if isinstance(value, (list, tuple)):
        if len(value) != 2 or value[0] != value[1]:
            raise ValueError(f"{key} {value}: only square images and patches are supported")
        value = value[0]
    return int(value)


def configure(config: ml_collections.ConfigDict, hf_config: dict) -> None:
    architectures = hf_config.get("architectures") or [ARCHITECTURE]
    if ARCHITECTURE not in architectures and BASE_MODEL not in architectures:
        raise ValueError(f"architectures {architectures}: only {ARCHITECTURE} checkpoints "
                         f"(an encoder with a classifier on the [class] token) and base "
                         f"{BASE_MODEL}s (a new head) are read")
    if hf_config.get("hidden_act", "gelu") != "gelu":
        raise ValueError(f"hidden_act {hf_config['hidden_act']!r}: the ViT uses exact GELU "
                         "('gelu')")
    if not hf_config.get("qkv_bias", True):
        raise ValueError("qkv_bias false: the ViT's query, key and value have biases")
    d_model = hf_config.get("hidden_size", 768)
    heads = hf_config.get("num_attention_heads", 12)
    if hf_config.get("head_dim", d_model // heads) * heads != d_model:
        raise ValueError(f"head_dim {hf_config['head_dim']} x {heads} heads is not the "
                         f"width {d_model}")
    image_size = _side(hf_config, "image_size", 224)
    config.model.update(
        variant="", patch_size=_side(hf_config, "patch_size", 16),
        num_layers=hf_config.get("num_hidden_layers", 12), num_heads=heads, d_model=d_model,
        mlp_dim=hf_config.get("intermediate_size", 3072), pool_type="tok",
        representation_size=0, dropout_rate=hf_config.get("hidden_dropout_prob", 0.0),
        attention_dropout_rate=hf_config.get("attention_probs_dropout_prob", 0.0),
        layer_norm_epsilon=hf_config.get("layer_norm_eps", 1e-12), scan_layers=False)
    # Hugging Face's ViT image processor resizes straight to the image size (no crop).
    config.data.update(image_size=image_size, resize_size=0)
    spec = data_spec(config)
    channels = hf_config.get("num_channels", 3)
    if spec.image_shape[2] != channels:
        raise ValueError(f"num_channels {channels}: the data of the config "
                         f"({config.data.name}) has {spec.image_shape[2]}-channel images")
    if ARCHITECTURE not in architectures:
        return  # A base model: the head is new, with the data's classes.
    labels = hf_config.get("id2label") or {}
    num_labels = len(labels) or hf_config.get("num_labels", 2)
    if spec.num_classes != num_labels:
        raise ValueError(f"the checkpoint has {num_labels} classes, the data of the config "
                         f"({config.data.name}) {spec.num_classes}: give --config=FILE whose "
                         f"data has {num_labels} classes")


def configure_from_dir(config: ml_collections.ConfigDict, hf_dir: str) -> None:
    """The normalisation (and evaluation resize) of the image processor's config, if any."""
    processor = hf_files.read_image_processor(hf_dir)
    if processor is None:
        return
    mean, std = hf_files.image_normalisation(processor, (0.5,), (0.5,))  # ViTImageProcessor's
    config.data.update(mean=mean, std=std,
                       resample=hf_files.image_resampling(processor, "bilinear"))
    size = processor.get("size") or {}
    if (isinstance(size, dict) and "shortest_edge" in size
            and processor.get("do_center_crop", False)):
        config.data.resize_size = int(size["shortest_edge"])


def hf_config(config: ml_collections.ConfigDict) -> dict:
    from jaxformer.models.vit import parse_variant

    model = config.model
    if model.get("pool_type", "tok") != "tok":
        raise ValueError(f"pool_type {model.pool_type!r}: {ARCHITECTURE} classifies the "
                         "[class] token ('tok')")
    if model.get("representation_size", 0):
        raise ValueError(f"representation_size {model.representation_size}: "
                         f"{ARCHITECTURE} has no pre-logits layer")
    sizes = (parse_variant(model.variant) if model.get("variant", "") else
             dict(patch_size=model.patch_size, num_layers=model.num_layers,
                  num_heads=model.num_heads, d_model=model.d_model, mlp_dim=model.mlp_dim))
    spec = data_spec(config)
    height, width, channels = spec.image_shape
    if height != width:
        raise ValueError(f"image size {height}x{width}: only square images are exported")
    names = list(spec.class_names)
    if len(set(names)) != len(names):
        names = [f"LABEL_{i}" for i in range(len(names))]
    return {
        "architectures": [ARCHITECTURE],
        "model_type": "vit",
        "hidden_size": sizes["d_model"],
        "num_hidden_layers": sizes["num_layers"],
        "num_attention_heads": sizes["num_heads"],
        "intermediate_size": sizes["mlp_dim"],
        "hidden_act": "gelu",
        "hidden_dropout_prob": model.get("dropout_rate", 0.0),
        "attention_probs_dropout_prob": model.get("attention_dropout_rate", 0.0),
        "layer_norm_eps": model.get("layer_norm_epsilon", 1e-6),
        "image_size": height,
        "patch_size": sizes["patch_size"],
        "num_channels": channels,
        "qkv_bias": True,
        "encoder_stride": sizes["patch_size"],
        "initializer_range": 0.02,
        "id2label": {str(i): name for i, name in enumerate(names)},
        "label2id": {name: i for i, name in enumerate(names)},
        "dtype": "float32",
    }


_BARE_PREFIXES = ("embeddings.", "encoder.", "layernorm.", "pooler.")


def rename(tensors: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """A base `ViTModel`'s bare names (`embeddings.*`) -> the classifier's (`vit.*`)."""
    if any(name.startswith("vit.") for name in tensors):
        return tensors
    return {("vit." + name if name.startswith(_BARE_PREFIXES) else name): array
            for name, array in tensors.items()}


def export_params(workdir: str, params: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The parameters as they are: the export's layout is the model's."""
    del workdir
    return params


def rules(config: ml_collections.ConfigDict) -> list[maps.Rule]:
    from jaxformer.models.vit import parse_variant

    model = config.model
    num_layers = (parse_variant(model.variant)["num_layers"] if model.get("variant", "")
                  else model.num_layers)
    out = [maps.copy("vit.embeddings.cls_token", "encoder/cls"),
           maps.copy("vit.embeddings.position_embeddings", "encoder/pos_embedding"),
           *maps.conv("vit.embeddings.patch_embeddings.projection", "encoder/embedding")]
    for i in range(num_layers):
        hf, ours = f"vit.encoder.layer.{i}", f"encoder/transformer/block_{i}"
        out += [
            *maps.layer_norm(f"{hf}.layernorm_before", f"{ours}/attention_norm"),
            *maps.fused_linear([f"{hf}.attention.attention.{n}" for n in ("query", "key", "value")],
                            f"{ours}/attention/qkv"),
            *maps.linear(f"{hf}.attention.output.dense", f"{ours}/attention/out"),
            *maps.layer_norm(f"{hf}.layernorm_after", f"{ours}/mlp_norm"),
            *maps.linear(f"{hf}.intermediate.dense", f"{ours}/mlp/fc"),
            *maps.linear(f"{hf}.output.dense", f"{ours}/mlp/proj"),
        ]
    return out + [*maps.layer_norm("vit.layernorm", "encoder/transformer/final_norm"),
                  *maps.linear("classifier", "head")]


def import_tokenizer(hf_dir: str, assets_dir: str) -> list[str]:
    """Nothing: a ViT has no tokenizer, and the image processor's settings are in the
    config (`configure_from_dir`)."""
    del hf_dir, assets_dir
    return []


def export_tokenizer(workdir: str, hf_dir: str) -> list[str]:
    """The image processor of the run's evaluation: resize to the image size, then
    `(pixel / 255 - mean) / std` with the config's `data.mean` and `data.std`."""
    from jaxformer.config import read_workdir_config

    data = read_workdir_config(workdir).data
    with open(os.path.join(hf_dir, "config.json"), encoding="utf-8") as f:
        hf = json.load(f)
    channels, size = hf["num_channels"], hf["image_size"]
    processor = {
        "image_processor_type": "ViTImageProcessor",
        "do_resize": True,
        "size": {"height": size, "width": size},
        "resample": hf_files.pil_filter(data.get("resample", "bilinear")),
        "do_rescale": True,
        "rescale_factor": 1 / 255,
        "do_normalize": True,
        "image_mean": hf_files.per_channel(data.get("mean", (0.5,)), channels),
        "image_std": hf_files.per_channel(data.get("std", (0.5,)), channels),
    }
    return [hf_files.write_image_processor(hf_dir, processor)]
