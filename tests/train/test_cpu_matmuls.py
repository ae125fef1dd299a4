"""`train.cpu_matmuls`: oneDNN runs every dot of the CPU train step, with the numbers of
XLA's own matmuls."""

import platform
import re

import jax
import numpy as np
import optax
import pytest

from jaxformer.errors import UserError
from jaxformer.train import cpu_matmuls, parallel
from jaxformer.train.state import create_state
from tests.train.test_parallel import BATCH, WIDTH, ThreeLayers

x86 = pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64"),
                         reason="jaxlib's XLA:CPU has oneDNN on x86-64")


def step_and_batch(choice: str):
    strategy = parallel.make_strategy("sharded", 1, choice)
    task, tx = ThreeLayers(), optax.adamw(1e-2)
    rng = np.random.default_rng(0)
    batch = strategy.place_batch({"x": rng.normal(size=(BATCH, WIDTH)).astype(np.float32),
                                  "y": rng.normal(size=(BATCH,)).astype(np.float32)})
    state = strategy.init_state(lambda: create_state(task, tx, 0))
    return strategy.train_step(task, tx, 1), state, batch


def dots(choice: str) -> tuple[int, int]:
    """(dots inside oneDNN fusions, other dots) of the compiled step."""
    step, state, batch = step_and_batch(choice)
    text = step.lower(state, batch).compile().as_text()
    onednn = set(re.findall(r"calls=(%[\w.\-]+).*__onednn_fusion", text))
    bodies = re.findall(r"^(%[\w.\-]+) .*?\{\n(.*?)\n\}", text, re.S | re.M)
    inside = sum(body.count(" dot(") for name, body in bodies if name in onednn)
    return inside, text.count(" dot(") - inside


@x86
def test_onednn_takes_every_dot_and_xla_none():
    # Three layers: 3 forward dots, 3 kernel gradients (x^T dy), 1 input gradient (the
    # last layer's, an outer product, is a multiply).
    assert dots("onednn") == (7, 0)
    assert dots("xla") == (0, 7)


def test_onednn_steps_match_xla_steps():
    params = {}
    for choice in cpu_matmuls.CHOICES:
        step, state, batch = step_and_batch(choice)
        for _ in range(3):
            state, _ = step(state, batch)
        params[choice] = jax.device_get(state.params)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
                 params["onednn"], params["xla"])


def test_options_only_for_onednn_on_cpus():
    assert cpu_matmuls.compiler_options("onednn", "cpu") == cpu_matmuls.ONEDNN_OPTIONS
    assert cpu_matmuls.compiler_options("onednn", "gpu") is None
    assert cpu_matmuls.compiler_options("xla", "cpu") is None


def test_unknown_choice_is_a_user_error():
    with pytest.raises(UserError, match=r"train.cpu_matmuls 'mkl'.*xla, onednn"):
        parallel.make_strategy("pmap", 1, "mkl")
