"""Position-wise feed-forward block: Dense -> activation -> dropout -> Dense."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from flax import linen as nn

from jaxformer.layers.dense import Dense

Initializer = Callable[..., jax.Array]

# GPT-2's GELU: 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))).
gelu_tanh = functools.partial(jax.nn.gelu, approximate=True)
gelu_exact = functools.partial(jax.nn.gelu, approximate=False)


class MLP(nn.Module):
    """Two-layer perceptron applied to every position.

    Attributes:
      hidden_dim: width of the hidden layer (4 * d_model in GPT-2).
      out_dim: output width; defaults to the input width.
      activation: elementwise non-linearity (GPT-2's tanh-approximated GELU by default).
      dropout_rate: dropout on the hidden activations (training only). Residual dropout on the
        output belongs to the enclosing block.
      use_bias: whether the two Dense layers have biases.
      kernel_init: initializer of the first Dense.
      out_kernel_init: initializer of the output Dense (defaults to `kernel_init`).
      dtype: computation dtype.
      param_dtype: parameter dtype.
    """

    hidden_dim: int
    out_dim: int | None = None
    activation: Callable[[jax.Array], jax.Array] = gelu_tanh
    dropout_rate: float = 0.0
    use_bias: bool = True
    kernel_init: Initializer = nn.initializers.lecun_normal()
    out_kernel_init: Initializer | None = None
    bias_init: Initializer = nn.initializers.zeros_init()
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
        """`[..., d_model]` -> `[..., out_dim]`."""
        dense = functools.partial(
            Dense, use_bias=self.use_bias, bias_init=self.bias_init, dtype=self.dtype,
            param_dtype=self.param_dtype)
        h = dense(self.hidden_dim, kernel_init=self.kernel_init, name="fc")(x)  # [..., hidden]
        h = self.activation(h)
        h = nn.Dropout(self.dropout_rate)(h, deterministic=not train)
        out_init = self.out_kernel_init or self.kernel_init
        return dense(self.out_dim or x.shape[-1], kernel_init=out_init, name="proj")(h)
