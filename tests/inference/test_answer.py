"""answer: the choice of a question's answer from its windows' best spans, a SQuAD 2.0 run
fine-tuned until it knows the hand-written SQuAD files by heart (their answers at their exact
characters, in contexts of several windows, and nothing for the unanswerable question), the
command's output, and its errors (one line, exit code 2, before the model is loaded)."""

import json
import math
import shutil

import numpy as np
import pytest

from jaxformer import cli
from jaxformer.config import read_workdir_config
from jaxformer.data import question_answering_pipeline as pipeline
from jaxformer.errors import UserError
from jaxformer.inference import answer
from jaxformer.inference import workdir as workdir_lib
from jaxformer.inference.workdir import load_run
from tests.data.test_squad import EXODUS, GENESIS, RUTH, document, write_files
from tests.test_cli import run_cli

STEPS = 300  # Enough, at lr 1e-3, to answer every training question right.


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """The runlocal SQuAD 2.0 fine-tuning from scratch on hand-written files, trained once
    through the command line (windows of 48 tokens: each context takes several), on the
    command's own host devices with XLA's backend optimisation off (8 devices: twice as slow)."""
    root = tmp_path_factory.mktemp("squad")
    folder = write_files(root / "squad", "2.0")
    result = run_cli(
        "train", f"--config=configs/bert/squad.py:runlocal,version=2.0,path={folder}",
        f"--workdir={root / 'run'}", f"--config.train.num_steps={STEPS}",
        "--config.optim.lr=1e-3", f"--config.optim.decay_steps={STEPS}",
        "--config.optim.warmup_steps=10", f"--config.train.checkpoint_every={STEPS}",
        f"--config.evals.validation.every_steps={STEPS}", xla_flags=False)
    assert result.returncode == 0, result.stderr
    return root / "run"


@pytest.fixture(scope="module")
def run(workdir):
    return load_run(str(workdir))


def training_questions(version="2.0"):
    """(id, question, context, gold answers as (start, text)) of the hand-written files."""
    for paragraph in document(version)["data"][0]["paragraphs"]:
        for qa in paragraph["qas"]:
            yield (qa["id"], qa["question"], paragraph["context"],
                   [(a["answer_start"], a["text"]) for a in qa["answers"]])


def hand_made_windows(offsets_by_window, owners):
    """`Windows` of `[CLS] context pieces [SEP]`, with each window's context pieces covering
    the given characters."""
    offsets = [[(-1, -1), *pieces, (-1, -1)] for pieces in offsets_by_window]
    lengths = [len(o) for o in offsets]
    return pipeline.Windows(
        tokens=np.zeros(sum(lengths), np.int32),
        starts=np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64),
        first_lengths=np.ones(len(offsets), np.int32),
        labels=np.zeros((len(offsets), 2), np.int32), question=np.asarray(owners, np.int32),
        offsets=np.asarray([o for window in offsets for o in window], np.int32),
        context=np.zeros(sum(lengths), np.int8))


def test_choose_takes_the_best_window_and_the_lowest_null_score():
    contexts = ["Moses kept THE Flock,", "even to Horeb."]
    # Question 0 has two windows: pieces "Moses kept" and "kept THE Flock ,"; question 1 one.
    windows = hand_made_windows([[(0, 5), (6, 10)], [(6, 10), (11, 14), (15, 20), (20, 21)],
                                 [(0, 4), (5, 7), (8, 13), (13, 14)]], owners=[0, 0, 1])
    spans = {"first": np.array([1, 2, 3]), "last": np.array([2, 4, 4]),
             "score": np.array([3.0, 5.0, 1.0]), "null": np.array([1.0, 7.0, 3.0])}
    first, second = answer.choose(windows, contexts, spans, no_answer=False)
    # The second window's span scores best; its null score is not the question's: that is
    # the lowest over its windows (the first one's).
    assert first == answer.Answer("THE Flock,", 11, 21, 5.0, 1.0)
    assert second == answer.Answer("Horeb.", 8, 14, 1.0, 3.0)
    assert contexts[0][first.start:first.end] == first.text

    # With no_answer (SQuAD 2.0), nothing wins when it scores more than the threshold above.
    first, second = answer.choose(windows, contexts, spans, no_answer=True)
    assert first.text == "THE Flock,"  # 1.0 - 5.0 < 0: answered.
    assert second == answer.Answer("", -1, -1, 1.0, 3.0)  # 3.0 - 1.0 > 0: abstains.
    _, second = answer.choose(windows, contexts, spans, no_answer=True, null_threshold=2.5)
    assert second.text == "Horeb."  # 3.0 - 1.0 <= 2.5: answered.

    # A question none of whose windows has a valid span gets no answer, even without no_answer.
    spans["score"][2] = -np.inf
    _, second = answer.choose(windows, contexts, spans, no_answer=False)
    assert second.text == "" and second.start == second.end == -1
    assert second.score == -np.inf


def test_only_question_answering_runs_answer(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"task": {"name": "token_classification"}}))
    with pytest.raises(UserError, match="needs a question answering"):
        answer.check_config(read_workdir_config(str(tmp_path)), "runs/ner")


def test_bad_input_is_one_line_before_the_model_is_read(tmp_path, capsys):
    # Workdirs without a checkpoint: every error comes before the command loads one.
    ner, qa = tmp_path / "ner", tmp_path / "qa"
    for folder, task in [(ner, "token_classification"), (qa, "question_answering")]:
        folder.mkdir()
        (folder / "config.json").write_text(json.dumps({"task": {"name": task}}))
    (tmp_path / "latin1.txt").write_bytes("Horeb, montagne de Dieu: caf\xe9".encode("latin-1"))
    (tmp_path / "blank.txt").write_text(" \n\n")
    (tmp_path / "empty.json").write_text(json.dumps({"data": []}))
    for args, words in [
        ((f"--workdir={qa}", "--question= ", "--context=Horeb"), ("the question is empty",)),
        ((f"--workdir={qa}", "--question=Where?", "--context=\t"), ("the context is empty",)),
        ((f"--workdir={qa}", "--question=Where?", f"--context_file={tmp_path / 'none.txt'}"),
         ("--context_file", "none.txt: no such file")),
        ((f"--workdir={qa}", "--question=Where?", f"--context_file={tmp_path / 'latin1.txt'}"),
         ("latin1.txt: not UTF-8 text",)),
        ((f"--workdir={qa}", "--question=Where?", f"--context_file={tmp_path / 'blank.txt'}"),
         ("the context is empty",)),
        ((f"--workdir={ner}", "--question=Where?", "--context=Horeb"),
         ("holds a 'token_classification' run", "needs a question answering")),
        ((f"--workdir={tmp_path / 'none'}", "--question=Where?", "--context=Horeb"),
         ("no such directory",)),
        ((f"--workdir={qa}", "--context=Horeb"), ("--question is required",)),
        ((f"--workdir={qa}", f"--input={tmp_path / 'none.json'}"), ("none.json: no such file",)),
        ((f"--workdir={qa}", f"--input={tmp_path / 'blank.txt'}"), ("is not a JSON file",)),
        ((f"--workdir={qa}", f"--input={tmp_path / 'empty.json'}"), ("has no questions",)),
        ((f"--workdir={qa}", "--question=Where?", f"--input={tmp_path / 'empty.json'}"),
         ("--input holds its questions",)),
    ]:
        assert cli.main(["answer", *args]) == 2
        out, err = capsys.readouterr()
        lines = err.strip().splitlines()
        assert not out and len(lines) == 1, err
        assert lines[0].startswith("jaxformer answer: error: ")
        assert all(word in lines[0] for word in words), lines[0]
    # The context comes one way or the other: a flag error, exit code 2 too.
    with pytest.raises(SystemExit) as stop:
        cli.main(["answer", f"--workdir={qa}", "--question=Where?", "--context=Horeb",
                  f"--context_file={tmp_path / 'blank.txt'}"])
    assert stop.value.code == 2 and "not allowed with argument" in capsys.readouterr().err


def cli_with_loaded_run(monkeypatch, capsys, run, *args):
    """`jaxformer answer` in this process, on the loaded `run` (no second load)."""
    monkeypatch.setattr(workdir_lib, "load_run", lambda *a, **k: run)
    code = cli.main(["answer", f"--workdir={run.workdir}", *args])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.slow
def test_command_prints_the_answer_and_its_characters_without_the_data(workdir):
    folder = workdir.parent / "squad"
    shutil.move(folder, workdir.parent / "elsewhere")  # The command reads only the workdir.
    try:
        result = run_cli("answer", f"--workdir={workdir}",
                         "--question=Whose flock did Moses keep?", f"--context={EXODUS}")
    finally:
        shutil.move(workdir.parent / "elsewhere", folder)
    assert result.returncode == 0, result.stderr
    text, start, end, score = result.stdout.rstrip("\n").split("\t")
    start, end = int(start), int(end)
    assert (text, start, end) == ("Jethro his father in law", EXODUS.index("Jethro"),
                                  EXODUS.index("Jethro") + len(text))
    assert EXODUS[start:end] == text and math.isfinite(float(score))
    assert f"answered with the checkpoint at step {STEPS} of {workdir}" in result.stderr


@pytest.mark.slow
def test_an_unanswerable_question_gets_the_no_answer_line(run, monkeypatch, capsys):
    assert run.task.no_answer  # SQuAD 2.0
    code, out, err = cli_with_loaded_run(monkeypatch, capsys, run,
                                         "--question=Who ruled over Moab?", f"--context={RUTH}")
    assert code == 0 and out == "no answer\n"  # No tab, unlike an answer's line.
    assert "answering nothing scores" in err and "task.null_threshold 0.0" in err
    got = answer.answer(run, "Who ruled over Moab?", RUTH)
    assert (got.text, got.start, got.end) == ("", -1, -1)
    assert f"scores {got.null_score:.3f}, more than the best span's {got.score:.3f}" in err


@pytest.mark.slow
def test_every_training_question_is_answered_from_several_windows(run):
    for id_, question, context, golds in training_questions():
        windows = pipeline.encode(
            run.data.tokenizer, pipeline.Questions([id_], [question], [context], [golds[:1]]),
            seq_length=run.task.seq_length,
            doc_stride=pipeline.get(run.config.data, "doc_stride"),
            max_query_length=pipeline.get(run.config.data, "max_query_length"),
            drop_unfound=False)
        assert len(windows) >= 3, id_  # The context is longer than one window.
        got = answer.answer(run, question, context)
        if not golds:  # r2: the question the files mark impossible.
            assert (got.text, got.start, got.end) == ("", -1, -1), got
            assert got.null_score - got.score > run.task.null_threshold
            continue
        start, text = golds[0]
        assert (got.text, got.start, got.end) == (text, start, start + len(text)), (id_, got)
        assert got.score > got.null_score
        if id_ == "e2":  # Horeb ends the context: not in its first window.
            assert windows.labels[0].tolist() == [0, 0] and windows.labels.any()
    with pytest.raises(UserError, match="must not be empty"):
        answer.answer(run, "Who?", " ")


@pytest.mark.slow
def test_the_answer_is_the_contexts_own_characters(run, monkeypatch, capsys, tmp_path):
    """The vocabulary lowercases and strips accents, and splits at any whitespace: the answer
    keeps the context's case, accents and spacing, at offsets into the text as given (a
    file's line ends kept as they are)."""
    shouted = EXODUS.upper()
    got = answer.answer(run, "Whose flock did Moses keep?", shouted)
    assert got.text == "JETHRO HIS FATHER IN LAW" == shouted[got.start:got.end]
    got = answer.answer(run, "What moved upon the face of the waters?", GENESIS)
    assert got.text == "the Spirit of God"

    context = (EXODUS.replace("Horeb", "HORÉB").replace(", the priest", ",\r\n  the priest")
               .replace("father in", "father\nin"))
    path = tmp_path / "exodus.txt"
    path.write_bytes(context.encode("utf-8"))
    for question, want in [("Which mountain did Moses come to?", "HORÉB"),
                           ("Whose flock did Moses keep?", "Jethro his father\nin law")]:
        code, out, _ = cli_with_loaded_run(monkeypatch, capsys, run, f"--question={question}",
                                           f"--context_file={path}")
        assert code == 0 and out.endswith("\n") and out.count("\n") == 1, out
        text, start, end, _ = out.rstrip("\n").split("\t")
        assert context[int(start):int(end)] == want and int(start) == context.index(want)
        assert text == want.replace("\n", " ")  # A line break in it printed as a space.


@pytest.mark.slow
def test_input_file_gives_the_official_predictions_file(monkeypatch, capsys, run, workdir):
    code, out, err = cli_with_loaded_run(
        monkeypatch, capsys, run, f"--input={workdir.parent / 'squad' / 'dev-v2.0.json'}")
    assert code == 0 and "answered 7 questions with the checkpoint at step" in err
    predictions = json.loads(out)
    expected = {id_: golds[0][1] if golds else "" for id_, _, _, golds in training_questions()}
    assert predictions == expected  # Every id, in the file's order, "" for no answer.
    assert list(predictions) == list(expected)
