"""Where a trained ViT looks (`jaxformer attention-map`): attention of the [class] token.

Two maps over the patch grid, each overlaid on the image as a heatmap:
  * the last layer's attention from the [class] token to each patch, averaged over heads;
  * attention rollout (Abnar & Zuidema, 2020, "Quantifying Attention Flow in
    Transformers"): per layer, the head-averaged attention plus the identity (the residual
    path), rows renormalised to sum to 1, multiplied through the layers from the first to
    the last; the [class] token's row of the product.
A model pooled by global average (no class token) gets the mean over all tokens' rows.
The image is preprocessed exactly as in evaluation; the figure shows the evaluated crop,
both maps side by side, and the predicted class with its probability.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from jaxformer.inference import images

PANEL = 224  # Side of each square panel, in pixels.
MARGIN = 8
TITLE_HEIGHT = 20
CAPTION_HEIGHT = 28
WIDTH = 3 * PANEL + 4 * MARGIN
HEIGHT = MARGIN + TITLE_HEIGHT + PANEL + CAPTION_HEIGHT + MARGIN
OVERLAY_ALPHA = 0.55

# Anchor colours of the heatmap, from low to high (dark blue -> cyan -> yellow -> red).
_COLORS = np.array([[0, 0, 96], [0, 96, 255], [0, 224, 224], [255, 255, 0], [255, 64, 0],
                    [160, 0, 0]], np.float32)


@dataclasses.dataclass(frozen=True)
class AttentionMaps:
    """The prediction and the two maps (float32 `[grid_h, grid_w]`, summing to 1 each)."""

    class_name: str
    probability: float
    last_layer: np.ndarray
    rollout: np.ndarray


def collect_attention(intermediates: Mapping) -> list[np.ndarray]:
    """Per-layer attention weights `[batch, heads, q, k]`, first layer first, from the
    'intermediates' collection of a model applied with `mutable=["intermediates"]` (blocks
    named `block_<i>`, or one `layers` block stacked over a leading axis by `nn.scan`)."""
    found: list[tuple[tuple, np.ndarray]] = []

    def walk(tree: Mapping, path: tuple) -> None:
        for name, value in tree.items():
            if name == "attention_weights":
                found.append((path, np.asarray(value[0])))
            elif isinstance(value, Mapping):
                walk(value, (*path, name))

    walk(intermediates, ())
    if not found:
        raise ValueError("the model sowed no attention weights; apply it with "
                         "mutable=['intermediates']")

    def order(item):
        return tuple(int(m.group(1)) if (m := re.fullmatch(r"block_(\d+)", n)) else -1
                     for n in item[0])

    layers = []
    for path, weights in sorted(found, key=order):
        if "layers" in path:  # Stacked by nn.scan: [num_layers, batch, heads, q, k].
            layers.extend(list(weights))
        else:
            layers.append(weights)
    return layers


def attention_rollout(layers: list[np.ndarray]) -> np.ndarray:
    """Attention rollout `[batch, q, k]` of per-layer weights `[batch, heads, q, k]`."""
    rollout = None
    for weights in layers:
        mixed = weights.astype(np.float64).mean(axis=1)  # [batch, q, k]
        mixed = mixed + np.eye(mixed.shape[-1])
        mixed = mixed / mixed.sum(axis=-1, keepdims=True)
        rollout = mixed if rollout is None else mixed @ rollout
    return rollout.astype(np.float32)


def token_map(attention: np.ndarray, grid: tuple[int, int], num_prefix_tokens: int) -> np.ndarray:
    """The attention `[q, k]` paid to each patch, renormalised, as a `grid` map: the [class]
    token's row with a class token, else the mean of all rows."""
    rows = attention[0] if num_prefix_tokens else attention.mean(axis=0)
    patches = rows[num_prefix_tokens:]
    if patches.size != grid[0] * grid[1]:
        raise ValueError(f"{patches.size} patch tokens do not fill a {grid} grid")
    return (patches / patches.sum()).reshape(grid).astype(np.float32)


def compute_maps(model: Any, params: Any, image: np.ndarray,
                 class_names: tuple[str, ...]) -> AttentionMaps:
    """Runs the ViT `model` on one preprocessed image `[H, W, C]` and derives the maps."""
    logits, state = model.apply({"params": params}, image[None], mutable=["intermediates"])
    probabilities = np.asarray(jax.nn.softmax(logits[0]))
    layers = collect_attention(state["intermediates"])
    grid = (image.shape[0] // model.patch_size, image.shape[1] // model.patch_size)
    prefix = 1 if model.pool_type == "tok" else 0
    predicted = int(probabilities.argmax())
    return AttentionMaps(
        class_name=class_names[predicted], probability=float(probabilities[predicted]),
        last_layer=token_map(layers[-1].mean(axis=1)[0], grid, prefix),
        rollout=token_map(attention_rollout(layers)[0], grid, prefix))


def heatmap(values: np.ndarray, size: int) -> np.ndarray:
    """uint8 RGB `[size, size, 3]` colouring of a map scaled to its own [min, max]."""
    low, high = float(values.min()), float(values.max())
    scaled = (values - low) / (high - low) if high > low else np.zeros_like(values)
    smooth = np.asarray(Image.fromarray(scaled.astype(np.float32)).resize(
        (size, size), Image.Resampling.BILINEAR))
    position = np.clip(smooth, 0.0, 1.0) * (len(_COLORS) - 1)
    lower = np.minimum(position.astype(np.int64), len(_COLORS) - 2)
    fraction = (position - lower)[..., None]
    colors = _COLORS[lower] * (1 - fraction) + _COLORS[lower + 1] * fraction
    return np.round(colors).astype(np.uint8)


def _panel(view: np.ndarray) -> np.ndarray:
    """The uint8 `[h, w, c]` image as an RGB `PANEL x PANEL` panel."""
    pil = Image.fromarray(view[:, :, 0] if view.shape[-1] == 1 else view).convert("RGB")
    upscale = view.shape[0] <= PANEL and view.shape[1] <= PANEL
    method = Image.Resampling.NEAREST if upscale else Image.Resampling.BILINEAR
    return np.asarray(pil.resize((PANEL, PANEL), method))


def render(view: np.ndarray, maps: AttentionMaps) -> Image.Image:
    """The figure: image | last-layer attention | rollout, captioned with the prediction."""
    base = _panel(view).astype(np.float32)
    panels = [base]
    for values in (maps.last_layer, maps.rollout):
        panels.append((1 - OVERLAY_ALPHA) * base + OVERLAY_ALPHA * heatmap(values, PANEL))
    figure = Image.new("RGB", (WIDTH, HEIGHT), "white")
    draw = ImageDraw.Draw(figure)
    font = ImageFont.load_default()
    titles = ("input (eval crop)", "[class] attention, last layer", "attention rollout")
    top = MARGIN + TITLE_HEIGHT
    for i, (panel, title) in enumerate(zip(panels, titles)):
        left = MARGIN + i * (PANEL + MARGIN)
        figure.paste(Image.fromarray(np.round(panel).astype(np.uint8)), (left, top))
        draw.text((left, MARGIN + 4), title, fill="black", font=font)
    draw.text((MARGIN, top + PANEL + 8),
              f"predicted: {maps.class_name} ({100 * maps.probability:.1f}%)", fill="black",
              font=font)
    return figure


def write_attention_map(run: Any, image_path: str, out_path: str) -> AttentionMaps:
    """Writes the attention-map figure of `image_path` under a loaded ViT run
    (`inference.workdir.Run`) as an image (`WIDTH x HEIGHT` pixels, in the format of
    `out_path`'s extension) at `out_path`; returns the prediction and the maps."""
    preprocess = run.data.preprocess
    view = preprocess.eval_view(images.read_image(image_path, preprocess.channels))
    maps = compute_maps(run.task.model, run.params, preprocess.normalize(view),
                        run.data.class_names)
    images.prepare_output(out_path, make_directory=True, image=image_path)
    images.save_image(render(view, maps), out_path)
    return maps
