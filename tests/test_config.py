"""Config loading, arg strings, locked overrides; every config file loads."""

import os

import pytest

from jaxformer import config as config_lib
from tests.helpers import CONFIGS, ROOT


def test_parse_arg_types_and_flags():
    arg = config_lib.parse_arg("cpu,variant=B/16,steps=3,lr=0.5", cpu=False, variant="",
                               steps=1, lr=1.0)
    assert arg.cpu is True and arg.variant == "B/16" and arg.steps == 3 and arg.lr == 0.5


def test_parse_arg_unknown_name():
    with pytest.raises(config_lib.ConfigError, match="unknown config arg 'gpu'"):
        config_lib.parse_arg("gpu", cpu=False)


# The args a config cannot do without (a source run that need not exist yet).
REQUIRED_ARGS = {"configs/vit/fashion_mnist_transfer.py": ":init_from=/nonexistent"}


@pytest.mark.parametrize("path", CONFIGS)
def test_every_config_loads_locked(path):
    config = config_lib.load_config(os.path.join(ROOT, path) + REQUIRED_ARGS.get(path, ""))
    path = os.path.join(ROOT, path)
    with pytest.raises(AttributeError):
        config.no_such_field = 1
    runlocal = config_lib.load_config(path + ":runlocal")
    assert runlocal.train.num_steps <= 10


def test_a_transfer_needs_its_source():
    with pytest.raises(config_lib.ConfigError, match="init_from=DIR is required"):
        config_lib.load_config(os.path.join(ROOT, "configs/vit/fashion_mnist_transfer.py"))


def test_cpu_recipe_is_nanogpt_cpu():
    c = config_lib.load_config(os.path.join(ROOT, "configs/gpt/shakespeare_char.py:cpu"))
    assert (c.data.block_size, c.train.batch_size, c.train.num_steps) == (64, 12, 2000)
    assert (c.model.num_layers, c.model.num_heads, c.model.d_model) == (4, 4, 128)
    assert c.model.dropout_rate == 0.0 and c.optim.b2 == 0.99 and c.optim.weight_decay == 0.1
    assert (c.optim.lr, c.optim.min_lr, c.optim.warmup_steps, c.optim.decay_steps) == (
        1e-3, 1e-4, 100, 2000)
    assert c.optim.grad_clip == 1.0


def test_overrides_apply_with_types():
    c = config_lib.load_config(os.path.join(ROOT, "configs/gpt/shakespeare_char.py"))
    config_lib.apply_overrides(c, ["train.num_steps=7", "optim.lr=3e-4", "train.remat=true",
                                   "model.variant=tiny"])
    assert c.train.num_steps == 7 and c.optim.lr == 3e-4 and c.train.remat is True
    assert c.model.variant == "tiny"


@pytest.mark.parametrize("override,message", [
    ("train.num_step=7", "did you mean 'train.num_steps'"),
    ("nothing.here=1", "config has no field 'nothing'"),
    ("train.num_steps=seven", "expected an integer"),
    ("train.remat=maybe", "expected a boolean"),
    ("optim.lr=fast", "expected a number"),
    ("train=3", "is a group"),
    ("train.num_steps", "needs a value"),
])
def test_bad_overrides_raise(override, message):
    c = config_lib.load_config(os.path.join(ROOT, "configs/gpt/shakespeare_char.py"))
    with pytest.raises(config_lib.ConfigError, match=message):
        config_lib.apply_overrides(c, [override])


def test_missing_config_file():
    with pytest.raises(config_lib.ConfigError, match="config file not found"):
        config_lib.load_config("configs/nope.py")


def test_empty_arg_string_is_refused():
    with pytest.raises(config_lib.ConfigError, match="empty arg string"):
        config_lib.load_config(os.path.join(ROOT, "configs/gpt/shakespeare_char.py:"))


def test_configs_import_no_library_code():
    """Configs are data: loading one must not import jax (the command line sets up devices
    after reading the config)."""
    import subprocess
    import sys

    code = ("import sys; from jaxformer import config as c; from tests.helpers import CONFIGS; "
            "[c.load_config(p + ':runlocal') for p in CONFIGS]; print('jax' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            cwd=ROOT, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"
