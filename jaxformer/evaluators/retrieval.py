"""`type="retrieval"`: image-to-text and text-to-image retrieval over an eval split whose
images each have one or more captions (`data.captions(split)`).

Every caption of the split is a candidate for every image and the reverse. Image-to-text
Recall@k is the fraction of images with at least one of their captions among the k most
similar captions; text-to-image Recall@k the fraction of captions whose image is among the k
most similar images. Options: `split`, `ks` (default (1, 5, 10)). Reports
`image_to_text_r<k>` and `text_to_image_r<k>`.
"""

from __future__ import annotations

from collections.abc import Sequence

import ml_collections
import numpy as np

from jaxformer.evaluators import embeddings
from jaxformer.evaluators.base import Context, Evaluator


def recall_at_k(similarity: np.ndarray, caption_image: np.ndarray,
                ks: Sequence[int]) -> dict[str, float]:
    """Recall@k both ways from `similarity` `[images, captions]` and the image of each
    caption (`caption_image[j]` indexes the rows). Ties count against the right answer."""
    similarity = np.asarray(similarity, np.float64)
    images, captions = similarity.shape
    own = caption_image[None, :] == np.arange(images)[:, None]  # [images, captions]
    # Image -> text: rank of the best of the image's own captions among all captions.
    best_own = np.where(own, similarity, -np.inf).max(axis=1, keepdims=True)
    image_rank = (np.where(own, -np.inf, similarity) >= best_own).sum(axis=1)
    # Text -> image: rank of the caption's image among all images.
    right = similarity[caption_image, np.arange(captions)]
    text_rank = (similarity >= right[None, :]).sum(axis=0) - 1
    metrics = {}
    for k in ks:
        metrics[f"image_to_text_r{k}"] = float((image_rank < k).mean())
        metrics[f"text_to_image_r{k}"] = float((text_rank < k).mean())
    return metrics


class RetrievalEvaluator(Evaluator):
    def run(self, params) -> dict[str, float]:
        split = self.config.get("split", "") or None
        params = embeddings.host_params(self.context, params)
        images, labels = embeddings.embed_images(self.context, params, split)
        captions = self.context.data.captions(split)
        if len(captions) != len(images):
            raise ValueError(f"evals.{self.name}: {len(images)} images but captions for "
                             f"{len(captions)}")
        texts = [text for group in captions for text in group]
        caption_image = np.repeat(np.arange(len(captions)), [len(g) for g in captions])
        similarity = images @ embeddings.embed_texts(self.context, params, texts).T
        return recall_at_k(similarity, caption_image, self.config.get("ks", (1, 5, 10)))


def build(name: str, config: ml_collections.ConfigDict, context: Context
          ) -> RetrievalEvaluator:
    return RetrievalEvaluator(name, config, context)
