"""GPT-2 (`transformers`' GPT2LMHeadModel, or a GPT2Model) <-> the `gpt` model.

    transformer.wte, wpe                  token_embedding, position_embedding
    transformer.h.{i}.ln_1, ln_2          transformer/block_{i}/attention_norm, mlp_norm
    transformer.h.{i}.attn.c_attn         .../attention/qkv (q|k|v, heads inside each)
    transformer.h.{i}.attn.c_proj         .../attention/out
    transformer.h.{i}.mlp.c_fc, c_proj    .../mlp/fc, mlp/proj
    transformer.ln_f                      transformer/final_norm

GPT-2's `Conv1D` weights are already [in, out]. The output head is tied to `wte`: exports
write no `lm_head.weight`, and an import ignores one (as `transformers` does for a tied head),
as it ignores the causal-mask buffers of older checkpoints. A base model's tensors (without
the `transformer.` prefix) read the same. The tokenizer (`tokenizer.json`, or one built from
`vocab.json` and `merges.txt`) is kept in the workdir's assets as the `byte_bpe` tokenizer of
the data pipeline.
"""

from __future__ import annotations

import json
import os
import shutil

import ml_collections
import numpy as np

from jaxformer.data.tokenizers import (
    END_OF_TEXT,
    MIN_BYTE_BPE_VOCAB_SIZE,
    ByteLevelBPETokenizer,
    load_tokenizer,
)
from jaxformer.errors import UserError
from jaxformer.models import gpt
from jaxformer.weights import data_spec, hf_files
from jaxformer.weights.rules import Rule, conv1d, embedding, layer_norm

MODEL_TYPES = ("gpt2",)
MODEL_NAMES = ("gpt",)
IGNORED = (r"transformer\.h\.\d+\.attn\.(bias|masked_bias)", r"lm_head\.weight")
OPTIONAL: dict[str, str] = {}  # Every part is in every checkpoint.
PREFIX = "transformer."

# GPT2Config's defaults, for the keys a config.json may leave out.
DEFAULTS = dict(vocab_size=50257, n_positions=1024, n_embd=768, n_layer=12, n_head=12,
                n_inner=None, activation_function="gelu_new", resid_pdrop=0.1, embd_pdrop=0.1,
                attn_pdrop=0.1, layer_norm_epsilon=1e-5, scale_attn_weights=True,
                scale_attn_by_inverse_layer_idx=False, reorder_and_upcast_attn=False,
                add_cross_attention=False, tie_word_embeddings=True)
# Names transformers gives the tanh approximation of GELU (the model's activation).
TANH_GELUS = ("gelu_new", "gelu_pytorch_tanh", "gelu_fast")
# Settings the model cannot express: (key, the only value it can).
FIXED = (("scale_attn_weights", True), ("scale_attn_by_inverse_layer_idx", False),
         ("reorder_and_upcast_attn", False), ("add_cross_attention", False),
         ("tie_word_embeddings", True))
TOKENIZER_JSON, VOCAB, MERGES = "tokenizer.json", "vocab.json", "merges.txt"
# Tokenizer files carried over as they are, besides the tokenizer itself.
TOKENIZER_EXTRAS = (VOCAB, MERGES, "tokenizer_config.json", "special_tokens_map.json")


def base_config(hf_config: dict) -> str:
    del hf_config
    return "configs/gpt/pretrained.py"


def configure(config: ml_collections.ConfigDict, hf_config: dict) -> None:
    """The model, vocabulary and context of `hf_config`; ValueError naming a key the model
    cannot express."""
    hf = {key: hf_config[key] if hf_config.get(key) is not None else default
          for key, default in DEFAULTS.items()}
    for key, only in FIXED:
        if hf[key] != only:
            raise ValueError(f"{key}={json.dumps(hf[key])}: the model supports only "
                             f"{json.dumps(only)}")
    if hf["activation_function"] not in TANH_GELUS:
        raise ValueError(f"activation_function={hf['activation_function']!r}: the model uses "
                         f"GELU's tanh approximation ({', '.join(TANH_GELUS)})")
    if hf["vocab_size"] < MIN_BYTE_BPE_VOCAB_SIZE:
        raise ValueError(f"vocab_size={hf['vocab_size']}: a GPT-2 checkpoint is read with its "
                         f"byte-level BPE, of at least {MIN_BYTE_BPE_VOCAB_SIZE} tokens (a "
                         "character-level run's export has no tokenizer to import)")
    d_model = hf["n_embd"]
    if d_model % hf["n_head"]:
        raise ValueError(f"n_embd={d_model} is not a multiple of n_head={hf['n_head']}")
    inner = hf["n_inner"] or 4 * d_model
    if inner % d_model:
        raise ValueError(f"n_inner={inner}: the model's MLP width is a multiple of "
                         f"n_embd={d_model}")
    config.model.update(
        name="gpt", variant="", num_layers=hf["n_layer"], num_heads=hf["n_head"],
        d_model=d_model, mlp_ratio=inner // d_model, layer_norm_epsilon=hf["layer_norm_epsilon"],
        max_positions=hf["n_positions"], dropout_rate=hf["resid_pdrop"], scan_layers=False)
    config.data.update(vocab_size=hf["vocab_size"], block_size=hf["n_positions"])


def hf_config(config: ml_collections.ConfigDict) -> dict:
    """The GPT2LMHeadModel `config.json` of a `gpt` run: its vocabulary is the tokenizer's
    (a character vocabulary ignores `data.vocab_size`); bos and eos are set where the run's
    tokenizer has an end of text (`export_tokenizer`)."""
    model, data = config.model, config.data
    sizes = gpt.sizes(model)
    d_model, dropout = sizes["d_model"], model.get("dropout_rate", 0.0)
    return dict(
        architectures=["GPT2LMHeadModel"], model_type="gpt2",
        vocab_size=data_spec(config).vocab_size,
        n_positions=model.get("max_positions", 0) or data.block_size, n_embd=d_model,
        n_layer=sizes["num_layers"], n_head=sizes["num_heads"],
        n_inner=None if model.mlp_ratio == 4 else model.mlp_ratio * d_model,
        activation_function="gelu_new", resid_pdrop=dropout, embd_pdrop=dropout,
        attn_pdrop=dropout, layer_norm_epsilon=model.get("layer_norm_epsilon", 1e-5),
        initializer_range=0.02, scale_attn_weights=True, use_cache=True,
        bos_token_id=None, eos_token_id=None,
        tie_word_embeddings=True, dtype="float32")


def rename(tensors: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """A base model's tensors (`h.0...`, `wte.weight`) under the LM head model's names."""
    if any(name.startswith(PREFIX) for name in tensors):
        return tensors
    return {name if name.startswith("lm_head.") else PREFIX + name: array
            for name, array in tensors.items()}


def _block_rules(hf: str, ours: str) -> list[Rule]:
    return [*layer_norm(f"{hf}.ln_1", f"{ours}/attention_norm"),
            *conv1d(f"{hf}.attn.c_attn", f"{ours}/attention/qkv"),
            *conv1d(f"{hf}.attn.c_proj", f"{ours}/attention/out"),
            *layer_norm(f"{hf}.ln_2", f"{ours}/mlp_norm"),
            *conv1d(f"{hf}.mlp.c_fc", f"{ours}/mlp/fc"),
            *conv1d(f"{hf}.mlp.c_proj", f"{ours}/mlp/proj")]


def _stack(*arrays: np.ndarray) -> tuple[np.ndarray, ...]:
    return (np.stack(arrays),)


def _unstack(stacked: np.ndarray) -> tuple[np.ndarray, ...]:
    return tuple(stacked)


def configure_from_dir(config: ml_collections.ConfigDict, hf_dir: str) -> None:
    """Nothing beyond config.json is read for this family."""
    del config, hf_dir


def export_params(workdir: str, params: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The parameters as they are: the export's layout is the model's."""
    del workdir
    return params


def rules(config: ml_collections.ConfigDict) -> list[Rule]:
    num_layers = gpt.sizes(config.model)["num_layers"]
    result = [embedding("transformer.wte", "token_embedding"),
              embedding("transformer.wpe", "position_embedding")]
    if config.model.get("scan_layers", False):  # One array per parameter, layers stacked.
        for rule in _block_rules("transformer.h.0", "transformer/layers"):
            result.append(Rule(tuple(rule.hf[0].replace(".h.0.", f".h.{i}.")
                                     for i in range(num_layers)),
                               rule.params, _stack, _unstack, "stack layers"))
    else:
        for i in range(num_layers):
            result += _block_rules(f"transformer.h.{i}", f"transformer/block_{i}")
    return result + layer_norm("transformer.ln_f", "transformer/final_norm")


def import_tokenizer(hf_dir: str, assets_dir: str) -> list[str]:
    """GPT-2's byte-level BPE of `hf_dir` as the workdir's `tokenizer.json` (built from
    `vocab.json` and `merges.txt` when there is none), with the other tokenizer files. A
    directory without one is an error: the run's data would learn another vocabulary."""
    def path(name: str) -> str:
        return os.path.join(hf_dir, name)

    target = os.path.join(assets_dir, TOKENIZER_JSON)
    try:
        if os.path.isfile(path(TOKENIZER_JSON)):
            ByteLevelBPETokenizer.load(path(TOKENIZER_JSON))  # Readable: then kept as it is.
            shutil.copyfile(path(TOKENIZER_JSON), target)
        elif os.path.isfile(path(VOCAB)) and os.path.isfile(path(MERGES)):
            add_prefix_space = _read_json(path("tokenizer_config.json")).get(
                "add_prefix_space", False)
            ByteLevelBPETokenizer.from_vocab_merges(
                path(VOCAB), path(MERGES), add_prefix_space=bool(add_prefix_space)).save(target)
        else:
            raise UserError(f"{hf_dir} has no tokenizer ({TOKENIZER_JSON}, or {VOCAB} and "
                            f"{MERGES}): add the model's tokenizer files to it")
    except ValueError as e:
        raise UserError(str(e)) from None
    carried = [TOKENIZER_JSON]
    for name in TOKENIZER_EXTRAS:
        if os.path.isfile(path(name)):
            shutil.copyfile(path(name), os.path.join(assets_dir, name))
            carried.append(name)
    return carried


def export_tokenizer(workdir: str, hf_dir: str) -> list[str]:
    """The run's byte-level BPE and the tokenizer files carried in with it, its end of text
    as `config.json`'s bos and eos ids (nothing for a character or SentencePiece tokenizer,
    which `transformers` cannot read)."""
    assets = os.path.join(workdir, "assets")
    try:
        tokenizer = load_tokenizer(os.path.join(assets, TOKENIZER_JSON))
    except ValueError:
        return []
    if not isinstance(tokenizer, ByteLevelBPETokenizer):
        return []
    carried = []
    for name in (TOKENIZER_JSON, *TOKENIZER_EXTRAS):
        if os.path.isfile(os.path.join(assets, name)):
            shutil.copyfile(os.path.join(assets, name), os.path.join(hf_dir, name))
            carried.append(name)
    end_of_text = tokenizer.token_id(END_OF_TEXT)
    if end_of_text is not None:
        config_path = os.path.join(hf_dir, hf_files.CONFIG_NAME)
        config = _read_json(config_path)
        config.update(bos_token_id=end_of_text, eos_token_id=end_of_text)
        with open(config_path, "w", encoding="utf-8") as f:
            json.dump(config, f, indent=2, sort_keys=True)
            f.write("\n")
    return carried


def _read_json(path: str) -> dict:
    """The JSON object in `path`; {} if there is no such file."""
    return hf_files.read_json(path) if os.path.isfile(path) else {}
