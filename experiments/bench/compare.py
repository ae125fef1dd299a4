"""`jaxformer bench` beside the PyTorch reference of the same model, in one run on one machine.

The two commands run one after the other, alternating for `--rounds` rounds (so that both
see the same state of a shared machine), each in a fresh process; each prints the median
step time of its timed steps. The summary gives the host's CPU, the versions, every round,
the means and the ratio of jaxformer's step time to PyTorch's, against the goal of 0.8x
(for CLIP the same goal read as throughput: 1.25x open_clip's pairs per second).

  pip install torch open_clip_torch timm transformers   # the references' packages (CPU build)
  python experiments/bench/compare.py gpt [--rounds 4] [--steps 200] [--markdown]
  python experiments/bench/compare.py clip | bert | bert-tiny | translation | vit

`--same_malloc` also runs the reference with the glibc malloc settings that `jaxformer`
gives itself (jaxformer/allocator.py), as a third column. Exit code 0 whether or not the goal
is met; 2 for a bad argument.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import statistics
import subprocess
import sys
from importlib import metadata
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
GOAL = 0.8  # jaxformer's step time at most this fraction of the reference's.


@dataclasses.dataclass(frozen=True)
class Pair:
    """One comparison: the jaxformer config and the reference script with its arguments."""
    config: str
    reference: str
    reference_args: tuple[str, ...]
    steps: int  # timed steps per run, both sides
    what: str


PAIRS = {
    "gpt": Pair("configs/gpt/shakespeare_char.py:cpu", "torch_gpt_reference.py",
                ("--vocab", "73"), 200,
                "nanoGPT's CPU recipe (4 layers, width 128, block 64, batch 12)"),
    "clip": Pair("configs/clip/emoji.py", "torch_clip_reference.py",
                 ("--variant", "tiny/4", "--threads", "2"), 10,
                 "CLIP tiny/4 (32 x 32 images, 4 + 4 layers of width 128, batch 256), "
                 "open_clip"),
    "bert": Pair("configs/bert/books_pretraining.py:variant=mini", "torch_bert_reference.py",
                 ("--variant", "mini", "--threads", "2"), 20,
                 "BERT mini pretraining (MLM + NSP, batch 64 x 128), transformers"),
    "bert-tiny": Pair("configs/bert/books_pretraining.py:variant=tiny",
                      "torch_bert_reference.py", ("--variant", "tiny", "--threads", "2"), 20,
                      "BERT tiny pretraining (MLM + NSP, batch 64 x 128), transformers"),
    "translation": Pair("configs/translation/bible_enes.py", "torch_translation_reference.py",
                        ("--threads", "2"), 20,
                        "Transformer en-es (3 + 3 post-LN layers of width 256, 8k shared "
                        "vocabulary, 64 pairs of 40 tokens), torch.nn.Transformer layers"),
    "vit": Pair("configs/vit/fashion_mnist.py", "torch_vit_reference.py", ("--threads", "2"),
                100, "ViT on Fashion-MNIST (6 layers of width 128, 7 x 7 patches, batch 128), "
                "timm"),
}


def cpu_model() -> str:
    """The host CPU's model name (`/proc/cpuinfo`), or what the platform says."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def last_json(output: str) -> dict:
    """The last line of `output` that is a JSON object (both benches print one)."""
    for line in reversed(output.splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    raise RuntimeError(f"no JSON line in the output:\n{output[-2000:]}")


def run_json(command: list[str], env: dict[str, str] | None = None) -> dict:
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    if result.returncode:
        raise RuntimeError(f"{' '.join(command)} exited {result.returncode}:\n"
                           f"{result.stderr[-3000:]}")
    return last_json(result.stdout)


def commands(pair: Pair, steps: int) -> tuple[list[str], list[str]]:
    ours = [sys.executable, "-m", "jaxformer", "bench", f"--config={pair.config}",
            f"--steps={steps}"]
    reference = [sys.executable, str(HERE / pair.reference), *pair.reference_args,
                 "--steps", str(steps)]
    return ours, reference


def tuned_env() -> dict[str, str]:
    from jaxformer.allocator import tuned_environment

    return tuned_environment(dict(os.environ)) or dict(os.environ)


@dataclasses.dataclass
class Summary:
    columns: dict[str, list[float]]  # column name -> step seconds per round
    num_params: dict[str, int] = dataclasses.field(default_factory=dict)  # side -> count

    def mean(self, column: str) -> float:
        return statistics.fmean(self.columns[column])

    @property
    def ratio(self) -> float:
        """jaxformer's mean step time over the reference's."""
        return self.mean("jaxformer") / self.mean("reference")

    def same_model(self) -> str:
        """What the two sides report of their parameter counts, and whether they agree."""
        ours, theirs = self.num_params.get("jaxformer"), self.num_params.get("reference")
        if ours is None or theirs is None:
            return "parameter counts: not reported"
        if ours == theirs:
            return f"parameters: {ours:,} on both sides"
        return (f"parameters: jaxformer {ours:,}, reference {theirs:,}: NOT the same model, "
                "so the times do not compare")


def markdown(pair: Pair, summary: Summary, versions: dict[str, str], command: str) -> str:
    names = list(summary.columns)
    lines = [f"## {cpu_model()}, {pair.what}",
             f"`{command}`: {', '.join(versions.values())}; "
             f"{len(summary.columns['jaxformer'])} alternating rounds, median step of "
             f"each run (ms).", "",
             "| round | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    rounds = zip(*summary.columns.values())
    for i, row in enumerate(rounds, 1):
        lines.append(f"| {i} | " + " | ".join(f"{s * 1e3:.1f}" for s in row) + " |")
    lines.append("| mean | " + " | ".join(f"**{summary.mean(n) * 1e3:.1f}**" for n in names)
                 + " |")
    verdict = "met" if summary.ratio <= GOAL else "not met"
    lines += ["", f"jaxformer / reference step time: **{summary.ratio:.2f}x** "
              f"({1 / summary.ratio:.2f}x its throughput); the {GOAL}x goal is {verdict}; "
              f"{summary.same_model()}."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("pair", choices=sorted(PAIRS))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=None,
                        help="timed steps per run (default: the pair's)")
    parser.add_argument("--same_malloc", action="store_true",
                        help="also time the reference with jaxformer's malloc settings")
    parser.add_argument("--markdown", action="store_true", help="print a results section")
    args = parser.parse_args(argv)
    if args.rounds < 1 or (args.steps is not None and args.steps < 1):
        parser.error("--rounds and --steps must be at least 1")
    pair = PAIRS[args.pair]
    ours, reference = commands(pair, args.steps or pair.steps)
    runs = {"jaxformer": (ours, None), "reference": (reference, None)}
    if args.same_malloc:
        runs["reference, jaxformer's malloc"] = (reference, tuned_env())

    print(f"# {cpu_model()}, {os.cpu_count()} cores, Python {platform.python_version()}",
          flush=True)
    summary = Summary({name: [] for name in runs})
    versions = {"jax": f"jax {metadata.version('jax')}"}
    for round_ in range(1, args.rounds + 1):
        for name, (command, env) in runs.items():
            result = run_json(command, env)
            summary.columns[name].append(result["step_seconds_median"])
            if "num_params" in result:
                summary.num_params[name.partition(",")[0]] = int(result["num_params"])
            if "framework" in result:
                versions["reference"] = result["framework"]
            print(f"round {round_}  {name:<32} {result['step_seconds_median'] * 1e3:9.1f} ms",
                  flush=True)
    print(f"jaxformer / reference: {summary.ratio:.2f}x (goal <= {GOAL}x); "
          f"{summary.same_model()}")
    if args.markdown:
        shown = " ".join(["python experiments/bench/compare.py", *(argv or sys.argv[1:])])
        print("\n" + markdown(pair, summary, versions, shown))
    return 0


if __name__ == "__main__":
    sys.exit(main())
