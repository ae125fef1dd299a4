"""init_from and freeze: a ViT linear probe and a fine-tune at a new image size, both started
from a trained Fashion-MNIST workdir; mapping and strictness errors."""

import os

import jax
import numpy as np
import pytest

from jaxformer import config as config_lib
from jaxformer.errors import UserError
from jaxformer.inference.workdir import load_run
from jaxformer.models.vit import resize_position_embedding
from jaxformer.registry import build_data_and_task
from jaxformer.train import trainer, transfer
from jaxformer.train.checkpoint import Checkpointer
from tests.helpers import ROOT

SOURCE = os.path.join(ROOT, "configs/vit/fashion_mnist.py")
TRANSFER = os.path.join(ROOT, "configs/vit/fashion_mnist_transfer.py")


def transfer_config(source_dir, *args, overrides=()):
    config = config_lib.load_config(
        f"{TRANSFER}:runlocal,source=subset,init_from={source_dir}" + "".join(
            "," + a for a in args))
    config_lib.apply_overrides(config, list(overrides))
    return config


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("source"))
    config = config_lib.load_config(f"{SOURCE}:runlocal,source=subset")
    trainer.train(config, workdir)
    return workdir


def flat(params):
    return transfer.flat_paths(jax.device_get(params))


def optimizer_state_size(workdir):
    run = load_run(workdir)
    from jaxformer.train.state import abstract_state

    sharding = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    state = abstract_state(run.config, run.task, sharding)
    return sum(x.size for x in jax.tree.leaves(state.opt_state))


@pytest.mark.slow
def test_linear_probe_trains_only_the_new_head(source, tmp_path):
    workdir = str(tmp_path / "probe")
    config = transfer_config(source, "mode=probe")
    last = trainer.train(config, workdir)
    trained, src = flat(load_run(workdir).params), flat(load_run(source).params)
    encoder = [p for p in trained if p.startswith("encoder/")]
    assert encoder and all(np.array_equal(trained[p], src[p]) for p in encoder)
    # The head started from zeros (not the source's) and was trained.
    assert not np.array_equal(trained["head/kernel"], src["head/kernel"])
    assert np.abs(trained["head/kernel"]).max() > 0
    # Frozen parameters carry no optimizer state: AdamW keeps 2 numbers per trained one.
    head = trained["head/kernel"].size + trained["head/bias"].size
    assert optimizer_state_size(workdir) - 2 * head < 16  # Plus a few step counters.
    assert optimizer_state_size(source) > 2 * sum(v.size for v in src.values())
    assert 0.0 <= last["eval/test/top1"] <= 1.0


@pytest.mark.slow
def test_fine_tune_at_a_new_image_size_resizes_position_embeddings(source):
    config = transfer_config(source, "mode=finetune", "image_size=56")
    data, task = build_data_and_task(config, None)
    fresh = jax.device_get(task.init(jax.random.key(0)))
    loaded = flat(transfer.with_loaded(fresh, transfer.init_from(config, task, fresh)))
    src = flat(load_run(source).params)
    assert loaded["encoder/pos_embedding"].shape == (1, 65, 32)  # 8 x 8 patches + [class].
    np.testing.assert_allclose(
        loaded["encoder/pos_embedding"],
        resize_position_embedding(src["encoder/pos_embedding"], (8, 8)), rtol=1e-6)
    for path in src:
        if path != "encoder/pos_embedding":
            np.testing.assert_array_equal(loaded[path], src[path])


@pytest.mark.slow
def test_fine_tune_trains_end_to_end(source, tmp_path):
    last = trainer.train(transfer_config(source, "mode=finetune", "image_size=56"),
                         str(tmp_path / "finetune"))
    assert np.isfinite(last["train/loss"]) and 0.0 <= last["eval/test/top1"] <= 1.0
    assert load_run(str(tmp_path / "finetune")).params["encoder"]["pos_embedding"].shape == (
        1, 65, 32)


def test_mapping_errors_are_user_errors(source, tmp_path):
    with pytest.raises(UserError, match="has no parameter 'trunk/cls'"):
        trainer.train(transfer_config(source, overrides=[
            "init_from.mapping=(('encoder', 'trunk'),)", "freeze=()"]), str(tmp_path / "a"))
    # A smaller head is not resizable: strict loading of everything fails on its shape.
    config = transfer_config(source, "mode=finetune", "image_size=28", overrides=[
        "model.num_layers=1"])
    with pytest.raises(UserError, match="source parameters are not used"):
        trainer.train(config, str(tmp_path / "b"))
    assert not os.path.exists(tmp_path / "a" / "config.json")
    with pytest.raises(UserError, match="no checkpoints"):
        trainer.train(transfer_config(str(tmp_path / "none")), str(tmp_path / "c"))


@pytest.mark.slow
def test_non_strict_loading_keeps_fresh_parameters(source):
    config = transfer_config(source, "mode=finetune", "image_size=28", overrides=[
        "model.num_layers=1", "init_from.strict=False"])
    data, task = build_data_and_task(config, None)
    fresh = jax.device_get(task.init(jax.random.key(0)))
    loaded = transfer.init_from(config, task, fresh)
    assert "encoder/transformer/block_1/mlp/fc/kernel" not in loaded
    src = flat(load_run(source).params)
    np.testing.assert_array_equal(loaded["encoder/transformer/block_0/mlp/fc/kernel"],
                                  src["encoder/transformer/block_0/mlp/fc/kernel"])


def test_freeze_patterns_are_checked():
    params = {"encoder": {"kernel": np.zeros((2, 2))}, "head": {"bias": np.zeros(2)}}
    transfer.check_freeze(params, ("encoder/.*",))
    with pytest.raises(ValueError, match="matches no parameter"):
        transfer.check_freeze(params, ("decoder/.*",))
    with pytest.raises(ValueError, match="freeze pattern"):
        transfer.check_freeze(params, ("(",))
    assert transfer.count_frozen(params, ("encoder/.*",)) == (2, 4)


def test_checkpoint_of_source_is_untouched(source):
    steps = Checkpointer(source, keep=3, async_save=False).steps()
    assert steps == [2, 4]
