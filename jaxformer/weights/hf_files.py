"""A Hugging Face model directory: `config.json` and safetensors weights (one file, or shards
named by `model.safetensors.index.json`). Read and written with the `safetensors` package
alone: no `transformers`, no `torch`, no network."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence

import jax.numpy as jnp
import numpy as np

from jaxformer.data.transforms import RESAMPLING
from jaxformer.errors import UserError

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
INDEX_NAME = "model.safetensors.index.json"
PROCESSOR_NAME = "preprocessor_config.json"
# The names of PIL's filters by their numbers (`PIL.Image.Resampling`), which processors write
# as `resample`.
PIL_FILTERS = {int(number): name for name, number in RESAMPLING.items()}


def read_json(path: str) -> dict:
    """A JSON object file; UserError naming it if it cannot be read or is not an object."""
    try:
        with open(path, encoding="utf-8") as f:
            value = json.load(f)
    except (OSError, ValueError) as e:
        raise UserError(f"cannot read {path}: {e}") from None
    if not isinstance(value, dict):
        raise UserError(f"{path} is not a JSON object")
    return value


def read_config(directory: str) -> dict:
    if not os.path.isdir(directory):
        raise UserError(f"--from {directory} is not a directory")
    path = os.path.join(directory, CONFIG_NAME)
    if not os.path.exists(path):
        raise UserError(f"{directory} has no {CONFIG_NAME}: not a Hugging Face model directory")
    return read_json(path)


def weight_files(directory: str) -> list[str]:
    """The safetensors files of `directory`, in the order of its index if sharded."""
    index = os.path.join(directory, INDEX_NAME)
    if os.path.exists(index):
        try:
            with open(index, encoding="utf-8") as f:
                names = sorted(set(json.load(f)["weight_map"].values()))
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
            raise UserError(f"cannot read {index}: {e}") from None
        return [os.path.join(directory, name) for name in names]
    single = os.path.join(directory, WEIGHTS_NAME)
    if os.path.exists(single):
        return [single]
    if any(os.path.exists(os.path.join(directory, n))
           for n in ("pytorch_model.bin", "tf_model.h5", "flax_model.msgpack")):
        raise UserError(f"{directory} holds no safetensors weights ({WEIGHTS_NAME}); convert "
                        "them first, e.g. `model.save_pretrained(dir, safe_serialization=True)` "
                        "with transformers")
    raise UserError(f"{directory} has no {WEIGHTS_NAME} or {INDEX_NAME}")


def read_tensors(directory: str) -> dict[str, np.ndarray]:
    """Every tensor of the directory's weights; floating ones (float16, bfloat16...) as float32."""
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    tensors: dict[str, np.ndarray] = {}
    for path in weight_files(directory):
        try:
            part = load_file(path)
        except (SafetensorError, OSError, ValueError, TypeError) as e:
            raise UserError(f"cannot read {path}: {e}") from None
        for name, array in part.items():
            floating = jnp.issubdtype(array.dtype, jnp.floating)  # bfloat16 included
            tensors[name] = array.astype(np.float32) if floating else array
    return tensors


def write(directory: str, config: dict, tensors: dict[str, np.ndarray]) -> None:
    """`config.json` and one `model.safetensors` (contiguous float32 arrays) in `directory`."""
    from safetensors.numpy import save_file

    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, CONFIG_NAME), "w", encoding="utf-8") as f:
        json.dump(config, f, indent=2, sort_keys=True)
        f.write("\n")
    # (`np.ascontiguousarray` alone would make a scalar, such as CLIP's `logit_scale`, [1].)
    save_file({name: np.ascontiguousarray(array).reshape(np.shape(array))
               for name, array in tensors.items()},
              os.path.join(directory, WEIGHTS_NAME), metadata={"format": "pt"})


def read_image_processor(directory: str) -> dict | None:
    """The image processor's settings (`preprocessor_config.json`); None without one."""
    path = os.path.join(directory, PROCESSOR_NAME)
    return read_json(path) if os.path.exists(path) else None


def image_resampling(processor: dict, default: str) -> str:
    """jaxformer's `data.resample` for the processor's `resample` (PIL's filter number);
    `default` is the processor class's."""
    value = processor.get("resample")
    if value is None:
        return default
    if value not in PIL_FILTERS:
        raise ValueError(f"{PROCESSOR_NAME}: resample {value!r} is not one of PIL's filters "
                         f"{sorted(PIL_FILTERS)}")
    return PIL_FILTERS[value]


def pil_filter(method: str) -> int:
    """The processor's `resample` number of jaxformer's `data.resample`."""
    return int(RESAMPLING[method])


def write_image_processor(directory: str, processor: dict) -> str:
    """Writes `preprocessor_config.json`; returns its name."""
    with open(os.path.join(directory, PROCESSOR_NAME), "w", encoding="utf-8") as f:
        json.dump(processor, f, indent=2)
        f.write("\n")
    return PROCESSOR_NAME


def per_channel(values: Sequence[float], channels: int) -> list[float]:
    """`data.mean` / `data.std` (one value, or one per channel) as one value per channel."""
    values = [float(v) for v in values]
    return values * channels if len(values) == 1 else values


def image_normalisation(processor: dict, mean: Sequence[float], std: Sequence[float]
                        ) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """jaxformer's `data.mean` and `data.std` (of pixels / 255) for an image processor's
    `(pixel * rescale_factor - mean) / std`, the same with `mean / (255 rescale_factor)` and
    `std / (255 rescale_factor)`; `mean` and `std` are the processor class's defaults."""
    rescale = processor.get("rescale_factor", 1 / 255) if processor.get("do_rescale", True) else 1
    if processor.get("do_normalize", True):
        mean, std = processor.get("image_mean", mean), processor.get("image_std", std)
    else:
        mean, std = (0.0,), (1.0,)
    scale = 255 * rescale
    return (tuple(float(m) / scale for m in np.atleast_1d(mean)),
            tuple(float(s) / scale for s in np.atleast_1d(std)))
