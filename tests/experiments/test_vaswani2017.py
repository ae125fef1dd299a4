"""experiments/vaswani2017 (Table 3 of "Attention Is All You Need"): the sweep at every scale,
its expected table, the paper-scale parameter counts, and the key size (`head_dim`) its rows
(A) and (B) set."""

import json
import os
import re

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from flax.traverse_util import flatten_dict

from jaxformer import cli
from jaxformer import config as config_lib
from jaxformer.inference.seq2seq import init_cache
from jaxformer.layers import TransformerBlock, TransformerStack
from jaxformer.models.transformer import VARIANTS, Transformer, build, shift_right
from jaxformer.train import trainer
from launch import sweep
from tests.helpers import ROOT

EXPERIMENT = os.path.join(ROOT, "experiments", "vaswani2017")
CONFIG = os.path.join(EXPERIMENT, "config.py")
with open(os.path.join(EXPERIMENT, "expected.json"), encoding="utf-8") as f:
    EXPECTED = json.load(f)
ROWS = list(EXPECTED["rows"])

# Table 3 as printed: each row's changes to the base model.
PAPER_BASE = dict(num_layers=6, d_model=512, mlp_dim=2048, num_heads=8, d_k=64,
                  dropout_rate=0.1, label_smoothing=0.1, num_steps=100_000,
                  positions="sinusoidal")
PAPER_ROWS = {
    "base": {},
    "A1": dict(num_heads=1, d_k=512),
    "A2": dict(num_heads=4, d_k=128),
    "A3": dict(num_heads=16, d_k=32),
    "A4": dict(num_heads=32, d_k=16),
    "B1": dict(d_k=16),
    "B2": dict(d_k=32),
    "C1": dict(num_layers=2),
    "C2": dict(num_layers=4),
    "C3": dict(num_layers=8),
    "C4": dict(d_model=256, d_k=32),
    "C5": dict(d_model=1024, d_k=128),
    "C6": dict(mlp_dim=1024),
    "C7": dict(mlp_dim=4096),
    "D1": dict(dropout_rate=0.0),
    "D2": dict(dropout_rate=0.2),
    "D3": dict(label_smoothing=0.0),
    "D4": dict(label_smoothing=0.2),
    "E": dict(positions="learned"),
    "big": dict(d_model=1024, mlp_dim=4096, num_heads=16, dropout_rate=0.3, num_steps=300_000),
}


def _closed_form(*, vocab, max_len, num_layers, d_model, mlp_dim, num_heads, d_k, positions,
                 **_):
    """Parameters of the model counted by hand: one shared embedding table; per layer the
    attention projections (q, k, v: d x h*d_k; output h*d_k x d, all with biases), the
    feed-forward (d x d_ff, d_ff x d, biases) and a LayerNorm (scale, bias) per sub-layer
    (post-LN: no final norm); learned positions add a source and a target table."""
    d, q = d_model, num_heads * d_k
    attention = 4 * d * q + 3 * q + d
    ffn = 2 * d * mlp_dim + mlp_dim + d
    encoder_layer = attention + ffn + 2 * 2 * d
    decoder_layer = 2 * attention + ffn + 3 * 2 * d
    position_tables = 2 * max_len * d if positions == "learned" else 0
    return vocab * d + num_layers * (encoder_layer + decoder_layer) + position_tables


def _points(scale):
    return {p.name: p for p in sweep.plan(f"{CONFIG}:{scale}", "/nonexistent").points}


def _row_config(scale, point):
    config = config_lib.load_config(f"{CONFIG}:{scale}")
    config_lib.apply_overrides(config, [f[len("--config."):] for f in point.override_flags()])
    return config


def _params(capsys, scale, point):
    capsys.readouterr()
    assert cli.main(["params", f"--config={CONFIG}:{scale}", "--json",
                     *point.override_flags()]) == 0
    return json.loads(capsys.readouterr().out)


# --- The sweep and the expected table. ----------------------------------------------------


def test_expected_json_has_the_format_and_every_row_of_table_3():
    assert set(EXPECTED) == {"paper", "url", "table", "metric", "rows"}
    assert EXPECTED["metric"] == {"name": "BLEU", "key": "eval/test_bleu/bleu",
                                  "higher_is_better": True}
    assert ROWS == list(PAPER_ROWS)
    for name, row in EXPECTED["rows"].items():
        assert re.fullmatch(r"[A-Za-z0-9_.+-]+", name)
        assert set(row) == {"label", "metric", "params", "reference_params"}
        assert isinstance(row["label"], str) and isinstance(row["metric"], float)
        assert row["params"] is None or (isinstance(row["params"], int)
                                         and row["params"] % 1_000_000 == 0)
    # Spot checks against the paper: the base and big rows, and the rows with counts.
    assert EXPECTED["rows"]["base"]["metric"] == 25.8
    assert EXPECTED["rows"]["big"]["metric"] == 26.4
    assert {n: r["params"] // 1_000_000 for n, r in EXPECTED["rows"].items() if r["params"]} == {
        "base": 65, "B1": 58, "B2": 60, "C1": 36, "C2": 50, "C3": 80, "C4": 28, "C5": 168,
        "C6": 53, "C7": 90, "big": 213}


@pytest.mark.parametrize("scale", ["scale=cpu", "scale=paper", "runlocal"])
def test_sweep_plans_one_point_per_expected_row(scale):
    assert list(_points(scale)) == ROWS


def test_paper_scale_rows_are_table_3():
    for name, point in _points("scale=paper").items():
        row = {**PAPER_BASE, **PAPER_ROWS[name]}
        config = _row_config("scale=paper", point)
        model = config.model
        head_dim = model.head_dim or model.d_model // model.num_heads
        assert model.variant == ""
        assert (model.num_layers, model.d_model, model.mlp_dim, model.num_heads, head_dim,
                model.dropout_rate, config.task.label_smoothing, config.train.num_steps,
                model.positions) == (
            row["num_layers"], row["d_model"], row["mlp_dim"], row["num_heads"], row["d_k"],
            row["dropout_rate"], row["label_smoothing"], row["num_steps"], row["positions"]
        ), name
        assert config.optim.lr == pytest.approx(row["d_model"] ** -0.5), name
        assert (config.data.vocab_size, config.optim.warmup_steps) == (37_000, 4000)
        assert config.train.average_last == 0  # Table 3: no checkpoint averaging.


def test_cpu_scale_rows_change_the_cpu_base_as_the_paper_changes_its_base():
    base_config = _row_config("scale=cpu", _points("scale=cpu")["base"])
    base = base_config.model
    d_k = base.d_model // base.num_heads
    for name, point in _points("scale=cpu").items():
        config = _row_config("scale=cpu", point)
        model = config.model
        head_dim = model.head_dim or model.d_model // model.num_heads
        paper = {**PAPER_BASE, **PAPER_ROWS[name]}
        # Each size is the CPU base's times the paper's ratio to its base.
        for key, value in [("num_layers", model.num_layers), ("d_model", model.d_model),
                           ("mlp_dim", model.mlp_dim), ("num_heads", model.num_heads)]:
            assert value * PAPER_BASE[key] == base[key] * paper[key], (name, key)
        assert head_dim * PAPER_BASE["d_k"] == d_k * paper["d_k"], name
        assert config.train.num_steps * PAPER_BASE["num_steps"] == (
            base_config.train.num_steps * paper["num_steps"]), name
        assert (model.dropout_rate, config.task.label_smoothing, model.positions) == (
            paper["dropout_rate"], paper["label_smoothing"], paper["positions"]), name
        assert config.optim.lr == pytest.approx(model.d_model ** -0.5), name


# --- Parameter counts at the paper's scale. -----------------------------------------------


@pytest.mark.slow
def test_paper_scale_parameter_counts_are_the_closed_form_and_the_reference(capsys):
    config = config_lib.load_config(f"{CONFIG}:scale=paper")
    max_len = max(config.data.max_source_length, config.data.max_target_length,
                  config.task.max_decode_length)
    for name, point in _points("scale=paper").items():
        total = _params(capsys, "scale=paper", point)["total"]
        expected = _closed_form(vocab=37_000, max_len=max_len,
                                **{**PAPER_BASE, **PAPER_ROWS[name]})
        assert total == expected == EXPECTED["rows"][name]["reference_params"], name


def test_base_row_counts_each_module(capsys):
    modules = _params(capsys, "scale=paper", _points("scale=paper")["base"])["modules"]
    d, d_ff = 512, 2048
    assert modules["embedding"]["count"] == 37_000 * d
    block = modules["encoder"]["children"]["block_0"]["count"]
    assert block == (4 * d * d + 4 * d) + (2 * d * d_ff + d_ff + d) + 2 * 2 * d
    assert set(modules) == {"embedding", "encoder", "decoder"}


# --- The key size: `qkv_features` in the layers, `head_dim` in the model. ----------------


def _shapes(tree):
    return jax.tree.map(lambda x: x.shape, tree)


@pytest.mark.slow
def test_block_qkv_features_sets_the_projection_widths():
    x, encoded = jnp.ones((2, 5, 16)), jnp.ones((2, 3, 24))
    block = TransformerBlock(num_heads=4, mlp_dim=32, qkv_features=8, cross_attention=True,
                             causal=True)
    variables = block.init(jax.random.key(0), x, encoded)
    params = _shapes(variables["params"])
    assert params["attention"]["qkv"]["kernel"] == (16, 3 * 8)
    assert params["attention"]["out"]["kernel"] == (8, 16)
    assert params["cross_attention"]["query"]["kernel"] == (16, 8)
    assert params["cross_attention"]["kv"]["kernel"] == (24, 2 * 8)
    assert block.apply(variables, x, encoded).shape == x.shape


@pytest.mark.slow
@pytest.mark.parametrize("scan_layers", [False, True])
def test_stack_passes_qkv_features_to_every_block(scan_layers):
    stack = TransformerStack(num_layers=2, num_heads=2, mlp_dim=8, qkv_features=6,
                             scan_layers=scan_layers)
    params = flatten_dict(stack.init(jax.random.key(0), jnp.ones((1, 3, 4)))["params"])
    kernels = [v.shape for k, v in params.items() if k[-2:] == ("qkv", "kernel")]
    assert kernels == ([(2, 4, 18)] if scan_layers else [(4, 18)] * 2)  # 3 * qkv_features.


def _init(model):
    return model.init(jax.random.key(0), jnp.ones((1, 6), jnp.int32),
                      jnp.ones((1, 5), jnp.int32))["params"]


@pytest.mark.slow
def test_head_dim_zero_keeps_the_parameter_tree():
    default = Transformer(vocab_size=50, max_len=16, **VARIANTS["tiny"])
    explicit = default.clone(head_dim=32 // 4)  # d_model / num_heads of "tiny".
    zero = _init(default.clone(head_dim=0))
    jax.tree.map(np.testing.assert_array_equal, zero, _init(explicit))
    assert _shapes(zero["encoder"]["block_0"]["attention"]) == {
        "qkv": {"kernel": (32, 96), "bias": (96,)}, "out": {"kernel": (32, 32), "bias": (32,)}}
    # A config without `head_dim` (older configs and workdirs) builds the same model.
    config = ml_collections.ConfigDict(dict(
        variant="tiny", num_layers=0, d_model=0, num_heads=0, mlp_dim=0, dropout_rate=0.0,
        attention_dropout_rate=0.0, norm_first=False, positions="sinusoidal",
        share_embeddings=True))
    built = build(config, vocab_size=50, max_len=16, bos_id=1, dtype=jnp.float32, remat=False)
    assert built.head_dim == 0
    jax.tree.map(np.testing.assert_array_equal, zero, _init(built))


@pytest.mark.slow
def test_head_dim_sets_the_key_and_value_width_and_the_count():
    model = Transformer(vocab_size=50, max_len=16, **VARIANTS["tiny"], head_dim=3)
    params = _init(model)
    assert _shapes(params["decoder"]["block_1"]["cross_attention"]["kv"]["kernel"]) == (32, 24)
    assert sum(x.size for x in jax.tree.leaves(params)) == _closed_form(
        vocab=50, max_len=16, num_layers=2, d_model=32, mlp_dim=64, num_heads=4, d_k=3,
        positions="sinusoidal")
    with pytest.raises(ValueError, match="head_dim"):
        _init(model.clone(head_dim=-1))


@pytest.mark.slow
def test_cached_decoding_matches_teacher_forcing_with_a_head_dim():
    model = Transformer(vocab_size=50, max_len=16, bos_id=1, **VARIANTS["tiny"], head_dim=5)
    params = _init(model)
    source = jnp.array([[5, 6, 7, 2, 0], [9, 2, 0, 0, 0]])
    target = jnp.array([[8, 9, 10, 2], [11, 12, 2, 0]])
    full = model.apply({"params": params}, source, target)
    encoded = model.apply({"params": params}, source, method="encode")
    decoder_inputs = shift_right(target, 1)
    cache = init_cache(model, encoded, source, max_len=6)
    steps = []
    for t in range(target.shape[1]):
        logits, variables = model.apply(
            {"params": params, "cache": cache}, encoded, source, decoder_inputs[:, t:t + 1],
            decode=True, mutable=["cache"], method="decode")
        cache = variables["cache"]
        steps.append(logits[:, 0])
    np.testing.assert_allclose(jnp.stack(steps, axis=1), full, atol=1e-5)


# --- A smoke run. -------------------------------------------------------------------------


@pytest.mark.slow
def test_runlocal_row_with_a_head_dim_trains_and_logs_the_table_metric(tmp_path):
    point = _points("runlocal")["B1"]
    config = _row_config("runlocal", point)
    config_lib.apply_overrides(config, [f"data.data_dir={tmp_path}"])
    assert config.model.head_dim == 1
    trainer.train(config, str(tmp_path / "B1"))
    final = {}
    with open(tmp_path / "B1" / "metrics.jsonl", encoding="utf-8") as f:
        for record in map(json.loads, f):
            final.update(record)
    assert final["step"] == 2 and EXPECTED["metric"]["key"] in final
