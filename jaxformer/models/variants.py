"""A model's sizes: those of its named variant, or the explicit size fields of its config.

Every family's `config.model` block has a `variant` ("" or a name such as "gpt2-small" or
"B/16") and explicit size fields (the family's `SIZE_KEYS`). A variant sets all of them; the
explicit fields count only when the variant is "". An override of a size field that a
variant would shadow is refused (`shadowed_overrides`), so that no override is ignored.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import ml_collections


def choose(
    config: ml_collections.ConfigDict, keys: Sequence[str], *, family: str,
    variants: Mapping[str, Mapping[str, Any]] | None = None,
    parse: Callable[[str], dict[str, Any]] | None = None, may_be_zero: Sequence[str] = (),
) -> dict[str, Any]:
    """The `keys` of `config.variant` (looked up in `variants`, or read by `parse`), or of
    `config` itself when the variant is ""; explicit integer sizes must be at least 1 (0 for
    those in `may_be_zero`)."""
    variant = config.get("variant", "")
    if variant:
        if parse is not None:
            return parse(variant)
        if variant not in variants:
            raise ValueError(f"unknown {family} variant {variant!r}; known: "
                             f"{', '.join(variants)}")
        return dict(variants[variant])
    sizes = {key: config[key] for key in keys}
    for key, value in sizes.items():
        least = 0 if key in may_be_zero else 1
        if isinstance(value, int) and not isinstance(value, bool) and value < least:
            raise ValueError(f"model.{key} must be {'>= 0' if least == 0 else 'a positive integer'}"
                             f", got {value}")
    return sizes


def shadowed_overrides(model: ml_collections.ConfigDict, override_keys: Iterable[str],
                       size_keys: Sequence[str]) -> list[str]:
    """The `model.<size key>` overrides that `model.variant` makes void."""
    if not model.get("variant", ""):
        return []
    return [key for key in override_keys
            if key.startswith("model.") and key.removeprefix("model.") in size_keys]
