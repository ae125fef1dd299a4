"""Named variants against explicit size fields, and overrides that a variant would void."""

import ml_collections
import pytest

from jaxformer import registry
from jaxformer.errors import UserError
from jaxformer.models import bert, clip, detr, gpt, transformer, variants, vit

VARIANTS = {"small": dict(num_layers=2, d_model=8)}


def model(**fields):
    return ml_collections.ConfigDict(
        {"name": "gpt", "variant": "", "num_layers": 3, "d_model": 4, **fields})


def test_choose_reads_the_variant_or_the_explicit_fields():
    keys = ("num_layers", "d_model")
    assert variants.choose(model(variant="small"), keys, family="X", variants=VARIANTS) == (
        dict(num_layers=2, d_model=8))
    assert variants.choose(model(), keys, family="X", variants=VARIANTS) == dict(
        num_layers=3, d_model=4)
    assert variants.choose(model(variant="B/2"), keys, family="X",
                           parse=lambda v: {"patch": int(v[2:])}) == {"patch": 2}
    with pytest.raises(ValueError, match="unknown X variant 'big'; known: small"):
        variants.choose(model(variant="big"), keys, family="X", variants=VARIANTS)


@pytest.mark.parametrize("value", [0, -2])
def test_explicit_sizes_must_be_positive(value):
    with pytest.raises(ValueError, match=f"model.num_layers must be a positive integer, got "
                                         f"{value}"):
        variants.choose(model(num_layers=value), ("num_layers", "d_model"), family="X",
                        variants=VARIANTS)


def test_shadowed_overrides_only_under_a_variant():
    keys = ["model.num_layers", "model.dropout_rate", "train.num_steps"]
    assert variants.shadowed_overrides(model(variant="small"), keys, ("num_layers", "d_model")
                                       ) == ["model.num_layers"]
    assert variants.shadowed_overrides(model(), keys, ("num_layers", "d_model")) == []


@pytest.mark.parametrize("module", [gpt, bert, vit, clip, transformer, detr])
def test_every_variant_sets_exactly_the_size_keys(module):
    """What a variant returns is what the explicit fields would give: the same keys, so that
    an override of any of them under a variant is caught."""
    for name in module.VARIANTS:
        if module in (vit, clip):
            name = f"{name}/16"
        sizes = variants.choose(ml_collections.ConfigDict(dict(variant=name)),
                                module.SIZE_KEYS, family="", variants=module.VARIANTS,
                                parse=getattr(module, "parse_variant", None)
                                if module in (vit, clip) else None)
        assert set(sizes) == set(module.SIZE_KEYS), name


def test_registry_refuses_an_override_the_variant_voids():
    config = ml_collections.ConfigDict(dict(model=model(variant="tiny")))
    with pytest.raises(UserError, match=r"--config.model.num_heads has no effect: "
                                        r"model.variant='tiny' sets the model's sizes"):
        registry.check_variant_overrides(config, ["train.lr", "model.num_heads"])
    registry.check_variant_overrides(config, ["model.dropout_rate"])
    config.model.variant = ""
    registry.check_variant_overrides(config, ["model.num_heads"])
