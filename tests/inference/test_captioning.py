"""Captioning with the Flamingo-style model: KV-cached greedy captions against greedy decoding
that reruns the whole model at every step; `jaxformer caption` and `jaxformer evaluate` (the
few-shot and captioning evaluators) on a tiny chain of workdirs (CLIP, GPT, Flamingo) trained
here; the command's errors (one line, exit code 2)."""

import json
import shutil
from types import SimpleNamespace

import jax
import ml_collections
import numpy as np
import pytest
from PIL import Image

from jaxformer import cli
from jaxformer.data import emoji
from jaxformer.evaluators import captioning as captioning_eval
from jaxformer.evaluators import few_shot
from jaxformer.evaluators.base import Context
from jaxformer.inference import captioning
from jaxformer.inference.workdir import load_run
from jaxformer.train import parallel
from tests.helpers import flamingo_chain
from tests.models import test_flamingo as tiny
from tests.test_cli import records, run_cli

pytestmark = pytest.mark.slow  # Trains or launches runs.


def forward_fn(model):
    """The model's full forward pass, jitted."""
    return jax.jit(lambda params, images, tokens: model.apply({"params": params}, images,
                                                              tokens))


def greedy_by_recompute(forward, params, images, prompt, max_new_tokens, end_id, media_id):
    """The caption ids of one prompt, each token the argmax of a full forward pass over the
    images and every token so far, stopped at `end_id` or `media_id`. The tokens fill a
    zero buffer left to right (one compiled shape): under causal attention the logits at
    position t - 1 do not depend on the zeros from t on."""
    tokens = np.zeros((1, len(prompt) + max_new_tokens), np.int32)
    tokens[0, :len(prompt)] = prompt
    images = np.asarray(images, np.float32)[None]
    for t in range(len(prompt), len(prompt) + max_new_tokens):
        token = int(np.argmax(forward(params, images, tokens)[0, t - 1]))
        if token in (end_id, media_id):
            return [int(i) for i in tokens[0, len(prompt):t]]
        tokens[0, t] = token
    return [int(i) for i in tokens[0, len(prompt):]]


def test_cached_greedy_captions_equal_greedy_by_recompute():
    model = tiny.build()
    images, tokens = tiny.inputs()
    params = tiny.open_gates(model.init(jax.random.key(0), images, tokens)["params"])
    rng = np.random.default_rng(1)
    stacks = [rng.normal(size=(m, 16, 16, 3)).astype(np.float32) for m in (2, 1, 2, 1)]
    media, end = tiny.MEDIA, tiny.VOCAB - 1
    prompts = [[media, 7, 9, end, media], [media], [media, 11, end, media], [media]]
    got = captioning.caption_ids(model, params, stacks, prompts, max_new_tokens=10,
                                 end_id=end, media_id=media, batch_size=2)
    forward = forward_fn(model)
    expected = [greedy_by_recompute(forward, params, s, p, 10, end, media)
                for s, p in zip(stacks, prompts)]
    assert got == expected
    assert min(len(ids) for ids in got) >= 3  # Long enough to check several cached steps.
    assert got[1] != got[3]  # Each image its own caption (the gates are open).
    # The same prompts from images and (image, caption) shots: shots first, in order.
    tokenizer = SimpleNamespace(encode=lambda text: [int(w) for w in text.split()],
                                decode=lambda ids: " ".join(str(i) for i in ids))
    task = SimpleNamespace(model=model, tokenizer=tokenizer, media_id=media, end_of_chunk_id=end)
    texts = captioning.caption_batch(
        task, params, [stacks[0][1], stacks[1][0], stacks[2][1], stacks[3][0]],
        [[(stacks[0][0], "7 9")], [], [(stacks[2][0], "11")], []], max_new_tokens=10,
        batch_size=2)
    assert texts == [tokenizer.decode(ids) for ids in expected]
    swapped = captioning.caption(task, params, stacks[0][0], [(stacks[0][1], "7 9")],
                                 max_new_tokens=10)
    assert swapped != texts[0]  # Which image is the query matters.


def test_prompts_and_captions_are_cut_at_the_chunk_end():
    tokenizer = SimpleNamespace(encode=lambda text: [10 + len(w) for w in text.split()])
    task = SimpleNamespace(media_id=3, end_of_chunk_id=4, tokenizer=tokenizer)
    assert captioning.prompt_ids(task, []) == [3]
    assert captioning.prompt_ids(task, ["a dog", "owl"]) == [3, 11, 13, 4, 3, 13, 4, 3]
    assert captioning.cut_caption([5, 6, 4, 7], end_id=4, media_id=3) == [5, 6]
    assert captioning.cut_caption([5, 3, 7], end_id=4, media_id=3) == [5]
    assert captioning.cut_caption([5, 6], end_id=4, media_id=3) == [5, 6]


# The command line and the evaluators on trained workdirs.


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    """The runlocal CLIP, GPT and Flamingo runs (4 steps each)."""
    return flamingo_chain(tmp_path_factory)


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """Emoji of the embedded corpus as PNG files, a directory of shots named by their
    captions (beside a text file and a directory named like an image), and a file that is not
    an image."""
    directory = tmp_path_factory.mktemp("images")
    pixels = emoji.read_images()
    for index in (0, 7, 42):
        Image.fromarray(pixels[index]).save(directory / f"emoji{index:02d}.png")
    shots = directory / "shots"
    shots.mkdir()
    Image.fromarray(pixels[7]).save(shots / "a_crying__face.png")
    Image.fromarray(pixels[42]).save(shots / "b_cloud.png")
    (shots / "readme.txt").write_text("not an image")
    (shots / "c_album.png").mkdir()  # A directory, not a shot.
    (directory / "notes.txt").write_text("not an image")
    (directory / "empty").mkdir()
    return directory


def expected_caption(run, paths, captions, max_new_tokens=20):
    """By hand: each file's pixels, the run's evaluation view and normalisation, the prompt of
    the shots' chunks and <image>, greedy decoding by recompute, the tokenizer's text."""
    preprocess = run.data.preprocess
    stack = preprocess.normalize(np.stack(
        [preprocess.eval_view(np.asarray(Image.open(p).convert("RGB"))) for p in paths]))
    task = run.task
    prompt = []
    for caption in captions:
        prompt += [task.media_id, *task.tokenizer.encode(caption), task.end_of_chunk_id]
    prompt.append(task.media_id)
    ids = greedy_by_recompute(forward_fn(task.model), run.params, stack, prompt, max_new_tokens,
                              task.end_of_chunk_id, task.media_id)
    assert ids  # Something to compare.
    return task.tokenizer.decode(ids).strip(), (stack, prompt, ids)


def caption_cli(workdir, *args):
    result = run_cli("caption", f"--workdir={workdir}", *args)
    assert result.returncode == 0, result.stderr
    assert result.stdout.endswith("\n") and result.stdout.count("\n") == 1, result.stdout
    return result.stdout[:-1]


def test_caption_prints_the_greedy_caption(chain, images):
    workdir, image = chain / "flamingo", images / "emoji00.png"
    expected, _ = expected_caption(load_run(str(workdir)), [image], [], max_new_tokens=6)
    assert caption_cli(workdir, f"--image={image}", "--max_new_tokens=6") == expected


def test_caption_after_shots_given_as_pairs_or_as_a_directory(chain, images):
    workdir, image = chain / "flamingo", images / "emoji00.png"
    run = load_run(str(workdir))
    # The directory's shots, by name: "a crying face" (double underscore, one space), "b cloud".
    shots = [images / "shots" / "a_crying__face.png", images / "shots" / "b_cloud.png"]
    expected, (stack, prompt, ids) = expected_caption(run, [*shots, image],
                                                      ["a crying face", "b cloud"], 4)
    assert caption_cli(workdir, f"--image={image}", f"--shots={images / 'shots'}",
                       "--max_new_tokens=4") == expected
    pairs = f"{shots[0]}=a crying face, {shots[1]}=b cloud"
    assert caption_cli(workdir, f"--image={image}", f"--shots={pairs}",
                       "--max_new_tokens=4") == expected
    # The same ids through the library, which the evaluator uses.
    loaded = np.stack([captioning.load_image(run.data, str(p)) for p in [*shots, image]])
    np.testing.assert_allclose(loaded, stack, atol=1e-6)
    assert captioning.prompt_ids(run.task, ["a crying face", "b cloud"]) == prompt
    task = run.task
    assert captioning.caption_ids(task.model, run.params, [loaded], [prompt], max_new_tokens=4,
                                  end_id=task.end_of_chunk_id, media_id=task.media_id) == [ids]


@pytest.mark.parametrize("args,words", [
    (["--image=IMAGES/missing.png"], ["image not found"]),
    (["--image=IMAGES/notes.txt"], ["cannot read image"]),
    (["--image=IMAGES/emoji00.png", "--max_new_tokens=0"], ["--max_new_tokens must be >= 1"]),
    (["--image=IMAGES/emoji00.png", "--shots=IMAGES/emoji07.png"], ["PATH=caption"]),
    (["--image=IMAGES/emoji00.png", "--shots=IMAGES/emoji07.png=a,b.png"], ["PATH=caption"]),
    (["--image=IMAGES/emoji00.png", "--shots=IMAGES/empty"], ["no image files"]),
    (["--image=IMAGES/emoji00.png", "--shots=IMAGES/nope.png=a dog"], ["image not found"]),
    (["--image=IMAGES/emoji00.png", "--shots=" + ",".join(["IMAGES/emoji07.png=a dog"] * 6)],
     ["exceed the language model's context of 32 tokens"]),
])
def test_bad_input_is_one_line_and_exit_2(chain, images, args, words, capsys):
    args = [a.replace("IMAGES", str(images)) for a in args]
    assert cli.main(["caption", f"--workdir={chain / 'flamingo'}", *args]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and all(word in lines[0] for word in words), lines


@pytest.mark.parametrize("run,words", [("clip", ["holds a 'contrastive' run", "Flamingo"]),
                                       ("nowhere", ["no such directory"])])
def test_a_workdir_that_is_not_a_flamingo_run_is_refused(chain, images, run, words, capsys):
    assert cli.main(["caption", f"--workdir={chain / run}",
                     f"--image={images / 'emoji00.png'}"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and all(word in lines[0] for word in words), lines


EVALS = {
    "groups": dict(type="few_shot", split="heldout_groups", shots=[0, 1], num_queries=16),
    "captions": dict(type="captioning", split="heldout", num_examples=16, max_new_tokens=5),
    "captions_1shot": dict(type="captioning", split="heldout", num_examples=4, shots=1,
                           max_new_tokens=3),
}


def test_evaluate_runs_both_evaluators(chain, tmp_path):
    workdir = tmp_path / "flamingo"
    shutil.copytree(chain / "flamingo", workdir)
    config = json.loads((workdir / "config.json").read_text())
    config["evals"].update(EVALS)
    (workdir / "config.json").write_text(json.dumps(config))
    result = run_cli("evaluate", f"--workdir={workdir}", *[f"--eval={n}" for n in EVALS],
                     timeout=600)
    assert result.returncode == 0, result.stderr
    written = records(workdir)[-1]
    # The same evaluators here, on the same checkpoint and devices.
    strategy = parallel.Sharded()
    run = load_run(str(workdir), sharding=strategy.replicated)
    context = Context(run.task, run.data, strategy, 8)
    groups = few_shot.build("groups", ml_collections.ConfigDict(EVALS["groups"]), context)
    expected = {f"eval/groups/{k}": v for k, v in groups.run(run.params).items()}
    assert set(expected) == {"eval/groups/top1_0shot", "eval/groups/top1_1shot",
                             "eval/groups/calibrated_top1_0shot",
                             "eval/groups/calibrated_top1_1shot",
                             "eval/groups/chance", "eval/groups/majority"}
    for name in ("captions", "captions_1shot"):
        options = EVALS[name]
        predictions = captioning_eval.predictions(
            context, run.params, split="heldout", num_examples=options["num_examples"],
            shots=options.get("shots", 0), max_new_tokens=options["max_new_tokens"])
        assert len(predictions) == options["num_examples"]
        assert all(p.index not in p.shots and len(p.shots) == options.get("shots", 0)
                   for p in predictions)
        scores = captioning_eval.scores([p.caption for p in predictions],
                                        [p.references for p in predictions])
        expected.update({f"eval/{name}/{k}": v for k, v in scores.items()})
    assert {k: written[k] for k in expected} == pytest.approx(expected, abs=1e-6)
    assert written["eval/groups/chance"] == pytest.approx(0.2)
