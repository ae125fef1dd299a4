"""tag: the tags of a token classification run at each word's first piece, checked against
`task.predict` computed here, the spans they mark, and its errors (one line, exit code 2)."""

import shutil

import ml_collections
import numpy as np
import pytest

from jaxformer.errors import UserError
from jaxformer.inference import tag
from jaxformer.inference.workdir import load_run
from tests.data.test_conll2003 import write_files
from tests.test_cli import assert_user_error, run_cli

TAGS = ("O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC", "B-MISC", "I-MISC")


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """The runlocal NER fine-tuning (4 steps) on hand-written CoNLL files, trained once
    through the command line."""
    root = tmp_path_factory.mktemp("ner")
    folder = write_files(root / "conll")
    result = run_cli("train", f"--config=configs/bert/conll2003.py:path={folder},runlocal",
                     f"--workdir={root / 'run'}")
    assert result.returncode == 0, result.stderr
    return root / "run"


def test_spans_follow_conlleval():
    words = ("a", "b", "c", "d", "e", "f")
    got = tag.spans(words, ("B-PER", "I-PER", "O", "I-LOC", "B-LOC", "I-PER"), TAGS)
    assert [(s.kind, s.start, s.stop, s.text) for s in got] == [
        ("PER", 0, 2, "a b"), ("LOC", 3, 4, "d"), ("LOC", 4, 5, "e"), ("PER", 5, 6, "f")]


def test_only_token_classification_runs_tag():
    config = ml_collections.ConfigDict({"task": {"name": "text_classification"}})
    with pytest.raises(UserError, match="needs a token classification"):
        tag.check_config(config, "runs/tweets")


@pytest.mark.slow
def test_tags_are_the_first_pieces_argmax(workdir):
    run = load_run(str(workdir))
    text = "Peter Blackburn visited BRUSSELS ."
    result = tag.tag(run, text)
    tokenizer = run.data.tokenizer
    ids, firsts = [tokenizer.cls_id], []
    for word in text.split():
        firsts.append(len(ids))
        ids.extend(tokenizer.encode(word) or [tokenizer.unk_id])
    ids.append(tokenizer.sep_id)
    input_ids = np.zeros((1, run.task.seq_length), np.int32)
    input_ids[0, :len(ids)] = ids
    logits = np.asarray(run.task.predict(run.params, {"input_ids": input_ids,
                                                      "segment_ids": np.zeros_like(input_ids)}))
    assert result.words == tuple(text.split())
    assert result.tags == tuple(TAGS[i] for i in logits[0, firsts].argmax(-1))
    assert result.spans == tag.spans(result.words, result.tags, TAGS)
    with pytest.raises(UserError, match="more than the model.s data.seq_length 32"):
        tag.tag(run, " ".join(["Blackburn"] * 40))


@pytest.mark.slow
def test_command_prints_tags_and_spans_without_the_data(workdir):
    folder = workdir.parent / "conll"
    shutil.move(folder, workdir.parent / "elsewhere")  # The command reads only the workdir.
    try:
        result = run_cli("tag", f"--workdir={workdir}", "--text=Peter visited Germany")
    finally:
        shutil.move(workdir.parent / "elsewhere", folder)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert [line.split("\t")[0] for line in lines[:3]] == ["Peter", "visited", "Germany"]
    assert all(line.split("\t")[1] in TAGS for line in lines[:3])
    assert all(line.split("\t")[0] in ("PER", "ORG", "LOC", "MISC") for line in lines[3:])
    assert "tagged with the checkpoint at step 4" in result.stderr
    assert_user_error(run_cli("tag", f"--workdir={workdir}", "--text= "), "no words to tag")


@pytest.mark.slow
def test_sentences_tagged_in_batches_equal_each_tagged_alone(workdir, tmp_path):
    run = load_run(str(workdir))
    lines = ["Peter visited Germany", "EU rejects German call .", "Blackburn"]
    batched = tag.tag_sentences(run, [line.split() for line in lines], batch_size=2)
    assert batched == [tag.tag(run, line) for line in lines]
    with pytest.raises(UserError, match="sentence 2 is more than the model's data.seq_length"):
        tag.tag_sentences(run, [["Peter"], ["Blackburn"] * 40])

    path = tmp_path / "sentences.txt"
    path.write_text("\n".join([lines[0], "", lines[1]]) + "\n")
    result = run_cli("tag", f"--workdir={workdir}", f"--input={path}")
    assert result.returncode == 0, result.stderr
    blocks = result.stdout.split("\n\n")  # CoNLL: a blank line after each sentence.
    assert blocks[-1] == "" and len(blocks) == 3
    for block, expected in zip(blocks, batched[:2], strict=False):
        assert block.splitlines() == [f"{w}\t{t}" for w, t in zip(expected.words, expected.tags,
                                                                  strict=True)]
    assert_user_error(run_cli("tag", f"--workdir={workdir}", f"--input={tmp_path / 'none'}"),
                      "no such file")
