"""DETR: Hugging Face `DetrForObjectDetection` <-> `models.detr` (`configs/detr/coco.py`).

A checkpoint's ResNet backbone comes in one of two layouts, both read:

- transformers' `ResNetBackbone` (`backbone_config` of `model_type` "resnet"), what
  transformers saves and what an export writes:
  `model.backbone.conv_encoder.model.embedder.embedder.{convolution,normalization}`,
  `...encoder.stages.{s}.layers.{i}.layer.{j}.*`, `...layers.{i}.shortcut.*`;
- timm's (torchvision's names), as the published checkpoints hold it (`use_timm_backbone`,
  `backbone` "resnet50" or "resnet101", e.g. facebook/detr-resnet-50):
  `model.backbone.conv_encoder.model.{conv1,bn1,layer{s}.{i}.conv{j},...,downsample.{0,1}}`.

BatchNorm statistics (`running_mean`, `running_var`, buffers there) are parameters here
(`models.resnet.FrozenBatchNorm`); `num_batches_tracked` is ignored. Each transformer layer's
separate `q_proj`, `k_proj`, `v_proj` become the fused `attention/qkv` (the decoder's
cross-attention: `query` and the fused `kv`); `out_proj` is `out`, `fc1`/`fc2` are
`mlp/fc`/`mlp/proj`, the layer norms `attention_norm`, `cross_attention_norm`, `mlp_norm`.
Positions enter as in Hugging Face's model (sine positions of the feature map's mask, added
to queries and keys; object queries added to the decoder's queries), so the logits and boxes
of the last decoder layer are Hugging Face's. The class names are `id2label`'s
(`data.class_names` where they are not COCO's).

With `auxiliary_loss` true, transformers 5's decoder feeds each layer the normalised output
of the one before; DETR (and this model) normalise only the predictions. Exports write
`auxiliary_loss` false, under which the two agree.
"""

from __future__ import annotations

import re

import ml_collections
import numpy as np

from jaxformer.data import coco_detection
from jaxformer.errors import UserError
from jaxformer.models import detr, resnet
from jaxformer.weights import data_spec, hf_files
from jaxformer.weights import rules as maps

MODEL_TYPES = ("detr",)
MODEL_NAMES = ("detr",)
IGNORED = (r".*\.num_batches_tracked",)
OPTIONAL: dict[str, str] = {}  # Every part is in every checkpoint.
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)

_BACKBONE = "model.backbone.conv_encoder.model"
# timm's ResNets that are torchvision's (stride on the 3x3 convolution).
_TIMM_RESNETS = ("resnet18", "resnet34", "resnet50", "resnet101")
_RESNET_DEFAULTS = dict(embedding_size=64, hidden_sizes=[256, 512, 1024, 2048],
                        depths=[3, 4, 6, 3], layer_type="bottleneck", hidden_act="relu",
                        downsample_in_first_stage=False, downsample_in_bottleneck=False)


def base_config(hf_config: dict) -> str:
    del hf_config
    return "configs/detr/coco.py"


def _resnet_fields(variant: str) -> dict:
    """transformers' `ResNetConfig` fields of the `resnet.VARIANTS` entry `variant`."""
    spec = resnet.VARIANTS[variant]
    expansion = resnet.EXPANSION[spec["block"]]
    return dict(embedding_size=spec["width"], layer_type=spec["block"],
                depths=list(spec["stage_sizes"]),
                hidden_sizes=[spec["width"] * 2**s * expansion
                              for s in range(len(spec["stage_sizes"]))])


def backbone_of(hf_config: dict) -> str:
    """The `resnet.VARIANTS` name of the checkpoint's backbone."""
    backbone = hf_config.get("backbone_config")
    if hf_config.get("dilation"):
        raise UserError("dilation (DETR-DC5) is not supported")
    if backbone is None and hf_config.get("use_timm_backbone", True):
        backbone = {"model_type": "timm_backbone",
                    "backbone": hf_config.get("backbone") or "resnet50"}
    if not isinstance(backbone, dict):
        raise UserError("no backbone_config, and use_timm_backbone is false")
    if backbone.get("model_type") == "timm_backbone":
        name = backbone.get("backbone")
        if name not in _TIMM_RESNETS:
            raise UserError(f"timm backbone {name!r} is not supported; supported: "
                            f"{', '.join(_TIMM_RESNETS)}")
        return name
    if backbone.get("model_type") != "resnet":
        raise UserError(f"backbone {backbone.get('model_type')!r} is not supported (ResNets "
                        "only)")
    fields = {**_RESNET_DEFAULTS, **backbone}
    for key in ("hidden_act", "downsample_in_first_stage", "downsample_in_bottleneck"):
        if fields[key] != _RESNET_DEFAULTS[key]:
            raise UserError(f"backbone_config.{key}={fields[key]!r} is not supported")
    stages = len(fields["depths"])
    last = (fields.get("out_features") or [f"stage{stages}"])[-1]
    if last != f"stage{stages}":
        raise UserError(f"backbone_config.out_features ends at {last!r}; DETR here reads the "
                        f"last stage, stage{stages}")
    wanted = dict(embedding_size=fields["embedding_size"], layer_type=fields["layer_type"],
                  depths=list(fields["depths"]), hidden_sizes=list(fields["hidden_sizes"]))
    for variant in resnet.VARIANTS:
        if _resnet_fields(variant) == wanted:
            return variant
    raise UserError(f"ResNet backbone {wanted} matches none of models.resnet.VARIANTS "
                    f"({', '.join(resnet.VARIANTS)})")


def _class_names(hf_config: dict) -> tuple[str, ...]:
    id2label = hf_config.get("id2label")
    if not id2label:
        return tuple(f"LABEL_{i}" for i in range(int(hf_config.get("num_labels", 2))))
    ids = sorted(int(i) for i in id2label)
    if ids != list(range(len(ids))):
        raise UserError(f"id2label ids are not 0..{len(ids) - 1}")
    return tuple(str(id2label[str(i)]) for i in ids)


def configure(config: ml_collections.ConfigDict, hf_config: dict) -> None:
    """The model's sizes and the class names of `config.json`; what this model cannot
    compute (learned positions, another activation, DC5, other backbones) is refused."""
    expected = dict(position_embedding_type="sine", activation_function="relu",
                    num_channels=3)
    for key, value in expected.items():
        if hf_config.get(key, value) != value:
            raise UserError(f"{key}={hf_config[key]!r} is not supported (only {value!r})")
    for key in ("attention_heads", "ffn_dim"):
        encoder, decoder = (hf_config.get(f"{side}_{key}", 8 if key == "attention_heads"
                                          else 2048) for side in ("encoder", "decoder"))
        if encoder != decoder:
            raise UserError(f"encoder_{key} {encoder} != decoder_{key} {decoder}: one value "
                            "serves both here")
    variant = backbone_of(hf_config)
    config.model.update(dict(
        variant="", backbone=variant, d_model=hf_config.get("d_model", 256),
        num_heads=hf_config.get("encoder_attention_heads", 8),
        num_encoder_layers=hf_config.get("encoder_layers", 6),
        num_decoder_layers=hf_config.get("decoder_layers", 6),
        mlp_dim=hf_config.get("encoder_ffn_dim", 2048),
        num_queries=hf_config.get("num_queries", 100),
        dropout_rate=float(hf_config.get("dropout", 0.1))))
    names = _class_names(hf_config)
    if config.data.name == "coco_detection" and names != coco_detection.CLASS_NAMES:
        config.data.class_names = names


def hf_config(config: ml_collections.ConfigDict) -> dict:
    """`config.json` with transformers' ResNet backbone (loadable without timm)."""

    sizes = detr.model_sizes(config.model)
    spec = data_spec(config)
    channels = spec.image_shape[-1]
    stages = len(resnet.VARIANTS[sizes["backbone"]]["stage_sizes"])
    backbone = dict(model_type="resnet", **_resnet_fields(sizes["backbone"]),
                    hidden_act="relu", downsample_in_first_stage=False,
                    downsample_in_bottleneck=False, num_channels=channels,
                    out_features=[f"stage{stages}"], out_indices=[stages],
                    stage_names=["stem"] + [f"stage{s + 1}" for s in range(stages)])
    rate = float(config.model.get("dropout_rate", 0.1))
    out = dict(
        architectures=["DetrForObjectDetection"], model_type="detr", backbone_config=backbone,
        use_timm_backbone=False, num_channels=channels, d_model=sizes["d_model"],
        encoder_layers=sizes["num_encoder_layers"],
        decoder_layers=sizes["num_decoder_layers"],
        encoder_attention_heads=sizes["num_heads"],
        decoder_attention_heads=sizes["num_heads"], encoder_ffn_dim=sizes["mlp_dim"],
        decoder_ffn_dim=sizes["mlp_dim"], num_queries=sizes["num_queries"],
        activation_function="relu", dropout=rate, attention_dropout=rate,
        activation_dropout=rate, position_embedding_type="sine", dilation=False,
        auxiliary_loss=False, is_encoder_decoder=True, dtype="float32",
        id2label={str(i): name for i, name in enumerate(spec.class_names)},
        label2id={name: i for i, name in enumerate(spec.class_names)})
    task = config.task
    out["eos_coefficient"] = float(task.get("eos_coef", 0.1))
    for term, default in (("class", 1), ("bbox", 5), ("giou", 2)):
        weight = float(task.get(f"{term}_weight", default))
        cost = float(task.get(f"{term}_cost", weight))
        if weight.is_integer() and cost.is_integer():  # transformers has them as integers.
            out[f"{term}_cost"] = int(cost)
            if term != "class":
                out[f"{term}_loss_coefficient"] = int(weight)
    return out


def _batch_norm(hf: str, param: str) -> list[maps.Rule]:
    return [maps.copy(f"{hf}.{a}", f"{param}/{b}") for a, b in (
        ("weight", "scale"), ("bias", "bias"), ("running_mean", "mean"),
        ("running_var", "var"))]


def backbone_rules(variant: str) -> list[maps.Rule]:
    """The ResNet `variant`'s tensors, in transformers' layout."""
    spec = resnet.VARIANTS[variant]

    def conv_bn(hf: str, param: str, conv: str = "conv", bn: str = "bn") -> list[maps.Rule]:
        return (maps.conv(f"{_BACKBONE}.{hf}.convolution", f"backbone/{param}{conv}", bias=False)
                + _batch_norm(f"{_BACKBONE}.{hf}.normalization", f"backbone/{param}{bn}"))

    out = conv_bn("embedder.embedder", "", "conv1", "bn1")
    for s, blocks in enumerate(spec["stage_sizes"]):
        for i in range(blocks):
            hf, block = f"encoder.stages.{s}.layers.{i}", f"layer{s + 1}/block_{i}/"
            for j in range(2 if spec["block"] == "basic" else 3):
                out += conv_bn(f"{hf}.layer.{j}", block, f"conv{j + 1}", f"bn{j + 1}")
            if i == 0 and (s > 0 or spec["block"] == "bottleneck"):  # The shape changes.
                out += conv_bn(f"{hf}.shortcut", f"{block}downsample/")
    return out


def _timm_to_transformers(name: str) -> str:
    """`name` in transformers' layout if it is a backbone tensor in timm's, else itself."""
    prefix = f"{_BACKBONE}."
    rest = name[len(prefix):] if name.startswith(prefix) else ""
    kinds = {"conv": "convolution", "bn": "normalization"}
    stem = re.fullmatch(r"(conv|bn)1\.(\w+)", rest)
    if stem:
        return f"{prefix}embedder.embedder.{kinds[stem[1]]}.{stem[2]}"
    block = re.fullmatch(r"layer(\d+)\.(\d+)\.(conv|bn|downsample\.)(\d)\.(\w+)", rest)
    if block is None:
        return name
    stage, index, part, number, leaf = block.groups()
    if part == "downsample.":
        part = f"shortcut.{('convolution', 'normalization')[int(number)]}"
    else:
        part = f"layer.{int(number) - 1}.{kinds[part]}"
    return f"{prefix}encoder.stages.{int(stage) - 1}.layers.{index}.{part}.{leaf}"


def rename(tensors: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """A checkpoint whose backbone is in timm's layout (the published ones) in transformers'
    layout, which `rules` names; other tensors as they are."""
    return {_timm_to_transformers(name): array for name, array in tensors.items()}


def _conv_1x1_to_dense(weight: np.ndarray) -> maps.Arrays:
    return (weight[:, :, 0, 0].T,)


def _dense_to_conv_1x1(kernel: np.ndarray) -> maps.Arrays:
    return (kernel.T[:, :, None, None],)


def _layer(hf: str, param: str, *, cross: bool) -> list[maps.Rule]:
    out = (maps.fused_linear([f"{hf}.self_attn.{p}_proj" for p in "qkv"], f"{param}/attention/qkv")
           + maps.linear(f"{hf}.self_attn.out_proj", f"{param}/attention/out")
           + maps.layer_norm(f"{hf}.self_attn_layer_norm", f"{param}/attention_norm")
           + maps.linear(f"{hf}.fc1", f"{param}/mlp/fc")
           + maps.linear(f"{hf}.fc2", f"{param}/mlp/proj")
           + maps.layer_norm(f"{hf}.final_layer_norm", f"{param}/mlp_norm"))
    if cross:
        out += (maps.linear(f"{hf}.encoder_attn.q_proj", f"{param}/cross_attention/query")
                + maps.fused_linear([f"{hf}.encoder_attn.{p}_proj" for p in "kv"],
                                 f"{param}/cross_attention/kv")
                + maps.linear(f"{hf}.encoder_attn.out_proj", f"{param}/cross_attention/out")
                + maps.layer_norm(f"{hf}.encoder_attn_layer_norm",
                               f"{param}/cross_attention_norm"))
    return out


def export_params(workdir: str, params: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The parameters as they are: the export's layout is the model's."""
    del workdir
    return params


def rules(config: ml_collections.ConfigDict) -> list[maps.Rule]:
    """Every tensor of `DetrForObjectDetection` as transformers saves it."""
    sizes = detr.model_sizes(config.model)
    out = backbone_rules(sizes["backbone"])
    out += [maps.Rule(("model.input_projection.weight",), ("input_proj/kernel",),
                   _conv_1x1_to_dense, _dense_to_conv_1x1, "[:, :, 0, 0].T"),
            maps.copy("model.input_projection.bias", "input_proj/bias"),
            maps.copy("model.query_position_embeddings.weight", "query_embed")]
    for i in range(sizes["num_encoder_layers"]):
        out += _layer(f"model.encoder.layers.{i}", f"encoder/block_{i}", cross=False)
    for i in range(sizes["num_decoder_layers"]):
        out += _layer(f"model.decoder.layers.{i}", f"decoder/block_{i}", cross=True)
    out += maps.layer_norm("model.decoder.layernorm", "decoder/final_norm")
    out += maps.linear("class_labels_classifier", "class_embed")
    for i in range(3):
        out += maps.linear(f"bbox_predictor.layers.{i}", f"bbox_embed/layer_{i}")
    return out


def configure_from_dir(config: ml_collections.ConfigDict, hf_dir: str) -> None:
    """The normalisation and evaluation size of the image processor's config, if any: its
    `shortest_edge` becomes the largest of `data.scales` (the evaluation view), its
    `longest_edge` `data.max_size`."""
    processor = hf_files.read_image_processor(hf_dir)
    if processor is None:
        return
    mean, std = hf_files.image_normalisation(processor, IMAGENET_MEAN, IMAGENET_STD)
    config.data.update(mean=mean, std=std)
    size = processor.get("size") or {}
    if (processor.get("do_resize", True) and isinstance(size, dict)
            and {"shortest_edge", "longest_edge"} <= set(size)):
        shorter = int(size["shortest_edge"])
        scales = tuple(s for s in config.data.get("scales", ()) if s < shorter)
        config.data.update(scales=(*scales, shorter), max_size=int(size["longest_edge"]))


def import_tokenizer(hf_dir: str, assets_dir: str) -> list[str]:
    """Nothing: the image processor's settings are the data's (`configure_from_dir`)."""
    del hf_dir, assets_dir
    return []


def export_tokenizer(workdir: str, hf_dir: str) -> list[str]:
    """`preprocessor_config.json` of the run's evaluation view: a `DetrImageProcessor`
    resizing to the largest of the data's scales and normalising as the data does."""
    from jaxformer import registry
    from jaxformer.config import read_workdir_config

    config = read_workdir_config(workdir)
    view = registry.lookup("data", config.data.name).preprocess(config.data)  # Detection data.
    settings = dict(
        image_processor_type="DetrImageProcessor", format="coco_detection", do_resize=True,
        size={"shortest_edge": max(view.scales), "longest_edge": view.max_size},
        do_rescale=True, rescale_factor=1 / 255, do_normalize=True,
        image_mean=hf_files.per_channel(view.mean, view.channels),
        image_std=hf_files.per_channel(view.std, view.channels), do_pad=True)
    return [hf_files.write_image_processor(hf_dir, settings)]
