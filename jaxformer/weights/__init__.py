"""Pretrained weights in and out: Hugging Face model directories <-> jaxformer workdirs.

One module per family maps its tensors (`rules.Rule`); `convert` does the rest for all of
them. A family module provides:

- `MODEL_TYPES`: the `model_type` values of `config.json` it reads;
- `IGNORED`: regular expressions of tensors that hold no parameters (buffers);
- `OPTIONAL`: parts a checkpoint may lack (a base model's heads), parameter prefix -> tensor
  name prefix; an absent part starts from the model's initialisation;
- `base_config(hf_config) -> str`: the jaxformer config (`FILE[:ARGS]`) an import starts from;
- `configure(config, hf_config)`: sets the model (and tokenizer) fields to the checkpoint's;
- `configure_from_dir(config, hf_dir)`: fields from the directory's other files
  (an image processor's normalisation);
- `hf_config(config) -> dict`: the reverse, the `config.json` of an export;
- `MODEL_NAMES`: the `config.model.name` values it exports;
- `rules(config) -> list[Rule]`: the tensor mapping;
- `export_params(workdir, flat_params) -> flat_params`: the parameters in the export's layout
  (CLIP: a trained vocabulary's special tokens moved last);
- `import_tokenizer(hf_dir, assets_dir) -> list[str]` and
  `export_tokenizer(workdir, hf_dir) -> list[str]`: the tokenizer files carried over;
- `rename(tensors) -> tensors`: a checkpoint's older tensor names -> the rules'.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from jaxformer.errors import UserError

FAMILIES = {
    "gpt": "jaxformer.weights.gpt2",
    "bert": "jaxformer.weights.bert",
    "vit": "jaxformer.weights.vit",
    "clip": "jaxformer.weights.clip",
    "detr": "jaxformer.weights.detr",
}


def family_module(name: str) -> ModuleType:
    if name not in FAMILIES:
        raise UserError(f"unknown family {name!r}; available: {', '.join(FAMILIES)}")
    return importlib.import_module(FAMILIES[name])


def family_of_model(model_name: str) -> str:
    """The family whose workdirs have `config.model.name == model_name`."""
    for family, path in FAMILIES.items():
        if model_name in importlib.import_module(path).MODEL_NAMES:
            return family
    raise UserError(f"no Hugging Face export for model {model_name!r}; families: "
                    f"{', '.join(FAMILIES)}")


def data_spec(config):
    """The spec of `config`'s data (shapes, classes, vocabulary; nothing read)."""
    from jaxformer import registry

    return registry.lookup("data", config.data.name).spec(config.data)
