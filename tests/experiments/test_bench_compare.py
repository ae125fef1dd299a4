"""experiments/bench/compare.py: alternating runs, parsing and the summary (the benches
themselves replaced by recorded figures)."""

import importlib.util
import sys
from pathlib import Path

import pytest

PATH = Path(__file__).resolve().parents[2] / "experiments" / "bench" / "compare.py"


@pytest.fixture(scope="module")
def compare():
    spec = importlib.util.spec_from_file_location("bench_compare", PATH)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    yield module
    del sys.modules[spec.name]


def test_last_json_skips_log_lines(compare):
    output = 'prepared the data\n{"a": 1}\nWARNING: x\n{"step_seconds_median": 0.5}\ndone\n'
    assert compare.last_json(output) == {"step_seconds_median": 0.5}
    with pytest.raises(RuntimeError, match="no JSON line"):
        compare.last_json("no figures here\n")


def fake_runs(compare, monkeypatch, figures, num_params=None):
    """Replaces the subprocesses: each call pops the next figure of its side."""
    num_params = num_params or {"jaxformer": 810880, "reference": 810880}
    calls = []

    def run_json(command, env=None):
        side = "jaxformer" if "jaxformer" in command else "reference"
        tuned = env is not None and "GLIBC_TUNABLES" in env
        calls.append((side, tuned, command))
        result = {"step_seconds_median": figures[(side, tuned)].pop(0),
                  "num_params": num_params[side]}
        if side == "reference":
            result["framework"] = "torch 2.13.0+cpu eager"
        return result

    monkeypatch.setattr(compare, "run_json", run_json)
    monkeypatch.delenv("GLIBC_TUNABLES", raising=False)
    monkeypatch.delenv("JAXFORMER_MALLOC", raising=False)
    return calls


def test_rounds_alternate_and_the_ratio_is_of_the_means(compare, monkeypatch, capsys):
    figures = {("jaxformer", False): [0.024, 0.022], ("reference", False): [0.036, 0.034],
               ("reference", True): [0.030, 0.032]}
    calls = fake_runs(compare, monkeypatch, figures)
    assert compare.main(["gpt", "--rounds", "2", "--steps", "7", "--markdown",
                         "--same_malloc"]) == 0
    # Alternating: one run of each column per round, in the same order every round.
    assert [(side, tuned) for side, tuned, _ in calls] == [
        ("jaxformer", False), ("reference", False), ("reference", True)] * 2
    ours, reference = calls[0][2], calls[1][2]
    assert "--config=configs/gpt/shakespeare_char.py:cpu" in ours and "--steps=7" in ours
    assert reference[-4:] == ["--vocab", "73", "--steps", "7"]
    out = capsys.readouterr().out
    # (0.024 + 0.022) / (0.036 + 0.034) = 0.657...
    assert "jaxformer / reference: 0.66x (goal <= 0.8x)" in out
    assert "| 1 | 24.0 | 36.0 | 30.0 |" in out and "| 2 | 22.0 | 34.0 | 32.0 |" in out
    assert "| mean | **23.0** | **35.0** | **31.0** |" in out
    assert ("**0.66x** (1.52x its throughput); the 0.8x goal is met; parameters: 810,880 on "
            "both sides." in out)
    assert "jax " in out and "torch 2.13.0+cpu eager" in out


def test_goal_not_met_is_said(compare, monkeypatch, capsys):
    fake_runs(compare, monkeypatch, {("jaxformer", False): [0.9], ("reference", False): [1.0]})
    assert compare.main(["clip", "--rounds", "1", "--markdown"]) == 0
    out = capsys.readouterr().out
    assert "**0.90x** (1.11x its throughput); the 0.8x goal is not met;" in out


def test_a_reference_of_another_size_is_called_out(compare, monkeypatch, capsys):
    fake_runs(compare, monkeypatch, {("jaxformer", False): [0.5], ("reference", False): [1.0]},
              num_params={"jaxformer": 805130, "reference": 805140})
    assert compare.main(["vit", "--rounds", "1"]) == 0
    out = capsys.readouterr().out
    assert ("parameters: jaxformer 805,130, reference 805,140: NOT the same model, so the "
            "times do not compare" in out)


@pytest.mark.parametrize("argv", [["gpt", "--rounds", "0"], ["gpt", "--steps", "-1"],
                                  ["resnet"]])
def test_bad_arguments_exit_2(compare, argv, capsys):
    with pytest.raises(SystemExit) as exit_:
        compare.main(argv)
    assert exit_.value.code == 2
