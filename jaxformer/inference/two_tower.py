"""Zero-shot classification and image retrieval with a contrastive image-text run
(`jaxformer zero-shot`, `jaxformer retrieve`).

Images are read from files (`images.read_image`: any format Pillow opens), converted to the
run's channels and given the run's evaluation view (shorter side resized, central crop,
normalised). Class names become prompts through the run's templates (or one given template),
their embeddings averaged per class (prompt ensembling), as the zero-shot evaluator does.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np

from jaxformer.errors import UserError
from jaxformer.inference.images import read_image

PLACEHOLDER = "{}"


def check_config(config, workdir: str) -> None:
    """Raises UserError unless `workdir` holds a contrastive image-text run."""
    if config.task.name != "contrastive":
        raise UserError(f"{workdir} holds a {config.task.name!r} run; this command needs a "
                        "contrastive image-text run (e.g. configs/clip/emoji.py)")


def image_batch(data: Any, paths: Sequence[str]) -> np.ndarray:
    """float32 `[len(paths), H, W, C]`: the images as the run's evaluation sees them."""
    preprocess = data.preprocess
    views = [preprocess.eval_view(read_image(p, preprocess.channels)) for p in paths]
    return preprocess.normalize(np.stack(views))


def image_embeddings(run: Any, paths: Sequence[str], batch_size: int = 64) -> np.ndarray:
    encode = jax.jit(run.task.encode_images)
    parts = [encode(run.params, image_batch(run.data, paths[i:i + batch_size]))
             for i in range(0, len(paths), batch_size)]
    return np.concatenate([np.asarray(part) for part in parts])


def user_template(template: str) -> str:
    """`--template` as a format string: it must hold exactly one "{}" (the label's place);
    any other brace is kept as written (escaped for `str.format`)."""
    count = template.count(PLACEHOLDER)
    if count != 1:
        raise UserError(f"--template must contain {PLACEHOLDER} exactly once (the label's "
                        f"place), got {count} in {template!r}")
    before, after = template.split(PLACEHOLDER)
    return PLACEHOLDER.join(_escape_braces(part) for part in (before, after))


def _escape_braces(text: str) -> str:
    return text.replace("{", "{{").replace("}", "}}")


def prompt_templates(run: Any, template: str) -> tuple[str, ...]:
    """`template` (`user_template`), or the run's templates (those of its data's default
    eval split)."""
    if template:
        return (user_template(template),)
    return tuple(run.data.templates(None))


@dataclasses.dataclass(frozen=True)
class Ranked:
    """Candidates with their scores, best first."""

    names: tuple[str, ...]
    scores: tuple[float, ...]


def zero_shot(run: Any, image_path: str, labels: Sequence[str], template: str = "") -> Ranked:
    """The labels ranked by probability (softmax of the scaled cosine similarities)."""
    from jaxformer.evaluators import embeddings
    from jaxformer.evaluators.base import Context

    templates = prompt_templates(run, template)
    prompts = np.asarray(run.data.tokenize([templates[0].format(label) for label in labels]))
    for i, j in itertools.combinations(range(len(labels)), 2):
        if np.array_equal(prompts[i], prompts[j]):  # They would share one probability.
            raise UserError(f"--labels {labels[i]!r} and {labels[j]!r} are the same text to "
                            "the model's tokenizer")
    context = Context(task=run.task, data=run.data, strategy=None, batch_size=1)
    classes = embeddings.class_embeddings(context, run.params, labels, templates)
    image = image_embeddings(run, [image_path])[0]
    logits = float(run.task.logit_scale(run.params)) * classes @ image
    probabilities = np.exp(logits - logits.max())
    probabilities /= probabilities.sum()
    order = np.argsort(-probabilities, kind="stable")
    return Ranked(tuple(labels[i] for i in order), tuple(float(probabilities[i]) for i in order))


def retrieve(run: Any, text: str, paths: Sequence[str], top_k: int) -> Ranked:
    """The `top_k` images of `paths` most similar to `text` (cosine similarity)."""
    from jaxformer.evaluators import embeddings
    from jaxformer.evaluators.base import Context

    context = Context(task=run.task, data=run.data, strategy=None, batch_size=1)
    query = embeddings.embed_texts(context, run.params, [text])[0]
    similarity = image_embeddings(run, paths) @ query
    order = np.argsort(-similarity, kind="stable")[:top_k]
    return Ranked(tuple(paths[i] for i in order), tuple(float(similarity[i]) for i in order))
