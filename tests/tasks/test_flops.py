"""FLOPs per example of the LM and translation tasks: the 6N + attention count (Kaplan et al.
2020; PaLM appendix B) against a hand-computed value and against XLA's own count."""

import types

import jax
import ml_collections
import pytest

from jaxformer.tasks.lm import LMTask
from jaxformer.tasks.translation import TranslationTask


def xla_forward_flops(task, params):
    batch = task.dummy_batch(1)
    fn = jax.jit(lambda p, *inputs: task.model.apply({"params": p}, *inputs))
    cost = fn.lower(params, *task.model_inputs(batch)).compile().cost_analysis()
    return (cost[0] if isinstance(cost, list) else cost)["flops"]


def lm_task(variant="", block_size=256, vocab=2000, **sizes):
    model = dict(name="gpt", variant=variant, num_layers=4, num_heads=4, d_model=256,
                 mlp_ratio=4, dropout_rate=0.0)
    model.update(sizes)
    config = ml_collections.ConfigDict(dict(
        model=model, data=dict(block_size=block_size),
        train=dict(compute_dtype="float32", remat=False)))
    tokenizer = types.SimpleNamespace(vocab_size=vocab)
    return LMTask(config, types.SimpleNamespace(tokenizer=tokenizer, vocab_size=vocab))


def test_gpt2_small_per_token_is_6n_plus_attention():
    task = lm_task("gpt2-small", block_size=1024, vocab=50257)
    params = jax.eval_shape(task.init, jax.random.key(0))
    # N without the position table: 124,439,808 - 1024 * 768; attention 12 * L * d * T.
    per_token = 6 * (124_439_808 - 1024 * 768) + 12 * 12 * 768 * 1024
    assert per_token == 855_166_464
    assert task.flops_per_example(params) == per_token * 1024


@pytest.mark.parametrize("make", ["lm", "translation"])
def test_formula_matches_xla_count_of_the_forward_pass(make):
    if make == "lm":
        task = lm_task()
    else:
        tokenizer = types.SimpleNamespace(vocab_size=4000, pad_id=0, bos_id=2, eos_id=1)
        config = ml_collections.ConfigDict(dict(
            model=dict(name="transformer", variant="", num_layers=3, d_model=256, num_heads=4,
                       mlp_dim=1024, dropout_rate=0.0, attention_dropout_rate=0.0,
                       norm_first=False, positions="sinusoidal", share_embeddings=True),
            task=dict(label_smoothing=0.1, max_decode_length=64),
            data=dict(max_source_length=64, max_target_length=64),
            train=dict(compute_dtype="float32", remat=False)))
        task = TranslationTask(config, types.SimpleNamespace(tokenizer=tokenizer))
    params = jax.eval_shape(task.init, jax.random.key(0))
    forward = task.flops_per_example(params) / 3  # Training = forward + 2x for backward.
    assert forward <= xla_forward_flops(task, params) <= 1.02 * forward  # Plus element-wise.
