"""How Hugging Face tensors become jaxformer parameters and back.

A `Rule` ties one or more tensors of a Hugging Face state dict (PyTorch layout) to one or
more jaxformer parameters (flax layout, paths joined by "/") with a pair of inverse
functions. A family's mapping is a list of rules; `convert` checks that the rules cover every
tensor and every parameter exactly once, with the shapes each side expects.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import numpy as np

Arrays = tuple[np.ndarray, ...]


def _same(*arrays: np.ndarray) -> Arrays:
    return arrays


@dataclasses.dataclass(frozen=True)
class Rule:
    """`params = to_params(*hf)` and `hf = to_hf(*params)`, each a tuple of arrays."""

    hf: tuple[str, ...]
    params: tuple[str, ...]
    to_params: Callable[..., Arrays] = _same
    to_hf: Callable[..., Arrays] = _same
    kind: str = "copy"

    def describe(self) -> str:
        return f"{', '.join(self.hf)}  ->  {', '.join(self.params)}  ({self.kind})"


def copy(hf: str, param: str) -> Rule:
    """The same array on both sides (biases, embeddings, class tokens...)."""
    return Rule((hf,), (param,))


def _transpose(x: np.ndarray) -> Arrays:
    return (x.T,)


def linear(hf: str, param: str, *, bias: bool = True) -> list[Rule]:
    """`torch.nn.Linear` `{hf}.weight` [out, in] (+ `.bias`) -> Dense `{param}/kernel` [in, out]."""
    rules = [Rule((f"{hf}.weight",), (f"{param}/kernel",), _transpose, _transpose, "transpose")]
    if bias:
        rules.append(copy(f"{hf}.bias", f"{param}/bias"))
    return rules


def conv1d(hf: str, param: str) -> list[Rule]:
    """GPT-2's `Conv1D` (already [in, out]) -> Dense `{param}/kernel`, `{param}/bias`."""
    return [copy(f"{hf}.weight", f"{param}/kernel"), copy(f"{hf}.bias", f"{param}/bias")]


def fused_linear(hfs: Sequence[str], param: str, *, bias: bool = True) -> list[Rule]:
    """Several Linears (query, key, value) -> one Dense whose output is their concatenation."""
    def to_params(*weights: np.ndarray) -> Arrays:
        return (np.concatenate(weights, axis=0).T,)

    def to_hf(kernel: np.ndarray) -> Arrays:
        return tuple(np.split(kernel.T, len(hfs), axis=0))

    def biases_to_params(*biases: np.ndarray) -> Arrays:
        return (np.concatenate(biases),)

    def biases_to_hf(b: np.ndarray) -> Arrays:
        return tuple(np.split(b, len(hfs)))

    rules = [Rule(tuple(f"{h}.weight" for h in hfs), (f"{param}/kernel",), to_params, to_hf,
                  "concatenate, transpose")]
    if bias:
        rules.append(Rule(tuple(f"{h}.bias" for h in hfs), (f"{param}/bias",),
                          biases_to_params, biases_to_hf, "concatenate"))
    return rules


def layer_norm(hf: str, param: str, *, weight: str = "weight", bias: str = "bias") -> list[Rule]:
    """`torch.nn.LayerNorm` -> flax LayerNorm (`scale`, `bias`)."""
    return [copy(f"{hf}.{weight}", f"{param}/scale"), copy(f"{hf}.{bias}", f"{param}/bias")]


def embedding(hf: str, param: str) -> Rule:
    """`torch.nn.Embedding.weight` -> flax Embed `embedding` (same layout)."""
    return copy(f"{hf}.weight", f"{param}/embedding")


def _oihw_to_hwio(x: np.ndarray) -> Arrays:
    return (np.transpose(x, (2, 3, 1, 0)),)


def _hwio_to_oihw(x: np.ndarray) -> Arrays:
    return (np.transpose(x, (3, 2, 0, 1)),)


def conv(hf: str, param: str, *, bias: bool = True) -> list[Rule]:
    """`torch.nn.Conv2d` weight [out, in, h, w] -> flax Conv `kernel` [h, w, in, out]."""
    rules = [Rule((f"{hf}.weight",), (f"{param}/kernel",), _oihw_to_hwio, _hwio_to_oihw,
                  "OIHW -> HWIO")]
    if bias:
        rules.append(copy(f"{hf}.bias", f"{param}/bias"))
    return rules
