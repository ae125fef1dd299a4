"""`jaxformer detect` end to end on a tiny DETR run (configs/detr/composed.py:runlocal): the
boxes printed are the task's predictions above the threshold, in the image's pixels, and
they are drawn; bad input is one line and exit 2."""

import numpy as np
import pytest
from PIL import Image

from jaxformer import cli
from jaxformer.config import load_config
from jaxformer.data.transforms import no_draws
from jaxformer.inference.workdir import load_run
from jaxformer.tasks.detection import detections
from jaxformer.train import trainer
from tests.helpers import ROOT, without_evaluations

pytestmark = pytest.mark.slow  # Trains or launches runs.


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("detr") / "run"
    trainer.train(without_evaluations(load_config(f"{ROOT}/configs/detr/composed.py:runlocal")),
                  str(workdir))
    return workdir


@pytest.fixture(scope="module")
def canvas(run_dir, tmp_path_factory):
    """A test canvas of the run's data, saved at twice its size (so pixels are rescaled)."""
    run = load_run(str(run_dir))
    pixels = run.data.eval_sources["test"][0]["image"]
    path = tmp_path_factory.mktemp("images") / "canvas.png"
    Image.fromarray(pixels).resize((128, 128), Image.NEAREST).save(path)
    return path, pixels


def test_detect_prints_the_predictions_above_the_threshold(run_dir, canvas, tmp_path, capsys):
    path, pixels = canvas
    out = tmp_path / "boxes.png"
    assert cli.main(["detect", f"--workdir={run_dir}", f"--image={path}", f"--out={out}",
                     "--threshold=0.0"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    # By hand: the canvas as the evaluation sees it (64 px), the last layer's detections.
    run = load_run(str(run_dir))
    batch = {k: np.asarray(v)[None] for k, v in run.data.preprocess.eval_transforms()(
        {"image": pixels, "boxes": np.zeros((0, 4), np.float32),
         "labels": np.zeros((0,), np.int32)}, no_draws()).items()}
    expected = detections(**run.task.predict(run.params, batch))
    assert len(lines) == run.task.model.num_queries
    name, score, box = lines[0].split("\t")
    best = int(np.argmax(expected["scores"][0]))
    assert name == run.task.class_names[int(expected["labels"][0, best])]
    assert float(score) == pytest.approx(float(expected["scores"][0, best]), abs=1e-3)
    cx, cy, w, h = np.asarray(expected["boxes"][0, best]) * 128  # The file is 128 x 128.
    np.testing.assert_allclose([float(v) for v in box.split()],
                               np.clip([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], 0, 128),
                               atol=0.06)
    assert Image.open(out).size == (512, 512)


@pytest.mark.parametrize("width,height", [(66, 10), (100, 1), (1, 100), (9000, 200)])
def test_detect_takes_images_of_any_shape(run_dir, tmp_path, width, height, capsys):
    """Slivers, a longer side just past the model's (rounding the capped shorter side back to
    its own size) and a side past the drawing's enlargement limit, drawn at scale 1."""
    path, out = tmp_path / "in.png", tmp_path / "out.png"
    Image.new("RGB", (width, height), (200, 40, 40)).save(path)
    assert cli.main(["detect", f"--workdir={run_dir}", f"--image={path}", f"--out={out}",
                     "--threshold=0.0"]) == 0
    boxes = np.array([[float(v) for v in line.split("\t")[2].split()]
                      for line in capsys.readouterr().out.strip().splitlines()])
    assert boxes.shape == (load_run(str(run_dir)).task.model.num_queries, 4)
    assert (boxes >= 0).all() and (boxes[:, [0, 2]] <= width).all()
    assert (boxes[:, [1, 3]] <= height).all()
    scale = max(1, -(-512 // max(width, height)))
    assert Image.open(out).size == (width * scale, height * scale)


@pytest.mark.parametrize("args,words", [
    (["--threshold=1.5"], ["--threshold must be in [0, 1]"]),
    (["--scale=100"], ["--scale 100 would draw the 128x128 image 12800 px wide",
                       "at most 8192 px a side when enlarged"]),
    (["--image=/nonexistent.png"], ["image not found"]),
    (["--out=/nonexistent/dir/x.png"], ["no such directory"]),
])
def test_bad_input_is_one_line_and_exit_2(run_dir, canvas, tmp_path, args, words, capsys):
    base = {"--image": str(canvas[0]), "--out": str(tmp_path / "x.png")}
    for arg in args:
        key, _, value = arg.partition("=")
        base[key] = value
    flags = [f"{k}={v}" for k, v in base.items()]
    assert cli.main(["detect", f"--workdir={run_dir}", *flags]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and all(word in lines[0] for word in words), lines
    assert not (tmp_path / "x.png").exists()
