"""The one image reader of the image commands (`inference.images`): 16-bit and float pixels
rescaled to known 8-bit values, transparency on white, bad files (missing, not an image,
over the decompression-bomb limit, out-of-range floats) refused as UserError; `--out` checked
before any model work; zero-shot templates and caption shots checked exactly."""

import os

import numpy as np
import pytest
from PIL import Image

from jaxformer import cli
from jaxformer.data import books_captions, tokenizers
from jaxformer.errors import UserError
from jaxformer.inference import captioning, images, two_tower


def save(tmp_path, name, image):
    path = tmp_path / name
    image.save(path)
    return str(path)


def test_16_bit_png_is_divided_by_257(tmp_path):
    values = np.array([[0, 257, 65535], [1000, 32896, 128]], np.uint16)
    path = save(tmp_path, "i16.png", Image.fromarray(values))
    with Image.open(path) as image:
        assert image.mode in ("I;16", "I")  # Pillow's modes for 16-bit grey.
    expected = np.array([[0, 1, 255], [4, 128, 0]], np.uint8)
    np.testing.assert_array_equal(images.read_image(path, 1)[..., 0], expected)
    np.testing.assert_array_equal(images.read_image(path, 3), np.dstack([expected] * 3))


def test_32_bit_integer_image_in_16_bit_range_is_read_and_beyond_is_refused(tmp_path):
    path = save(tmp_path, "i32.tif", Image.fromarray(np.array([[0, 65535]], np.int32)))
    np.testing.assert_array_equal(images.read_image(path, 1)[..., 0], [[0, 255]])
    path = save(tmp_path, "big.tif", Image.fromarray(np.array([[0, 70000]], np.int32)))
    with pytest.raises(UserError, match="32-bit integer pixels"):
        images.read_image(path, 1)


def test_float_image_in_0_1_is_scaled_by_255(tmp_path):
    values = np.array([[0.0, 0.5, 1.0], [0.25, 0.1, 0.999]], np.float32)
    path = save(tmp_path, "float.tif", Image.fromarray(values))
    expected = np.array([[0, 128, 255], [64, 26, 255]], np.uint8)
    np.testing.assert_array_equal(images.read_image(path, 1)[..., 0], expected)


@pytest.mark.parametrize("bad", [2.0, -0.5, np.nan])
def test_float_image_outside_0_1_is_refused(tmp_path, bad):
    path = save(tmp_path, "float.tif", Image.fromarray(np.array([[0.0, bad]], np.float32)))
    with pytest.raises(UserError, match=r"float pixels must lie in \[0, 1\]"):
        images.read_image(path, 3)


def test_image_over_the_decompression_bomb_limit_is_a_user_error(tmp_path, monkeypatch):
    path = save(tmp_path, "bomb.png", Image.new("1", (30, 30)))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 400)  # An error over 800 pixels.
    with pytest.raises(UserError, match="too large"):
        images.read_image(path, 1)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 900)
    assert images.read_image(path, 1).shape == (30, 30, 1)


def test_transparency_is_laid_on_white_and_channels_converted(tmp_path):
    rgba = np.zeros((1, 2, 4), np.uint8)
    rgba[0, 1] = (255, 0, 0, 255)  # Pixel 0 fully transparent black, pixel 1 opaque red.
    path = save(tmp_path, "rgba.png", Image.fromarray(rgba, "RGBA"))
    np.testing.assert_array_equal(images.read_image(path, 3)[0], [[255, 255, 255], [255, 0, 0]])
    np.testing.assert_array_equal(images.read_image(path, 1)[0, :, 0], [255, 76])  # ITU-R 601
    grey = save(tmp_path, "grey.png", Image.fromarray(np.array([[7, 200]], np.uint8)))
    np.testing.assert_array_equal(images.read_image(grey, 3)[0], [[7] * 3, [200] * 3])


def test_missing_and_unreadable_files_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="image not found"):
        images.read_image(str(tmp_path / "none.png"), 3)
    (tmp_path / "notes.png").write_text("not an image")
    with pytest.raises(UserError, match="cannot read image"):
        images.read_image(str(tmp_path / "notes.png"), 3)
    with pytest.raises(UserError, match="cannot read image"):
        images.read_image(str(tmp_path), 3)  # A directory.


def test_prepare_output(tmp_path):
    image = str(tmp_path / "in.png")
    Image.new("L", (4, 4)).save(image)
    with pytest.raises(UserError, match="is a directory"):
        images.prepare_output(str(tmp_path), make_directory=True, image=image)
    with pytest.raises(UserError, match="is the input image"):
        images.prepare_output(str(tmp_path / "." / "in.png"), make_directory=True, image=image)
    (tmp_path / "file").write_text("")
    with pytest.raises(UserError, match="cannot create directory"):
        images.prepare_output(str(tmp_path / "file" / "x.png"), make_directory=True,
                              image=image)
    with pytest.raises(UserError, match="no such directory"):
        images.prepare_output(str(tmp_path / "new" / "x.png"), make_directory=False,
                              image=image)
    with pytest.raises(UserError, match="cannot create directory .*file is a file"):
        images.prepare_output(str(tmp_path / "file" / "sub" / "x.png"), make_directory=True,
                              image=image)
    # A directory that can be made is made when the image is written, not before.
    images.prepare_output(str(tmp_path / "new" / "sub" / "x.png"), make_directory=True,
                          image=image)
    assert not (tmp_path / "new").exists()
    images.save_image(Image.new("L", (4, 4)), str(tmp_path / "new" / "sub" / "x.png"))
    assert Image.open(tmp_path / "new" / "sub" / "x.png").size == (4, 4)
    with pytest.raises(UserError, match=r"\.xyz is no image format"):
        images.prepare_output(str(tmp_path / "x.xyz"), make_directory=True, image=image)
    assert not (tmp_path / "x.xyz").exists()


@pytest.mark.parametrize("name, format_", [
    ("out.png", "PNG"), ("out.JPG", "JPEG"), ("out.jpeg", "JPEG"), ("out.webp", "WEBP"),
    ("out", "PNG")])
def test_the_output_is_in_the_format_its_extension_names(tmp_path, name, format_):
    """An RGBA figure too: JPEG gets it as RGB."""
    figure = Image.new("RGBA", (6, 4), (200, 30, 30, 255))
    images.save_image(figure, str(tmp_path / name))
    with Image.open(tmp_path / name) as written:
        assert written.format == format_ and written.size == (6, 4)


def test_save_image_reports_an_unwritable_path(tmp_path):
    with pytest.raises(UserError, match="cannot write"):
        images.save_image(Image.new("RGB", (2, 2)), str(tmp_path))


@pytest.mark.parametrize("out", ["DIR", "DIR/file/x.png"])
def test_attention_map_checks_out_before_reading_the_workdir(tmp_path, out, capsys):
    (tmp_path / "file").write_text("")
    out = out.replace("DIR", str(tmp_path))
    assert cli.main(["attention-map", f"--workdir={tmp_path / 'nowhere'}", "--image=x.png",
                     f"--out={out}"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "--out" in lines[0], lines


def test_attention_map_that_fails_makes_no_out_directory(tmp_path, capsys):
    out = tmp_path / "new" / "sub" / "map.png"
    assert cli.main(["attention-map", f"--workdir={tmp_path / 'nowhere'}", "--image=x.png",
                     f"--out={out}"]) == 2
    assert "no such directory" in capsys.readouterr().err
    assert os.listdir(tmp_path) == []


def test_template_has_exactly_one_placeholder_and_keeps_other_braces():
    assert two_tower.user_template("a {} {").format("cat") == "a cat {"
    assert two_tower.user_template("{x} a {}}").format("cat") == "{x} a cat}"
    assert two_tower.user_template("a photo of a {}.").format("cat") == "a photo of a cat."
    for bad in ("a photo", "a {} and {}", "{x}"):
        with pytest.raises(UserError, match=r"exactly once"):
            two_tower.user_template(bad)


@pytest.mark.parametrize("template", ["a {} and {}", "a photo"])
def test_zero_shot_checks_the_template_before_reading_the_workdir(tmp_path, template, capsys):
    assert cli.main(["zero-shot", f"--workdir={tmp_path / 'nowhere'}", "--image=x.png",
                     "--labels=cat,dog", f"--template={template}"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "--template must contain {} exactly once" in lines[0], lines


@pytest.fixture(scope="module")
def caption_task():
    """A task's tokenizer and special ids as a Flamingo run has them (`books_captions`)."""
    text = "an emoji of a boot.\na red apple.\n" * 20
    tokenizer = tokenizers.SentencePieceTokenizer.train(
        text, 300, extra_symbols=books_captions.SPECIAL_SYMBOLS)
    media_id, end_id = books_captions.special_ids(tokenizer)
    return type("Task", (), dict(tokenizer=tokenizer, media_id=media_id,
                                 end_of_chunk_id=end_id))


@pytest.mark.parametrize("caption,token", [("<image> boot", "<image>"),
                                           ("a <|endofchunk|> boot", "<|endofchunk|>")])
def test_shot_captions_with_special_token_text_are_refused(caption_task, caption, token):
    with pytest.raises(UserError, match=f"special token {token}"):
        captioning.prompt_ids(caption_task, ["a boot", caption])


def test_plain_shot_captions_make_the_prompt(caption_task):
    task = caption_task
    ids = task.tokenizer.encode("a boot")
    assert captioning.prompt_ids(task, ["a boot"]) == [task.media_id, *ids,
                                                       task.end_of_chunk_id, task.media_id]
