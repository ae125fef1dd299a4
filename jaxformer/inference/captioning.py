"""Captioning with a Flamingo-style run (`jaxformer caption`, the `captioning` evaluator).

A prompt is the chunks of the shots, then the image to caption:

    <image> shot caption <|endofchunk|> ... <image>     images [shot 1, ..., the image]

The frozen image tower and the resampler run once per prompt (`encode_images`); the text is
continued greedily over the KV cache (`generate.generate` with `context=(visual,)`,
`method="decode_text"`) for `max_new_tokens` tokens, and the caption is what comes before
the first `<|endofchunk|>` (or `<image>`, which would start another chunk), decoded to text.

Prompts of one length and image count are decoded together, in batches split over the
host's local devices (each device decodes its own rows; the parameters are copied to every
one), so the evaluator and the command share one path. Images are float32 `[H, W, C]` as the
run's evaluation sees them: `load_image` reads a file that way (`images.read_image`, then
`data.eval_image`). Shot captions are plain text: special-token text in one is refused.
"""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np
from flax import linen as nn
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from jaxformer.data.interleaved_pipeline import chunk_ids
from jaxformer.errors import UserError
from jaxformer.inference import generate
from jaxformer.inference.images import list_images, read_image

Shot = tuple[np.ndarray, str]  # (float32 image [H, W, C], its caption)


def check_config(config, workdir: str) -> None:
    """Raises UserError unless `workdir` holds a Flamingo-style captioning run."""
    if config.task.name != "captioning":
        raise UserError(f"{workdir} holds a {config.task.name!r} run; this command needs a "
                        "Flamingo-style captioning run (e.g. configs/flamingo/emoji.py)")


def prompt_ids(task: Any, shot_captions: Sequence[str]) -> list[int]:
    """The shots' chunks (`<image>` caption `<|endofchunk|>` each), then `<image>`.

    A caption is text only: one whose text encodes to `<image>` or `<|endofchunk|>` (the
    tokenizer splits those out of any text) is a UserError."""
    for caption in shot_captions:
        check_plain_caption(task, caption)
    ids = [i for caption in shot_captions
           for i in chunk_ids(task.tokenizer, caption, task.media_id, task.end_of_chunk_id)]
    return [*ids, task.media_id]


def check_plain_caption(task: Any, caption: str) -> None:
    """Raises UserError if `caption` encodes to a special token of the prompt."""
    special = {task.media_id: "<image>", task.end_of_chunk_id: "<|endofchunk|>"}
    found = [special[i] for i in task.tokenizer.encode(caption) if i in special]
    if found:
        raise UserError(f"the caption {caption!r} holds the special token {found[0]}; "
                        "captions must be plain text")


def cut_caption(ids: Sequence[int], end_id: int, media_id: int) -> list[int]:
    """The generated ids before the first `<|endofchunk|>` or `<image>` (all of them when
    neither comes)."""
    out = []
    for i in ids:
        if int(i) in (end_id, media_id):
            break
        out.append(int(i))
    return out


@functools.partial(jax.jit, static_argnames=("model", "mesh", "max_new_tokens", "max_length"))
def _decode(model: nn.Module, params: Any, images: jax.Array, prompt: jax.Array, *, mesh: Mesh,
            max_new_tokens: int, max_length: int) -> jax.Array:
    """The `max_new_tokens` greedy tokens after each prompt: int32 `[batch, max_new_tokens]`,
    each device decoding its own rows."""

    def local(params, images, prompt):
        visual = model.apply({"params": params}, images, method="encode_images")
        tokens = generate.generate(model, params, prompt, max_new_tokens=max_new_tokens,
                                   greedy=True, max_length=max_length, context=(visual,),
                                   method="decode_text")
        return tokens[:, prompt.shape[1]:]

    spec = PartitionSpec("data")
    return jax.shard_map(local, mesh=mesh, in_specs=(PartitionSpec(), spec, spec),
                         out_specs=spec, check_vma=False)(params, images, prompt)


def caption_ids(model: nn.Module, params: Any, images: Sequence[np.ndarray],
                prompts: Sequence[Sequence[int]], *, max_new_tokens: int, end_id: int,
                media_id: int, batch_size: int = 8) -> list[list[int]]:
    """The greedy caption ids (cut at the end of the chunk) of each prompt, in order.

    `images[i]` is float32 `[media, H, W, C]`, one image per `<image>` of `prompts[i]`.
    Prompts of the same length and image count are decoded together, `batch_size` (rounded
    up to a multiple of the local devices) at a time; a short batch is filled with copies of
    its first row, so that each shape compiles once.
    """
    if len(images) != len(prompts):
        raise ValueError(f"{len(images)} image stacks for {len(prompts)} prompts")
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    max_length = model.lm_spec.block_size
    for i, prompt in enumerate(prompts):
        count = sum(1 for t in prompt if t == media_id)
        if count != len(images[i]):
            raise ValueError(f"prompt {i} has {count} <image> tokens but {len(images[i])} "
                             "images")
        if len(prompt) + max_new_tokens > max_length:
            raise ValueError(f"a prompt of {len(prompt)} tokens + max_new_tokens "
                             f"{max_new_tokens} exceeds the language model's context of "
                             f"{max_length} tokens")
    devices = jax.local_devices()
    mesh = Mesh(np.array(devices), ("data",))
    rows = math.ceil(max(batch_size, 1) / len(devices)) * len(devices)
    params = jax.device_put(jax.device_get(params), NamedSharding(mesh, PartitionSpec()))
    rows_sharding = NamedSharding(mesh, PartitionSpec("data"))
    groups: dict[tuple[int, int], list[int]] = {}
    for i, prompt in enumerate(prompts):
        groups.setdefault((len(prompt), len(images[i])), []).append(i)
    outputs: list[list[int]] = [[] for _ in prompts]
    for members in groups.values():
        for start in range(0, len(members), rows):
            chunk = members[start:start + rows]
            chosen = chunk + [chunk[0]] * (rows - len(chunk))
            batch_images = np.stack([np.asarray(images[i], np.float32) for i in chosen])
            batch_prompts = np.asarray([list(prompts[i]) for i in chosen], np.int32)
            new = np.asarray(_decode(
                model, params, jax.device_put(batch_images, rows_sharding),
                jax.device_put(batch_prompts, rows_sharding), mesh=mesh,
                max_new_tokens=max_new_tokens, max_length=max_length))
            for row, i in enumerate(chunk):
                outputs[i] = cut_caption(new[row], end_id, media_id)
    return outputs


def caption_batch(task: Any, params: Any, images: Sequence[np.ndarray],
                  shots: Sequence[Sequence[Shot]] | None = None, *, max_new_tokens: int = 20,
                  batch_size: int = 8) -> list[str]:
    """The greedy caption of each image (float32 `[H, W, C]`), after its own shots
    (`shots[i]`: (image, caption) pairs, shown in order; none by default)."""
    shots = [()] * len(images) if shots is None else shots
    if len(shots) != len(images):
        raise ValueError(f"shots for {len(shots)} images, but {len(images)} images")
    stacks = [np.stack([*(np.asarray(image) for image, _ in example_shots), image])
              for image, example_shots in zip(images, shots, strict=True)]
    prompts = [prompt_ids(task, [caption for _, caption in example_shots])
               for example_shots in shots]
    ids = caption_ids(task.model, params, stacks, prompts, max_new_tokens=max_new_tokens,
                      end_id=task.end_of_chunk_id, media_id=task.media_id,
                      batch_size=batch_size)
    return [task.tokenizer.decode(caption).strip() for caption in ids]


def caption(task: Any, params: Any, image: np.ndarray, shots: Sequence[Shot] = (), *,
            max_new_tokens: int = 20) -> str:
    """The greedy caption of one image (float32 `[H, W, C]`) after `shots`."""
    return caption_batch(task, params, [image], [shots], max_new_tokens=max_new_tokens,
                         batch_size=1)[0]


def load_image(data: Any, path: str) -> np.ndarray:
    """The image file at `path` as the run's evaluation sees it (converted to its channels,
    resized and cropped, normalised: `data.eval_image`), float32 `[H, W, C]`."""
    return data.eval_image({"image": read_image(path, data.preprocess.channels)})


def parse_shots(spec: str) -> list[tuple[str, str]]:
    """`--shots`: (path, caption) pairs from a comma list of `PATH=caption`, or from a
    directory of images, each captioned by its file stem with underscores as spaces
    ("red_apple.png" -> "red apple"), in the order of their names."""
    if not spec:
        return []
    if os.path.isdir(spec):
        pairs = [(path, " ".join(os.path.splitext(os.path.basename(path))[0]
                                 .replace("_", " ").split()))
                 for path in list_images(spec, "--shots")]
        empty = [path for path, text in pairs if not text]
        if empty:
            raise UserError(f"--shots: {empty[0]} has no caption in its name")
        return pairs
    pairs = []
    for item in spec.split(","):
        path, sep, text = item.partition("=")
        if not sep or not path.strip() or not text.strip():
            raise UserError(f"--shots: expected PATH=caption pairs separated by commas (or a "
                            f"directory of images), got {item.strip()!r}")
        pairs.append((path.strip(), text.strip()))
    return pairs
