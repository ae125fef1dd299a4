"""The shared parts of weight import/export: the rule helpers against PyTorch's own layers,
the Hugging Face directory reader, the coverage checks and the commands' errors."""

import json
import logging
import os
import pathlib
import tempfile

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from safetensors.numpy import save_file

from jaxformer import cli
from jaxformer.errors import UserError
from jaxformer.weights import convert, hf_files, rules

RNG = np.random.default_rng(0)


def _random(*shape):
    return RNG.standard_normal(shape).astype(np.float32)


def test_linear_rule_computes_torch_linear():
    weight, bias, x = _random(5, 3), _random(5), _random(4, 3)
    mapped = {}
    for rule in rules.linear("fc", "dense"):
        mapped.update(zip(rule.params, rule.to_params(*({"fc.weight": weight,
                                                          "fc.bias": bias}[h] for h in rule.hf))))
    expected = torch.nn.functional.linear(torch.from_numpy(x), torch.from_numpy(weight),
                                          torch.from_numpy(bias)).numpy()
    np.testing.assert_allclose(x @ mapped["dense/kernel"] + mapped["dense/bias"], expected,
                               rtol=1e-6, atol=1e-6)


def test_conv_rule_computes_torch_conv2d():
    weight, x = _random(6, 3, 3, 2), _random(1, 3, 7, 5)  # OIHW, NCHW
    (rule,) = rules.conv("conv", "conv", bias=False)
    (kernel,) = rule.to_params(weight)
    ours = jax.lax.conv_general_dilated(
        jnp.asarray(x.transpose(0, 2, 3, 1)), jnp.asarray(kernel), (2, 1), ((1, 1), (0, 0)),
        dimension_numbers=("NHWC", "HWIO", "NHWC"))
    expected = torch.nn.functional.conv2d(torch.from_numpy(x), torch.from_numpy(weight),
                                          stride=(2, 1), padding=(1, 0)).numpy()
    np.testing.assert_allclose(np.asarray(ours).transpose(0, 3, 1, 2), expected,
                               rtol=1e-5, atol=1e-5)


def test_fused_linear_rule_concatenates_query_key_value():
    q, k, v = _random(4, 4), _random(4, 4), _random(4, 4)
    kernel_rule, bias_rule = rules.fused_linear(["q", "k", "v"], "qkv")
    (kernel,) = kernel_rule.to_params(q, k, v)
    x = _random(2, 4)
    np.testing.assert_allclose(x @ kernel, np.concatenate([x @ q.T, x @ k.T, x @ v.T], axis=1),
                               rtol=1e-6, atol=1e-6)
    (bias,) = bias_rule.to_params(np.ones(4), 2 * np.ones(4), 3 * np.ones(4))
    assert bias.tolist() == [1] * 4 + [2] * 4 + [3] * 4


@pytest.mark.parametrize("rule_list", [
    rules.linear("a", "a"), rules.conv("a", "a"), rules.fused_linear(["a", "b", "c"], "abc"),
    rules.layer_norm("a", "a"), [rules.embedding("a", "a")], rules.conv1d("a", "a"),
])
def test_every_rule_is_inverted_by_its_export(rule_list):
    shapes = {"a.weight": (6, 3, 2, 2) if rule_list[0].kind == "OIHW -> HWIO" else (6, 6),
              "b.weight": (6, 6), "c.weight": (6, 6), "a.bias": (6,), "b.bias": (6,),
              "c.bias": (6,)}
    for rule in rule_list:
        inputs = [_random(*shapes[name]) for name in rule.hf]
        back = rule.to_hf(*rule.to_params(*inputs))
        for original, restored in zip(inputs, back, strict=True):
            np.testing.assert_array_equal(original, restored)


MAPPING = rules.linear("fc", "dense") + [rules.embedding("wte", "embed")]
SHAPES = {"dense/kernel": (3, 5), "dense/bias": (5,), "embed/embedding": (7, 3)}


def _tensors():
    return {"fc.weight": _random(5, 3), "fc.bias": _random(5), "wte.weight": _random(7, 3),
            "attn.bias": np.ones((1, 1, 4, 4), np.float32)}


def test_params_from_tensors_maps_and_skips_ignored_buffers():
    tensors = _tensors()
    params = convert.params_from_tensors(MAPPING, tensors, SHAPES, ignored=(r".*attn\.bias",))
    np.testing.assert_array_equal(params["dense/kernel"], tensors["fc.weight"].T)
    back = convert.tensors_from_params(MAPPING, params)
    assert sorted(back) == ["fc.bias", "fc.weight", "wte.weight"]
    np.testing.assert_array_equal(back["fc.weight"], tensors["fc.weight"])


@pytest.mark.parametrize("change, named", [
    (lambda t: t.pop("fc.bias"), "fc.bias"),                       # missing
    (lambda t: t.update(extra=np.zeros(2, np.float32)), "extra"),  # unmapped
    (lambda t: t.update({"wte.weight": _random(8, 3)}), "wte.weight"),  # wrong shape
])
def test_checkpoint_errors_name_the_tensor(change, named):
    tensors = _tensors()
    change(tensors)
    with pytest.raises(UserError, match=named):
        convert.params_from_tensors(MAPPING, tensors, SHAPES, ignored=(r".*attn\.bias",))


def test_a_mapping_that_misses_a_parameter_is_a_bug_not_a_user_error():
    with pytest.raises(RuntimeError, match="not mapped.*embed/embedding"):
        convert.params_from_tensors(MAPPING[:2], _tensors(), SHAPES, ignored=(".*",))


def test_hf_directory_reads_shards_and_half_precision(tmp_path):
    import ml_dtypes

    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    save_file({"a": np.ones((2, 2), ml_dtypes.bfloat16)}, tmp_path / "part-1.safetensors")
    save_file({"b": np.full(3, 0.5, np.float16)}, tmp_path / "part-2.safetensors")
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(
        {"weight_map": {"a": "part-1.safetensors", "b": "part-2.safetensors"}}))
    tensors = hf_files.read_tensors(str(tmp_path))
    assert {k: (str(v.dtype), v.tolist()) for k, v in tensors.items()} == {
        "a": ("float32", [[1, 1], [1, 1]]), "b": ("float32", [0.5, 0.5, 0.5])}
    assert hf_files.read_config(str(tmp_path)) == {"model_type": "gpt2"}


@pytest.mark.parametrize("files, message", [
    ({}, "no config.json"),
    ({"config.json": "[1, 2"}, "cannot read"),
    ({"config.json": "{}", "pytorch_model.bin": "x"}, "no safetensors weights"),
    ({"config.json": "{}", "model.safetensors": "not a safetensors file"}, "cannot read"),
])
def test_bad_hf_directories_are_user_errors(tmp_path, files, message):
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    with pytest.raises(UserError, match=message):
        hf_files.read_config(str(tmp_path))
        hf_files.read_tensors(str(tmp_path))


def test_import_command_errors_are_one_line_and_write_nothing(tmp_path, capsys):
    (tmp_path / "hf").mkdir()
    (tmp_path / "hf" / "config.json").write_text(json.dumps({"model_type": "bert"}))
    code = cli.main(["import-weights", f"--from={tmp_path / 'hf'}", "--family=gpt",
                     f"--workdir={tmp_path / 'run'}"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "'bert' model" in err
    assert not (tmp_path / "run").exists()
    assert cli.main(["import-weights", f"--from={tmp_path / 'nowhere'}", "--family=gpt",
                     f"--workdir={tmp_path / 'run'}"]) == 2
    assert "is not a directory" in capsys.readouterr().err


def test_a_checkpoint_without_data_position_restores_its_state(tmp_path, caplog):
    from jaxformer.train.checkpoint import Checkpointer
    from jaxformer.train.state import TrainState

    state = TrainState(step=jnp.zeros((), jnp.int32), params={"w": jnp.arange(4.0)},
                       opt_state=(), rng=jnp.zeros(2, jnp.uint32))
    checkpointer = Checkpointer(str(tmp_path), keep=2, async_save=False)
    checkpointer.save(0, state, None)
    checkpointer.wait()
    abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), state)
    with caplog.at_level(logging.WARNING):
        restored = checkpointer.restore(abstract, data_iter=object())
    checkpointer.close()
    np.testing.assert_array_equal(restored.params["w"], np.arange(4.0))
    assert "holds no data position" in caplog.text


def test_a_written_directory_has_the_modes_of_the_umask(tmp_path):
    """Not the owner-only modes of its temporary staging directory and of files written
    through temporary names (safetensors' writer)."""
    previous = os.umask(0o027)
    try:
        with convert._new_directory(str(tmp_path / "out"), "--to") as staging:
            (pathlib.Path(staging) / "sub").mkdir()
            (pathlib.Path(staging) / "sub" / "config.json").write_text("{}")
            handle, _ = tempfile.mkstemp(dir=staging)  # Mode 0600.
            os.close(handle)
    finally:
        os.umask(previous)
    modes = {str(p.relative_to(tmp_path)): p.stat().st_mode & 0o777
             for p in [tmp_path / "out", *(tmp_path / "out").rglob("*")]}
    assert len(modes) == 4
    assert all(mode == (0o750 if (tmp_path / name).is_dir() else 0o640)
               for name, mode in modes.items()), modes
