"""`jaxformer zero-shot` and `jaxformer retrieve` on a tiny CLIP workdir: the printed
probabilities and rankings against the towers' embeddings computed here, and their errors
(one line, exit code 2)."""

import numpy as np
import pytest
from PIL import Image

from jaxformer import cli
from jaxformer.data import emoji
from jaxformer.inference import two_tower
from jaxformer.inference.images import list_images
from jaxformer.inference.workdir import load_run
from tests.helpers import without_evaluations_flags
from tests.test_cli import assert_user_error, run_cli

pytestmark = pytest.mark.slow  # Trains or launches runs.

CLIP = "configs/clip/emoji.py:runlocal"
LABELS = ("dog", "red apple", "rocket")


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """The runlocal CLIP (4 steps), trained once through the command line."""
    workdir = tmp_path_factory.mktemp("clip") / "run"
    result = run_cli("train", f"--config={CLIP}", f"--workdir={workdir}",
                     *without_evaluations_flags(CLIP))
    assert result.returncode == 0, result.stderr
    return workdir


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """Three emoji of the embedded corpus as PNG files (one with transparency)."""
    directory = tmp_path_factory.mktemp("images")
    pixels = emoji.read_images()
    for index in (0, 7, 42):
        Image.fromarray(pixels[index]).save(directory / f"emoji{index:02d}.png")
    rgba = np.dstack([pixels[3], np.full(pixels[3].shape[:2], 255, np.uint8)])
    Image.fromarray(rgba, "RGBA").save(directory / "emoji03.png")
    (directory / "notes.txt").write_text("not an image")
    (directory / "album.png").mkdir()  # A directory named like an image is not one.
    return directory


def parse(stdout):
    pairs = [line.split("  ", 1) for line in stdout.strip().splitlines()]
    return [name for _, name in pairs], [float(score) for score, _ in pairs]


def test_zero_shot_prints_the_softmax_of_scaled_similarities(workdir, images):
    image = images / "emoji07.png"
    result = run_cli("zero-shot", f"--workdir={workdir}", f"--image={image}",
                     f"--labels={','.join(LABELS)}")
    assert result.returncode == 0, result.stderr
    names, probabilities = parse(result.stdout)
    # By hand: the image's embedding against each label's templates, averaged.
    run = load_run(str(workdir))
    view = run.data.preprocess.eval_view(np.asarray(Image.open(image).convert("RGB")))
    embedded = np.asarray(run.task.encode_images(
        run.params, run.data.preprocess.normalize(view[None])))[0]
    templates = run.data.templates(None)
    prompts = run.data.tokenize([t.format(label) for label in LABELS for t in templates])
    texts = np.asarray(run.task.encode_texts(run.params, prompts)).reshape(
        len(LABELS), len(templates), -1).mean(1)
    texts /= np.linalg.norm(texts, axis=-1, keepdims=True)
    logits = float(run.task.logit_scale(run.params)) * texts @ embedded
    expected = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
    order = np.argsort(-expected, kind="stable")
    assert names == [LABELS[i] for i in order]
    np.testing.assert_allclose(probabilities, expected[order], atol=2e-3)
    assert sum(probabilities) == pytest.approx(1.0, abs=5e-3)


def test_retrieve_ranks_the_directory_by_cosine_similarity(workdir, images):
    result = run_cli("retrieve", f"--workdir={workdir}", "--text=a red apple",
                     f"--images={images}", "--top_k=3")
    assert result.returncode == 0, result.stderr
    paths, scores = parse(result.stdout)
    run = load_run(str(workdir))
    every = list_images(str(images), "--images")
    assert len(every) == 4  # notes.txt and album.png/ are not images.
    query = np.asarray(run.task.encode_texts(run.params, run.data.tokenize(["a red apple"])))[0]
    similarity = two_tower.image_embeddings(run, every) @ query
    order = np.argsort(-similarity, kind="stable")[:3]
    assert paths == [every[i] for i in order]
    np.testing.assert_allclose(scores, similarity[order], atol=2e-3)
    assert scores == sorted(scores, reverse=True)


@pytest.mark.parametrize("command,args,words", [
    ("zero-shot", ["--image=IMAGES/missing.png", "--labels=a,b"], ["image not found"]),
    ("zero-shot", ["--image=IMAGES/notes.txt", "--labels=a,b"], ["cannot read image"]),
    ("zero-shot", ["--image=IMAGES/emoji00.png", "--labels=a"], ["at least two labels"]),
    ("zero-shot", ["--image=IMAGES/emoji00.png", "--labels=cat,dog,cat"],
     ["'cat' more than once"]),
    ("zero-shot", ["--image=IMAGES/emoji00.png", "--labels=Cat,dog,cat"],  # Lowercased.
     ["'Cat' and 'cat' are the same text to the model's tokenizer"]),
    ("zero-shot", ["--image=IMAGES/emoji00.png", "--labels=a,b", "--template=a photo"],
     ["--template must contain {}"]),
    ("retrieve", ["--text=x", "--images=IMAGES/emoji00.png"], ["not a directory"]),
    ("retrieve", ["--text=x", "--images=IMAGES", "--top_k=0"], ["--top_k must be >= 1"]),
])
def test_bad_input_is_one_line_and_exit_2(workdir, images, command, args, words, capsys):
    args = [a.replace("IMAGES", str(images)) for a in args]
    assert cli.main([command, f"--workdir={workdir}", *args]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and all(word in lines[0] for word in words), lines


def test_a_workdir_of_another_task_is_refused(tmp_path):
    other = tmp_path / "gpt"
    result = run_cli("train", "--config=configs/gpt/shakespeare_char.py:runlocal",
                     f"--workdir={other}", "--config.train.num_steps=1")
    assert result.returncode == 0, result.stderr
    assert_user_error(run_cli("zero-shot", f"--workdir={other}", "--image=x.png",
                              "--labels=a,b"), "holds a 'lm' run", "contrastive")
