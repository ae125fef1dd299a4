"""Set prediction of object boxes (DETR; Carion et al., 2020).

Batches are the detection pipeline's (`data.detection_pipeline`): `image` float32
`[batch, H, W, C]` zero-padded at the bottom and right, `pixel_mask` bool `[batch, H, W]`,
`boxes` cxcywh in [0, 1] of the unpadded image `[batch, max_boxes, 4]`, `labels` int32 and
`box_mask` bool `[batch, max_boxes]`; eval batches mark padding images by an all-false
`pixel_mask`. The model predicts `num_queries` boxes per image at every decoder layer; the
loss matches each layer's predictions to the targets (Hungarian matching) and sums the
layers' losses (`losses.detection`), normalised by the number of boxes of the global batch.

`config.task`: `eos_coef` (0.1, the class weight of "no object"), `class_weight`,
`bbox_weight`, `giou_weight` (1, 5, 2: the loss weights), and `class_cost`, `bbox_cost`,
`giou_cost` (the matching costs, by default the same), `matcher` ("jax": the assignment
solved on the device; "scipy": on the host, in float64; see `losses.matching`).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import ml_collections

from jaxformer import registry
from jaxformer.losses.detection import set_criterion
from jaxformer.losses.matching import MATCHERS, TermWeights
from jaxformer.tasks.base import Task, compute_dtype


def _weights(config: ml_collections.ConfigDict, suffix: str,
             default: TermWeights) -> TermWeights:
    weights = TermWeights(*(float(config.get(f"{term}_{suffix}", value))
                            for term, value in zip(("class", "bbox", "giou"), default,
                                                   strict=True)))
    if min(weights) < 0:
        raise ValueError(f"task.*_{suffix} must be >= 0, got {tuple(weights)}")
    return weights


class DetectionTask(Task):
    """A DETR-style model trained with the set-prediction loss."""

    def __init__(self, config: ml_collections.ConfigDict, data: Any):
        task = config.task
        self.eos_coef = float(task.get("eos_coef", 0.1))
        if not 0.0 <= self.eos_coef <= 1.0:
            raise ValueError(f"task.eos_coef must be in [0, 1], got {self.eos_coef}")
        self.weights = _weights(task, "weight", TermWeights())
        self.costs = _weights(task, "cost", TermWeights(*self.weights))
        self.matcher = task.get("matcher", "jax")
        if self.matcher not in MATCHERS:
            raise ValueError(f"task.matcher must be one of {', '.join(MATCHERS)}, got "
                             f"{self.matcher!r}")
        self.image_shape = tuple(data.image_shape)
        self.max_boxes = data.max_boxes
        self.num_classes = data.num_classes
        self.class_names = tuple(data.class_names)
        self.model = registry.lookup("models", config.model.name).build(
            config.model, num_classes=data.num_classes,
            dtype=compute_dtype(config.train.compute_dtype), remat=config.train.remat)

    def dummy_batch(self, batch_size: int) -> dict[str, jax.Array]:
        height, width = self.image_shape[:2]
        return {"image": jnp.zeros((batch_size, *self.image_shape), jnp.float32),
                "pixel_mask": jnp.ones((batch_size, height, width), jnp.bool_),
                "size": jnp.tile(jnp.asarray([[height, width]], jnp.int32), (batch_size, 1)),
                "boxes": jnp.full((batch_size, self.max_boxes, 4), 0.5, jnp.float32),
                "labels": jnp.zeros((batch_size, self.max_boxes), jnp.int32),
                "box_mask": jnp.zeros((batch_size, self.max_boxes), jnp.bool_)}

    def model_inputs(self, batch):
        return batch["image"], batch["pixel_mask"]

    def loss(self, params, batch, rng, *, train: bool, axis_name=None):
        outputs = self.model.apply({"params": params}, *self.model_inputs(batch), train=train,
                                   rngs={"dropout": rng})
        images = batch["pixel_mask"].any(axis=(1, 2))  # Padding images of eval batches: none.
        loss, metrics = set_criterion(
            outputs["logits"], outputs["boxes"], batch["labels"], batch["boxes"],
            batch["box_mask"], axis_name, image_mask=images, eos_coef=self.eos_coef,
            weights=self.weights, costs=self.costs, matcher=self.matcher)
        return loss, metrics

    def predict(self, params, batch) -> dict[str, jax.Array]:
        """The last decoder layer's `logits` `[batch, queries, classes + 1]` and `boxes`
        (cxcywh relative to each unpadded image) `[batch, queries, 4]`."""
        outputs = self.model.apply({"params": params}, *self.model_inputs(batch), train=False)
        return {"logits": outputs["logits"][-1], "boxes": outputs["boxes"][-1]}

    def items_per_example(self) -> tuple[int, str]:
        return 1, "img"

    def flops_per_example(self, params) -> float:
        """Training FLOPs of one padded image: 3x the forward FLOPs that XLA counts in the
        model's graph (convolutions, attention and heads; the loss and matching are left
        out). DETR-R50 on one 800 x 1,200 image: 184 GFLOPs forward, about the paper's 86
        GFLOPS counting multiply-adds."""
        dummy = self.dummy_batch(1)
        forward = jax.jit(lambda p: self.model.apply({"params": p}, *self.model_inputs(dummy)))
        return 3.0 * float(forward.lower(params).cost_analysis()["flops"])


def detections(logits: jax.Array, boxes: jax.Array) -> dict[str, jax.Array]:
    """DETR's post-processing: each query's best real class (no object excluded) and its
    probability, with its box: `scores`, `labels` `[..., queries]`, `boxes` `[..., queries,
    4]` (unchanged)."""
    probs = jax.nn.softmax(logits.astype(jnp.float32), axis=-1)[..., :-1]
    return {"scores": probs.max(-1), "labels": probs.argmax(-1).astype(jnp.int32),
            "boxes": boxes}


def build(config: ml_collections.ConfigDict, data: Any) -> DetectionTask:
    return DetectionTask(config, data)

