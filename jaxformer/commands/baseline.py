"""`jaxformer baseline --config=FILE[:ARGS] --workdir=DIR [--config.a.b=V ...]`.

Fits the TF-IDF + logistic regression baseline (`jaxformer.baselines.tfidf_logreg`) on the
training data of a text classification config and scores it on the splits of the config's
`classification` evaluators, written to the workdir's `metrics.jsonl` under the evaluators'
names (`eval/<name>/top1`, `eval/<name>/macro_f1`), as a trained model's would be: a paper
table puts both side by side. C is chosen on `--select_on` (default `validation`).
"""

from __future__ import annotations

import contextlib
import os
import time

from jaxformer.commands import common

HELP = "fit the TF-IDF + logistic regression baseline of a text classification config"
TAKES_OVERRIDES = True


def add_arguments(parser) -> None:
    parser.add_argument("--config", required=True, help="path/to/config.py[:arg-string]")
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--select_on", default="validation",
                        help="the split whose accuracy chooses C (not a test split)")


def run(args, overrides: list[str]) -> int:
    from jaxformer import config as config_lib
    from jaxformer import registry
    from jaxformer.baselines import tfidf_logreg
    from jaxformer.console import log
    from jaxformer.errors import UserError, as_user_error
    from jaxformer.train import workdir as workdir_lib
    from jaxformer.train.metrics import METRICS_FILE, MetricWriter

    config = common.load_config(args.config, overrides)
    if config.task.name != "text_classification":
        raise UserError(f"the TF-IDF baseline classifies texts; task {config.task.name!r} is "
                        "not text_classification")
    evals = {name: entry for name, entry in config.evals.items()
             if entry.type == "classification"}
    if not evals:
        raise UserError("the config has no classification evaluator to score the baseline on")
    # Everything is checked before the workdir is touched: its path, what it holds already,
    # the data (built in memory: the baseline keeps no tokenizer).
    workdir_lib.check_workdir_path(args.workdir)
    saved = os.path.join(args.workdir, "config.json")
    text = config_lib.to_json(config) + "\n"
    if os.path.exists(saved) and _read(saved) != text:
        raise UserError(f"{args.workdir} holds another run (its config.json differs from this "
                        "config); use another --workdir")
    start = time.time()
    with as_user_error("config"):
        data = registry.lookup("data", config.data.name).build(config.data, workdir=None)
    splits = {name: entry.split or next(iter(data.eval)) for name, entry in evals.items()}
    scored = {*splits.values(), args.select_on}
    unknown = sorted(scored - set(data.eval))
    if unknown:
        raise UserError(f"no split {', '.join(unknown)}; available: {', '.join(data.eval)}")
    chosen, scores = tfidf_logreg.fit_and_score(
        data.texts["train"], {split: data.texts[split] for split in scored},
        select_on=args.select_on)
    with workdir_lib.lock_workdir(args.workdir):
        with open(saved, "w", encoding="utf-8") as f:
            f.write(text)
        with contextlib.suppress(FileNotFoundError):  # A refit replaces its own figures.
            os.remove(os.path.join(args.workdir, METRICS_FILE))
        writer = MetricWriter(args.workdir)
        scalars = {f"eval/{name}/{metric}": value for name, split in splits.items()
                   for metric, value in scores[split].items()}
        writer.write(0, {**scalars, "baseline/C": chosen})
        writer.close()
    log(" | ".join(f"{k} {v:.4f}" for k, v in scalars.items()))
    log(f"TF-IDF + logistic regression (C={chosen:g}) on {len(data.texts['train'].labels):,} "
        f"training texts in {time.time() - start:.1f}s")
    return 0


def _read(path: str) -> str:
    with open(path, encoding="utf-8") as f:
        return f.read()
