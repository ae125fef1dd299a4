"""CLIP: Hugging Face `CLIPModel` (`model_type` "clip") <-> jaxformer `clip` workdirs.

Both towers, their bias-free projections and the temperature (`logit_scale`, stored as its
log) map one to one. The image tower's `post_layernorm` (applied to the class token) is the
stack's `final_norm` (applied to every token, then the class token pooled: the same numbers).
The text tower pools the first end-of-text token, the tokenizer's `<|endoftext|>`; the import
checks that `CLIPTextModel` pools the same one (the first `eos_token_id`, or with the legacy
`eos_token_id` 2 the largest token id, which must then be the end of text).

The tokenizer (`tokenizer.json`, or `vocab.json` and `merges.txt`) becomes the workdir's
caption tokenizer (`assets/caption_bpe.json`); images are preprocessed as CLIP's processor
does (shorter side resized with its filter, centre crop, and the mean and std of
`preprocessor_config.json`; else OpenAI's: bicubic, OpenAI's mean and std). The base config
is configs/clip/emoji.py with the checkpoint's sizes.

An export lays the vocabulary out as CLIP's, the start and end of text last: a vocabulary
trained here (special tokens first) is reordered, embedding rows and tokenizer ids alike, and
its `tokenizer.json` (byte-level BPE, not CLIP's "</w>" pieces) loads with `AutoTokenizer`,
which, like CLIP's tokenizer and unlike the run's, reads a text spelling "<|endoftext|>" as
the token. The export's `preprocessor_config.json` is the run's evaluation view.

The model clips the temperature at 100 (`exp(logit_scale)`; OpenAI's checkpoints hold exactly
log(100)); transformers does not, so a checkpoint with a larger one gives smaller logits here.
"""

from __future__ import annotations

import json
import os

import ml_collections
import numpy as np

from jaxformer.data import caption_bpe
from jaxformer.errors import UserError
from jaxformer.models import clip as clip_model
from jaxformer.weights import data_spec, hf_files
from jaxformer.weights.rules import Rule, conv, copy, embedding, fused_linear, layer_norm, linear

MODEL_TYPES = ("clip",)
MODEL_NAMES = ("clip",)
IGNORED = (r"(text|vision)_model\.embeddings\.position_ids",)  # Buffers of old checkpoints.
OPTIONAL: dict[str, str] = {}  # Every part is in every checkpoint.

LEGACY_EOS_ID = 2  # Older configs': `CLIPTextModel` then pools the largest token id.
OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)
RESAMPLE = "bicubic"  # CLIPImageProcessor's default filter, as OpenAI's preprocessing.
TOKENIZER_FILE, VOCAB_FILE, MERGES_FILE = "tokenizer.json", "vocab.json", "merges.txt"
TOKENIZER_CONFIG_FILE = "tokenizer_config.json"

# `CLIPTextConfig` / `CLIPVisionConfig` defaults (transformers), for fields a config.json omits.
TEXT_DEFAULTS = dict(vocab_size=49408, hidden_size=512, intermediate_size=2048,
                     num_hidden_layers=12, num_attention_heads=8, max_position_embeddings=77,
                     hidden_act="quick_gelu", layer_norm_eps=1e-5, eos_token_id=49407)
VISION_DEFAULTS = dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                       num_attention_heads=12, num_channels=3, image_size=224, patch_size=32,
                       hidden_act="quick_gelu", layer_norm_eps=1e-5)
CHANNELS = 3


def towers(hf_config: dict) -> tuple[dict, dict]:
    """The text and vision configs of a `CLIPConfig` dict, defaults filled in (an old
    config's `*_config_dict` replaces its `*_config`, as transformers reads them)."""
    out = []
    for tower, defaults in (("text", TEXT_DEFAULTS), ("vision", VISION_DEFAULTS)):
        key = f"{tower}_config"
        if hf_config.get(f"{key}_dict") is not None:
            key = f"{key}_dict"
        part = hf_config.get(key) or {}
        if not isinstance(part, dict):
            raise ValueError(f"{key} is not an object")
        out.append({**defaults, **part})
    return out[0], out[1]


def _square(value, name: str) -> int:
    if isinstance(value, (list, tuple)):
        if len(value) != 2 or value[0] != value[1]:
            raise ValueError(f"vision_config.{name} {value} is not square")
        value = value[0]
    return value


def base_config(hf_config: dict) -> str:
    return "configs/clip/emoji.py"


def configure(config: ml_collections.ConfigDict, hf_config: dict) -> None:
    """The model's sizes, activation and LayerNorm epsilon, and the data's image size,
    normalisation, context length and vocabulary size, from `config.json`."""
    text, vision = towers(hf_config)
    if text["hidden_act"] != vision["hidden_act"]:
        raise ValueError(f"the towers' activations differ ({text['hidden_act']!r}, "
                         f"{vision['hidden_act']!r}); this model has one for both")
    if text["hidden_act"] not in clip_model.ACTIVATIONS:
        raise ValueError(f"hidden_act {text['hidden_act']!r} is not one of "
                         f"{', '.join(clip_model.ACTIVATIONS)}")
    if text["layer_norm_eps"] != vision["layer_norm_eps"]:
        raise ValueError(f"the towers' layer_norm_eps differ ({text['layer_norm_eps']}, "
                         f"{vision['layer_norm_eps']}); this model has one for both")
    if vision["num_channels"] != CHANNELS:
        raise ValueError(f"vision_config.num_channels is {vision['num_channels']}; the image "
                         f"data has {CHANNELS} channels")
    sizes = dict(
        embed_dim=hf_config.get("projection_dim", 512),
        patch_size=_square(vision["patch_size"], "patch_size"),
        vision_width=vision["hidden_size"], vision_layers=vision["num_hidden_layers"],
        vision_heads=vision["num_attention_heads"], vision_mlp_dim=vision["intermediate_size"],
        text_width=text["hidden_size"], text_layers=text["num_hidden_layers"],
        text_heads=text["num_attention_heads"], text_mlp_dim=text["intermediate_size"])
    variant = next((f"{name}/{sizes['patch_size']}" for name in ("B", "L")
                    if clip_model.parse_variant(f"{name}/{sizes['patch_size']}") == sizes), "")
    config.model.update(name="clip", variant=variant, pool_type="tok", loss="softmax",
                        activation=text["hidden_act"], dropout_rate=0.0,
                        attention_dropout_rate=0.0, scan_layers=False,
                        layer_norm_epsilon=float(text["layer_norm_eps"]), **sizes)
    config.task.loss = "softmax"
    config.data.update(image_size=_square(vision["image_size"], "image_size"),
                       context_length=text["max_position_embeddings"],
                       vocab_size=text["vocab_size"], crop="none", flip=False,
                       mean=OPENAI_MEAN, std=OPENAI_STD, resample=RESAMPLE)


def configure_from_dir(config: ml_collections.ConfigDict, hf_dir: str) -> None:
    """The normalisation and evaluation resize of the image processor, if the directory has
    one."""
    processor = hf_files.read_image_processor(hf_dir)
    if processor is None:
        return
    mean, std = hf_files.image_normalisation(processor, OPENAI_MEAN, OPENAI_STD)
    config.data.update(mean=mean, std=std,
                       resample=hf_files.image_resampling(processor, RESAMPLE))
    size = processor.get("size")
    if (isinstance(size, dict) and "shortest_edge" in size
            and processor.get("do_center_crop", True)):
        shorter = int(size["shortest_edge"])
        config.data.resize_size = 0 if shorter == config.data.image_size else shorter


def hf_config(config: ml_collections.ConfigDict) -> dict:
    """The `config.json` of a CLIP workdir's `CLIPModel`; the start and end of text are the
    vocabulary's last two tokens (CLIP's layout, `export_order`)."""
    model = config.model
    if model.get("pool_type", "tok") != "tok" or model.get("loss", "softmax") != "softmax":
        raise ValueError("transformers' CLIPModel pools the class token and has no logit "
                         "bias: model.pool_type must be 'tok' and model.loss 'softmax'")
    sizes = clip_model.model_sizes(model)
    spec = data_spec(config)
    height, width, channels = spec.image_shape
    if height != width:
        raise ValueError(f"transformers' CLIP takes square images, not {height}x{width}")
    common = dict(hidden_act=model.get("activation", "quick_gelu"),
                  layer_norm_eps=clip_model.layer_norm_epsilon(model), attention_dropout=0.0,
                  projection_dim=sizes["embed_dim"])
    vocab = spec.vocab_size
    return {
        "architectures": ["CLIPModel"], "model_type": "clip",
        "projection_dim": sizes["embed_dim"], "logit_scale_init_value": 2.6592,
        "dtype": "float32",
        "text_config": dict(
            common, vocab_size=vocab, hidden_size=sizes["text_width"],
            intermediate_size=sizes["text_mlp_dim"], num_hidden_layers=sizes["text_layers"],
            num_attention_heads=sizes["text_heads"],
            max_position_embeddings=spec.context_length, bos_token_id=vocab - 2,
            eos_token_id=vocab - 1, pad_token_id=vocab - 1),
        "vision_config": dict(
            common, hidden_size=sizes["vision_width"], intermediate_size=sizes["vision_mlp_dim"],
            num_hidden_layers=sizes["vision_layers"], num_attention_heads=sizes["vision_heads"],
            num_channels=channels, image_size=height, patch_size=sizes["patch_size"]),
    }


def _unsqueeze(*leading: int):
    def to_params(x: np.ndarray) -> tuple[np.ndarray]:
        return (x.reshape(*leading, *x.shape),)
    return to_params


def _squeeze(count: int):
    def to_hf(x: np.ndarray) -> tuple[np.ndarray]:
        return (x.reshape(x.shape[count:]),)
    return to_hf


def _blocks(hf: str, param: str, layers: int) -> list[Rule]:
    rules = []
    for i in range(layers):
        src, dst = f"{hf}.layers.{i}", f"{param}/block_{i}"
        rules += fused_linear([f"{src}.self_attn.{p}_proj" for p in "qkv"],
                              f"{dst}/attention/qkv")
        rules += linear(f"{src}.self_attn.out_proj", f"{dst}/attention/out")
        rules += layer_norm(f"{src}.layer_norm1", f"{dst}/attention_norm")
        rules += linear(f"{src}.mlp.fc1", f"{dst}/mlp/fc")
        rules += linear(f"{src}.mlp.fc2", f"{dst}/mlp/proj")
        rules += layer_norm(f"{src}.layer_norm2", f"{dst}/mlp_norm")
    return rules


def rename(tensors: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The checkpoints' names are the rules' own."""
    return tensors


def rules(config: ml_collections.ConfigDict) -> list[Rule]:
    if config.model.get("scan_layers", False):
        raise UserError("Hugging Face weights map to per-block parameters: set "
                        "model.scan_layers=False")
    sizes = clip_model.model_sizes(config.model)
    vision, text = "vision_model", "text_model"
    return [
        Rule((f"{vision}.embeddings.class_embedding",), ("image_encoder/cls",),
             _unsqueeze(1, 1), _squeeze(2), "[d] -> [1, 1, d]"),
        *conv(f"{vision}.embeddings.patch_embedding", "image_encoder/embedding", bias=False),
        Rule((f"{vision}.embeddings.position_embedding.weight",),
             ("image_encoder/pos_embedding",), _unsqueeze(1), _squeeze(1), "[n, d] -> [1, n, d]"),
        *layer_norm(f"{vision}.pre_layrnorm", "image_encoder/pre_norm"),
        *_blocks(f"{vision}.encoder", "image_encoder/transformer", sizes["vision_layers"]),
        *layer_norm(f"{vision}.post_layernorm", "image_encoder/transformer/final_norm"),
        *linear("visual_projection", "image_projection", bias=False),
        embedding(f"{text}.embeddings.token_embedding", "text_encoder/token_embedding"),
        embedding(f"{text}.embeddings.position_embedding", "text_encoder/position_embedding"),
        *_blocks(f"{text}.encoder", "text_encoder/transformer", sizes["text_layers"]),
        *layer_norm(f"{text}.final_layer_norm", "text_encoder/transformer/final_norm"),
        *linear("text_projection", "text_projection", bias=False),
        copy("logit_scale", "log_scale"),
    ]


def read_tokenizer(hf_dir: str) -> tuple[caption_bpe.CaptionTokenizer, list[str]]:
    """The tokenizer of `hf_dir` (`tokenizer.json`, else `vocab.json` and `merges.txt`) and
    the files it was read from."""
    path = os.path.join(hf_dir, TOKENIZER_FILE)
    vocab_path, merges_path = (os.path.join(hf_dir, n) for n in (VOCAB_FILE, MERGES_FILE))
    if not os.path.exists(path) and not (os.path.exists(vocab_path)
                                         and os.path.exists(merges_path)):
        raise UserError(f"{hf_dir} has no tokenizer ({TOKENIZER_FILE}, or {VOCAB_FILE} and "
                        f"{MERGES_FILE}): CLIP's text tower needs the one it was trained "
                        "with; copy it from the model's repository")
    try:
        if os.path.exists(path):
            with open(path, encoding="utf-8") as f:
                return caption_bpe.CaptionTokenizer.from_json(f.read()), [TOKENIZER_FILE]
        with open(vocab_path, encoding="utf-8") as f:
            vocab = json.load(f)
        with open(merges_path, encoding="utf-8") as f:
            merges = [tuple(line.rstrip("\n").split(" ")) for line in f
                      if line.strip() and not line.startswith("#version")]
        return caption_bpe.clip_bpe(vocab, merges), [VOCAB_FILE, MERGES_FILE]
    except Exception as e:  # noqa: BLE001 -- tokenizers raises plain Exceptions.
        raise UserError(f"cannot read the tokenizer of {hf_dir}: {e}") from None


def import_tokenizer(hf_dir: str, assets_dir: str) -> list[str]:
    """Writes the tokenizer as `assets/caption_bpe.json`, checked to fit the model: its size
    is the text vocabulary's and the text tower pools its end of text."""
    tokenizer, names = read_tokenizer(hf_dir)
    text, _ = towers(hf_files.read_config(hf_dir))
    if tokenizer.vocab_size != text["vocab_size"]:
        raise UserError(f"the tokenizer of {hf_dir} has {tokenizer.vocab_size} tokens, the "
                        f"model {text['vocab_size']}")
    eos = text["eos_token_id"]
    if eos == LEGACY_EOS_ID and tokenizer.eot_id != tokenizer.vocab_size - 1:
        raise UserError(f"{hf_dir}: with eos_token_id {LEGACY_EOS_ID} transformers pools the "
                        f"largest token id, but the tokenizer's end of text is "
                        f"{tokenizer.eot_id}, not the last id")
    if eos != LEGACY_EOS_ID and eos != tokenizer.eot_id:
        raise UserError(f"{hf_dir}: text_config.eos_token_id is {eos}, the tokenizer's "
                        f"{caption_bpe.EOT_TOKEN} is {tokenizer.eot_id}")
    tokenizer.save(os.path.join(assets_dir, caption_bpe.ASSET_NAME))
    return names


def _workdir_tokenizer(workdir: str) -> caption_bpe.CaptionTokenizer:
    path = os.path.join(workdir, "assets", caption_bpe.ASSET_NAME)
    if not os.path.exists(path):
        raise UserError(f"{workdir} has no tokenizer ({path}); an export needs the one the "
                        "text tower was trained with")
    return caption_bpe.CaptionTokenizer.load(path)


def export_order(tokenizer: caption_bpe.CaptionTokenizer) -> np.ndarray:
    """The workdir's token ids in the order of the export: CLIP's layout, the start and end
    of text last (transformers pools the end of text by its id; with an old config, as the
    largest id), a trained vocabulary's padding just before them, the other tokens in their
    order. A pretrained CLIP's vocabulary is already in this order."""
    last = [tokenizer.pad_id] * tokenizer.pad_is_token + [tokenizer.bos_id, tokenizer.eot_id]
    return np.array([i for i in range(tokenizer.vocab_size) if i not in last] + last)


def export_params(workdir: str, params: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The token embedding's rows in `export_order`."""
    order = export_order(_workdir_tokenizer(workdir))
    name = "text_encoder/token_embedding/embedding"
    return {**params, name: np.asarray(params[name])[order]}


def _reordered(tokenizer: caption_bpe.CaptionTokenizer, order: np.ndarray) -> str:
    """`tokenizer`'s JSON with ids in `order`, adding the start and end of text around the
    text (as CLIPTokenizer does)."""
    from tokenizers import Tokenizer, processors

    new_id = np.empty_like(order)
    new_id[order] = np.arange(len(order))
    spec = json.loads(tokenizer.to_json())
    spec["model"]["vocab"] = {token: int(new_id[i]) for token, i in spec["model"]["vocab"].items()}
    for added in spec.get("added_tokens") or ():
        added["id"] = int(new_id[added["id"]])
    reordered = Tokenizer.from_str(json.dumps(spec))
    start, end = caption_bpe.BOS_TOKEN, caption_bpe.EOT_TOKEN
    reordered.post_processor = processors.TemplateProcessing(
        single=f"{start} $A {end}", pair=f"{start} $A {end} $B {end}",
        special_tokens=[(start, int(new_id[tokenizer.bos_id])),
                        (end, int(new_id[tokenizer.eot_id]))])
    return reordered.to_str()


def _image_processor(data: ml_collections.ConfigDict) -> dict:
    """A `CLIPImageProcessor` doing the run's evaluation view: the shorter side resized to
    `resize_size` (0: the image size), the central crop, then `(pixel / 255 - mean) / std`."""
    size = int(data.image_size)
    return {
        "image_processor_type": "CLIPImageProcessor",
        "do_convert_rgb": True,
        "do_resize": True,
        "size": {"shortest_edge": int(data.get("resize_size", 0) or size)},
        "resample": hf_files.pil_filter(data.get("resample", "bilinear")),
        "do_center_crop": True,
        "crop_size": {"height": size, "width": size},
        "do_rescale": True,
        "rescale_factor": 1 / 255,
        "do_normalize": True,
        "image_mean": hf_files.per_channel(data.get("mean", OPENAI_MEAN), CHANNELS),
        "image_std": hf_files.per_channel(data.get("std", OPENAI_STD), CHANNELS),
    }


def export_tokenizer(workdir: str, hf_dir: str) -> list[str]:
    """Writes `tokenizer.json` (ids in `export_order`) and `tokenizer_config.json`: a
    `CLIPTokenizer` for CLIP's own BPE (pieces ending words with "</w>"), else the
    `tokenizers` pipeline the run trained, loaded as it is by `AutoTokenizer`; and the
    image processor of the run's evaluation view (`preprocessor_config.json`)."""
    from jaxformer.config import read_workdir_config

    tokenizer = _workdir_tokenizer(workdir)
    data = read_workdir_config(workdir).data
    context = data.get("context_length", 77)
    with open(os.path.join(hf_dir, TOKENIZER_FILE), "w", encoding="utf-8") as f:
        f.write(_reordered(tokenizer, export_order(tokenizer)))
    pad = caption_bpe.PAD_TOKEN if tokenizer.pad_is_token else caption_bpe.EOT_TOKEN
    special = dict(bos_token=caption_bpe.BOS_TOKEN, eos_token=caption_bpe.EOT_TOKEN,
                   unk_token=caption_bpe.EOT_TOKEN, pad_token=pad)
    tokenizer_class = ("CLIPTokenizer" if tokenizer.word_suffix == caption_bpe.CLIP_WORD_SUFFIX
                       else "PreTrainedTokenizerFast")
    with open(os.path.join(hf_dir, TOKENIZER_CONFIG_FILE), "w", encoding="utf-8") as f:
        json.dump(dict(special, tokenizer_class=tokenizer_class, model_max_length=context),
                  f, indent=2, sort_keys=True)
        f.write("\n")
    return [TOKENIZER_FILE, TOKENIZER_CONFIG_FILE,
            hf_files.write_image_processor(hf_dir, _image_processor(data))]
