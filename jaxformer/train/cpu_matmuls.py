"""Which library runs the train step's matmuls on CPUs (`train.cpu_matmuls`).

- "xla": XLA:CPU's own choice. It gives a dot to YNN unless its left operand is transposed,
  as in the kernel gradient of every dense layer, `x^T dy`, which contracts over the batch's
  tokens; those run in Eigen, which first packs the transposed operand (on a 2-core AMD EPYC,
  about a fifth of the CLIP tiny/4 step).
- "onednn": every dot of the step runs as one oneDNN matmul, transposed or not (one dot per
  call: jaxlib 0.10's oneDNN fusions of several dots with their sums fail to compile).

The same step, both ways, timed in one process on a 2-core AMD EPYC (Zen 4)
(experiments/results/cpu_train_step.md): nano GPT 30.6 -> 28.6 ms, CLIP tiny/4 1.070 ->
1.034 s, BERT pre-training 2.18 -> 1.82 s, Flamingo 0.70 -> 0.66 s, ViT the same; the
translation Transformer is slower with oneDNN (0.94 -> 1.00 s, the gradient of its 8,000-word
output embedding), so its configs keep "xla". Other platforms (GPUs, TPUs) ignore the choice.

jaxlib 0.10 cannot store a program with oneDNN calls in JAX's persistent compilation cache: such
a step is compiled anew by every process (seconds, against minutes to hours of training), and
JAX's warning that says so on every compile is silenced here.
"""

from __future__ import annotations

import warnings

import jax
import ml_collections

from jaxformer.errors import UserError

CHOICES = ("xla", "onednn")
ONEDNN_OPTIONS = {"xla_cpu_use_onednn": True,
                  "xla_cpu_experimental_onednn_fusion_type": "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT"}
# The jax release whose XLA:CPU was checked with these options; older ones may lack them.
ONEDNN_SINCE = (0, 10)

warnings.filterwarnings("ignore", message=r"(?s).*thunk kind: onednn-fusion", category=UserWarning)


def chosen(train: ml_collections.ConfigDict) -> str:
    """The `train` block's choice; "xla" for workdirs written before the field existed."""
    return train.get("cpu_matmuls", "xla")


def check(choice: str) -> None:
    if choice not in CHOICES:
        raise UserError(f"unknown train.cpu_matmuls {choice!r}; available: {', '.join(CHOICES)}")


def compiler_options(choice: str, platform: str) -> dict | None:
    """XLA compiler options for a train step compiled for `platform` ("cpu", "gpu", ...)."""
    check(choice)
    if choice == "xla" or platform != "cpu" or jax.__version_info__[:2] < ONEDNN_SINCE:
        return None
    return dict(ONEDNN_OPTIONS)
