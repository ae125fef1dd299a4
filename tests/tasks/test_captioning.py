"""Captioning with the Flamingo-style model: the chain CLIP run + GPT run -> Flamingo run
(configs/flamingo/emoji.py:runlocal). The frozen towers are loaded from their runs and stay
bit-identical while the resampler and gated blocks train, hold no optimizer state and get no
gradient computation in the compiled step; the loss weighs only caption text; at step 0 the
model computes the GPT run's logits."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs.flamingo import emoji as flamingo_config
from jaxformer import config as config_lib
from jaxformer.inference.workdir import load_run
from jaxformer.registry import build_data_and_task
from jaxformer.train import transfer
from jaxformer.train.checkpoint import Checkpointer
from jaxformer.train.optimizer import make_optimizer
from jaxformer.train.state import abstract_state, create_state, make_train_step
from tests.helpers import ROOT, flamingo_chain

pytestmark = pytest.mark.slow  # Trains or launches runs.

FLAMINGO = os.path.join(ROOT, "configs/flamingo/emoji.py")
FROZEN_PREFIXES = ("vision_encoder/", "lm/token_embedding/", "lm/position_embedding/",
                   "lm/transformer/")


def flamingo(arg=""):
    return config_lib.load_config(f"{FLAMINGO}:runlocal{',' + arg if arg else ''}")


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    """(clip workdir, GPT workdir, Flamingo workdir, the Flamingo config), all trained."""
    root = flamingo_chain(tmp_path_factory)
    clip_dir, lm_dir, run_dir = (str(root / name) for name in ("clip", "lm", "flamingo"))
    return clip_dir, lm_dir, run_dir, flamingo(f"clip={clip_dir},lm={lm_dir}")


@pytest.fixture(scope="module")
def step0(chain):
    """The Flamingo run's data, task and parameters at step 0 (as the trainer makes them)."""
    _, _, run_dir, config = chain
    data, task = build_data_and_task(config, run_dir)
    init_rng = jax.random.split(jax.random.key(config.seed))[0]
    fresh = jax.device_get(jax.jit(task.init)(init_rng))
    params = transfer.with_loaded(fresh, transfer.init_from(config, task, fresh))
    return data, task, transfer.flat_paths(params)


def flat(params):
    return transfer.flat_paths(jax.device_get(params))


def is_frozen(path):
    return path.startswith(FROZEN_PREFIXES)


def test_frozen_towers_stay_bit_identical_while_the_new_parts_train(chain, step0):
    _, _, run_dir, config = chain
    _, _, initial = step0
    run = load_run(run_dir)
    assert run.step == config.train.num_steps
    final = flat(run.params)
    assert final.keys() == initial.keys()
    frozen = [p for p in final if is_frozen(p)]
    trained = [p for p in final if not is_frozen(p)]
    assert {p.split("/")[0] for p in frozen} == {"vision_encoder", "lm"}
    assert {p.split("/")[0] for p in trained} == {"resampler", "lm"}
    assert all(p.startswith(("resampler/", "lm/gated_block_")) for p in trained)
    # The config's patterns freeze exactly these.
    labels = transfer.flat_paths(transfer.frozen_labels(run.params, tuple(config.freeze)))
    assert sorted(p for p, label in labels.items() if label == "frozen") == sorted(frozen)
    for path in frozen:
        np.testing.assert_array_equal(final[path], initial[path], err_msg=path)
    changed = [p for p in trained if not np.array_equal(final[p], initial[p])]
    assert any(p.startswith("resampler/") for p in changed)
    assert any(p.startswith("lm/gated_block_") for p in changed)
    assert len(changed) >= 0.9 * len(trained)
    # The gates left 0: the images now reach the text.
    gates = [p for p in trained if p.endswith("_gate")]
    assert gates and all(initial[p] == 0 for p in gates)
    assert any(final[p] != 0 for p in gates)


def optimizer_state_size(config, task):
    sharding = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    state = abstract_state(config, task, sharding)
    return sum(x.size for x in jax.tree.leaves(state.opt_state))


def test_frozen_parameters_have_no_optimizer_state(chain, step0):
    _, _, _, config = chain
    _, task, initial = step0
    trained = sum(v.size for p, v in initial.items() if not is_frozen(p))
    frozen = sum(v.size for p, v in initial.items() if is_frozen(p))
    assert frozen > 2 * trained  # The towers are most of the model.
    assert transfer.count_frozen(transfer.unflatten_paths(initial), tuple(config.freeze)) == (
        trained, frozen)
    # AdamW keeps 2 numbers per trained parameter, plus a few step counters.
    size = optimizer_state_size(config, task)
    assert 0 <= size - 2 * trained < 16
    # Training the language model too: its moments are there.
    lm_too = config.copy_and_resolve_references()
    lm_too.freeze = flamingo_config.FROZEN_VISION
    lm = sum(v.size for p, v in initial.items() if p.startswith(FROZEN_PREFIXES[1:]))
    assert optimizer_state_size(lm_too, task) - size == 2 * lm


def test_loss_ignores_image_targets_and_padding(chain, step0):
    _, _, run_dir, _ = chain
    data, task, _ = step0
    params = load_run(run_dir).params
    batch = next(data.train_iter(batch_size=8, seed=0))
    targets, weights = batch["targets"], batch["weights"]
    image = np.argwhere(targets == data.media_id)
    padding = np.argwhere((targets == 0) & (weights == 0))
    assert len(image) and len(padding)
    assert (weights[targets == data.media_id] == 0).all()

    compute = jax.jit(lambda b: task.loss(params, b, jax.random.key(0), train=False))

    def loss(targets):
        total, metrics = compute({**batch, "targets": targets})
        return float(total.total), float(total.count), float(metrics["accuracy"].total)

    base = loss(targets)
    assert base[1] == weights.sum() and np.isfinite(base[0]) and base[0] > 0
    for (row, col) in (*image[:3], *padding[:3]):
        changed = targets.copy()
        changed[row, col] = 7 if targets[row, col] != 7 else 8
        assert loss(changed) == base, (row, col)
    # A weighted target does count.
    row, col = np.argwhere(weights == 1)[0]
    changed = targets.copy()
    changed[row, col] = (targets[row, col] + 1) % data.vocab_size
    assert loss(changed)[0] != base[0]


def compiled_step(config):
    """The train step as the trainer builds it (frozen mask, freeze-aware optimizer), compiled
    for one device: (flops, memory analysis)."""
    data, task = build_data_and_task(config, None)
    freeze = tuple(config.get("freeze", ()))
    tx = make_optimizer(config.optim, freeze)
    state = jax.eval_shape(lambda: create_state(task, tx, config.seed))
    step = make_train_step(task, tx, frozen=transfer.frozen_mask(state.params, freeze))
    batch = jax.eval_shape(lambda: task.dummy_batch(config.train.batch_size))
    compiled = jax.jit(step).lower(state, batch).compile()
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    return cost["flops"], compiled.memory_analysis(), flat(state.params), data


def test_compiled_step_computes_no_gradients_for_the_frozen_towers():
    frozen, frozen_memory, params, data = compiled_step(flamingo())
    lm_trained, lm_memory, _, _ = compiled_step(flamingo("frozen_lm=false"))
    none = flamingo()
    none.freeze = ()
    nothing, _, _, _ = compiled_step(none)
    config = flamingo()
    # A weight gradient costs 2 flops per kernel entry and token: the frozen LM's skipped
    # ones (its blocks' kernels and the token embedding, read as the output layer) ...
    tokens = config.train.batch_size * data.seq_length
    lm_kernels = sum(v.size for p, v in params.items()
                     if (p.startswith("lm/transformer/") and p.endswith("kernel"))
                     or p == "lm/token_embedding/embedding")
    assert lm_trained - frozen > 0.75 * 2 * tokens * lm_kernels
    # ... and the frozen image tower has no backward pass at all (the resampler reads its
    # output): weight gradients (counted over the patches alone) and input gradients.
    images = config.train.batch_size * data.max_images
    patches = (data.image_shape[0] // config.model.vision.patch_size) ** 2
    vision_kernels = sum(v.size for p, v in params.items()
                         if p.startswith("vision_encoder/") and p.endswith("kernel"))
    assert nothing - lm_trained > 0.75 * 2 * images * patches * vision_kernels
    # The frozen LM's optimizer moments are not arguments of the step (float32, 2 each).
    lm = sum(v.size for p, v in params.items() if p.startswith(FROZEN_PREFIXES[1:]))
    assert lm_memory.argument_size_in_bytes - frozen_memory.argument_size_in_bytes == 8 * lm
    assert frozen_memory.temp_size_in_bytes < lm_memory.temp_size_in_bytes


def test_frozen_parts_are_the_source_runs_and_step_0_is_the_language_model(chain, step0):
    clip_dir, lm_dir, _, _ = chain
    data, task, initial = step0
    clip_params, clip_step = Checkpointer.read_params(clip_dir)
    lm_params, lm_step = Checkpointer.read_params(lm_dir)
    assert clip_step == lm_step == 4
    clip_flat, lm_flat = transfer.flat_paths(clip_params), transfer.flat_paths(lm_params)
    vision = [p for p in initial if p.startswith("vision_encoder/")]
    assert len(vision) == len([p for p in clip_flat if p.startswith("image_encoder/")])
    for path in vision:
        np.testing.assert_array_equal(
            initial[path], clip_flat["image_encoder" + path[len("vision_encoder"):]], path)
    lm = [p for p in initial if p.startswith(FROZEN_PREFIXES[1:])]
    assert len(lm) == len(lm_flat)
    for path in lm:
        np.testing.assert_array_equal(initial[path], lm_flat[path[len("lm/"):]], path)
    # The gates are 0: the model's logits are the GPT run's, whatever the images.
    batch = next(data.train_iter(batch_size=4, seed=1))
    assert (batch["inputs"] == data.media_id).sum() >= 4
    gpt = load_run(lm_dir)
    assert gpt.data.tokenizer.encode("<image>") == [data.media_id]
    expected = gpt.task.model.apply({"params": gpt.params}, jnp.asarray(batch["inputs"]))
    params = transfer.unflatten_paths(initial)
    logits = task.model.apply({"params": params}, jnp.asarray(batch["images"]),
                              jnp.asarray(batch["inputs"]))
    assert logits.shape == (4, data.seq_length, data.vocab_size)
    np.testing.assert_allclose(logits, expected, atol=1e-5, rtol=0)
    other = task.model.apply({"params": params}, jnp.asarray(batch["images"]) + 1.0,
                             jnp.asarray(batch["inputs"]))
    np.testing.assert_allclose(other, expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("arg,source,message", [
    ("clip", "configs/vit/fashion_mnist.py:runlocal", "clip=.* holds a 'vit' run; it must be "
                                                     "a 'clip' one"),
    ("lm", "configs/clip/emoji.py:runlocal", "lm=.* holds a 'clip' run; it must be a 'gpt'"),
    ("clip", "configs/clip/coco_captions.py:runlocal", "was trained on 'coco_captions'"),
])
def test_a_source_run_of_another_kind_is_one_config_error(tmp_path, arg, source, message):
    (tmp_path / "config.json").write_text(
        config_lib.to_json(config_lib.load_config(os.path.join(ROOT, source))))
    with pytest.raises(config_lib.ConfigError, match=message):
        config_lib.load_config(f"{FLAMINGO}:runlocal,{arg}={tmp_path}")
