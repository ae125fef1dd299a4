"""Alayrac et al., 2022 (Flamingo): few-shot classification against the number of shots,
captioning, and the paper's ablations (Table 3) at CPU scale.

Args (`jaxformer reproduce experiments/alayrac2022 --scale=...`):
  scale=cpu    (default) the chain of configs/flamingo/emoji.py: a CLIP tiny/4 on the emoji
               corpus (`clip`, as configs/clip/emoji.py) and a GPT on the embedded books and
               the training captions (`lm`, configs/flamingo/lm.py), frozen; then the
               Flamingo-style model between them (`flamingo`) and its ablations:
               `no-tanh-gating` (ungated cross-attention), `mean-pool` (one mean-pooled,
               projected visual token per image instead of the Perceiver Resampler),
               `xattn-every-2` (a gated block before every second LM block) and
               `trainable-lm` (the language model trained too).
  runlocal     the rows with tiny models for a few steps (smoke tests).
"""

import ml_collections

from configs import common
from configs.clip import emoji as clip_emoji
from configs.flamingo import emoji as flamingo_emoji
from configs.flamingo import lm as flamingo_lm

RUNS = ("clip", "lm", "flamingo")
# Training steps of each run of the chain at CPU scale, shorter than the standalone configs'
# so that the seven rows train in about an hour on 2 cores (1.0-1.4 h measured).
STEPS = {"clip": 1000, "lm": 1000, "flamingo": 600}
# Table row: the Flamingo config's arg for that ablation.
ABLATIONS = {"flamingo": "", "no-tanh-gating": "gated=false", "mean-pool": "connector=mean",
             "xattn-every-2": "every=2", "trainable-lm": "frozen_lm=false"}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    arg = common.experiment_arg(arg, run="flamingo", clip="", lm="", ablation="")
    if arg.scale != "cpu":
        raise ValueError("alayrac2022 has only scale=cpu (the parameter counts of the paper's "
                         "parts are asserted in tests/layers)")
    if arg.run not in RUNS:
        raise ValueError(f"unknown run {arg.run!r}; available: {', '.join(RUNS)}")
    local = "runlocal" if arg.runlocal else f"steps={STEPS[arg.run]}"
    if arg.run == "clip":
        return clip_emoji.get_config(local)
    if arg.run == "lm":
        return flamingo_lm.get_config(local)
    options = [f"clip={arg.clip}", f"lm={arg.lm}", local, ABLATIONS[arg.ablation or "flamingo"]]
    return flamingo_emoji.get_config(",".join(o for o in options if o))


def get_sweep(hyper, arg: str | None = None) -> list[dict]:
    common.experiment_arg(arg)
    towers = f"clip={hyper.workdir_of('clip')},lm={hyper.workdir_of('lm')}"
    return [{"name": "clip", "arg": "run=clip"},
            {"name": "lm", "arg": "run=lm"},
            *[{"name": row, "arg": f"run=flamingo,{towers},ablation={row}"}
              for row in ABLATIONS]]
