"""Detection with a DETR run (`jaxformer detect`): an image file in, scored boxes out, drawn
on the image.

The image gets the run's evaluation view (`DetectionPreprocess.eval_transforms`: the largest
training scale, normalised, padded), the model's last decoder layer gives one detection per
query (its best class other than "no object", `tasks.detection.detections`), and those
scoring at least a threshold are returned in the pixels of the original image.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import numpy as np

from jaxformer.data.box_transforms import cxcywh_to_xyxy
from jaxformer.data.transforms import no_draws
from jaxformer.tasks.detection import detections

# Box colours, one per class in turn.
PALETTE = ((230, 25, 75), (60, 180, 75), (0, 130, 200), (245, 130, 48), (145, 30, 180),
           (70, 240, 240), (240, 50, 230), (128, 128, 0), (0, 128, 128), (170, 110, 40))


@dataclasses.dataclass(frozen=True)
class Detection:
    label: int
    name: str
    score: float
    box: tuple[float, float, float, float]  # (x0, y0, x1, y1) pixels of the original image.


def detect(task: Any, data: Any, params: Any, pixels: np.ndarray, *,
           threshold: float = 0.7) -> list[Detection]:
    """The detections of uint8 `pixels` `[H, W, C]` scoring at least `threshold`, best
    first."""
    empty = {"image": pixels, "boxes": np.zeros((0, 4), np.float32),
             "labels": np.zeros((0,), np.int32)}
    example = data.preprocess.eval_transforms()(empty, no_draws())
    batch = {key: np.asarray(example[key])[None] for key in
             ("image", "pixel_mask", "size", "boxes", "labels", "box_mask")}
    out = jax.device_get(detections(**jax.jit(task.predict)(params, batch)))
    height, width = pixels.shape[:2]
    boxes = np.clip(cxcywh_to_xyxy(out["boxes"][0], height, width), 0,
                    np.array([width, height, width, height], np.float32))
    found = []
    for score, label, box in zip(out["scores"][0], out["labels"][0], boxes, strict=True):
        if score >= threshold:
            found.append(Detection(int(label), task.class_names[int(label)], float(score),
                                   tuple(float(v) for v in box)))
    return sorted(found, key=lambda d: -d.score)


def draw(pixels: np.ndarray, found: list[Detection], *, scale: int = 1):
    """A PIL image of `pixels` (enlarged `scale` times) with each detection's box and
    "name score"."""
    from PIL import Image, ImageDraw

    image = Image.fromarray(pixels.squeeze(-1) if pixels.shape[-1] == 1 else pixels)
    image = image.convert("RGB").resize((image.width * scale, image.height * scale),
                                        Image.NEAREST)
    pen = ImageDraw.Draw(image)
    for d in found:
        colour = PALETTE[d.label % len(PALETTE)]
        x0, y0, x1, y1 = (v * scale for v in d.box)
        pen.rectangle((x0, y0, x1, y1), outline=colour, width=max(1, scale // 2))
        pen.text((x0 + 2, max(y0 - 11, 0)), f"{d.name} {d.score:.2f}", fill=colour)
    return image
