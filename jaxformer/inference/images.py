"""Image files in and out for the image commands (attention-map, zero-shot, retrieve, caption,
detect): one reader, so that every command accepts and refuses the same files.

`read_image` gives uint8 pixels `[H, W, channels]` (1: grey, 3: RGB), with transparency laid
on white. Images of more than 8 bits are rescaled, never clipped:
  * 16-bit integers (modes I;16*, and I with values in [0, 65535]) are divided by 257, a fixed
    scale (65535 -> 255) rather than the image's own range, so that a dark image stays dark
    and the model sees what a viewer shows;
  * floats (mode F) must lie in [0, 1] and are scaled by 255; other floats are refused, as
    their scale cannot be told from the file.
A file that is missing, not an image, corrupt or over Pillow's decompression-bomb limit
(`PIL.Image.MAX_IMAGE_PIXELS`) is a `UserError`.
"""

from __future__ import annotations

import os

import numpy as np
from PIL import Image

from jaxformer.errors import UserError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".gif", ".bmp", ".webp", ".tif", ".tiff")
MAX_16_BIT = 65535
_SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")
_TRANSPARENT_MODES = ("RGBA", "LA", "P", "PA")
# What Pillow raises for a file it cannot decode: missing, not an image, truncated, corrupt.
_DECODE_ERRORS = (OSError, ValueError, SyntaxError, EOFError)


def read_image(path: str, channels: int) -> np.ndarray:
    """uint8 `[H, W, channels]` pixels of the image file at `path` (`channels` 1 or 3)."""
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels}")
    try:
        with Image.open(path) as image:
            image.load()
            image = _to_channels(_to_8_bit(image, path), channels)
    except UserError:
        raise
    except FileNotFoundError:
        raise UserError(f"image not found: {path}") from None
    except Image.DecompressionBombError:
        raise UserError(f"cannot read image {path}: too large (over "
                        f"{2 * Image.MAX_IMAGE_PIXELS} pixels, Pillow's limit against "
                        "decompression bombs)") from None
    except _DECODE_ERRORS as e:
        raise UserError(f"cannot read image {path}: {e}") from None
    pixels = np.asarray(image, np.uint8)
    return pixels if channels == 3 else pixels[..., None]


def _to_8_bit(image: Image.Image, path: str) -> Image.Image:
    """`image` itself when it has 8-bit channels; 16-bit and float grey rescaled to mode L."""
    if image.mode in _SIXTEEN_BIT_MODES:
        values = np.asarray(image).astype(np.int64)
        if values.size and (values.min() < 0 or values.max() > MAX_16_BIT):
            raise UserError(f"cannot read image {path}: 32-bit integer pixels (values "
                            f"{values.min()}..{values.max()}); give 8- or 16-bit pixels")
        return Image.fromarray(np.round(values / 257).astype(np.uint8), "L")
    if image.mode == "F":
        values = np.asarray(image, np.float64)
        if values.size and not (np.isfinite(values).all() and 0 <= values.min()
                                and values.max() <= 1):
            raise UserError(f"cannot read image {path}: float pixels must lie in [0, 1], got "
                            f"{np.nanmin(values):g}..{np.nanmax(values):g}")
        return Image.fromarray(np.round(values * 255).astype(np.uint8), "L")
    return image


def _to_channels(image: Image.Image, channels: int) -> Image.Image:
    """`image` as mode L (`channels` 1) or RGB (3), transparent parts laid on white."""
    if image.mode in _TRANSPARENT_MODES or "transparency" in image.info:
        image = image.convert("RGBA")
        canvas = Image.new("RGBA", image.size, (255, 255, 255, 255))
        image = Image.alpha_composite(canvas, image)
    return image.convert("RGB" if channels == 3 else "L")


def list_images(directory: str, flag: str) -> list[str]:
    """The image files directly in `directory` (given as `flag`), sorted by name."""
    if not os.path.isdir(directory):
        raise UserError(f"{flag}: not a directory: {directory}")
    paths = sorted(path for path in (os.path.join(directory, name)
                                     for name in os.listdir(directory))
                   if path.lower().endswith(IMAGE_EXTENSIONS) and os.path.isfile(path))
    if not paths:
        raise UserError(f"{flag}: no image files ({', '.join(IMAGE_EXTENSIONS)}) in "
                        f"{directory}")
    return paths


def prepare_output(path: str, *, make_directory: bool, image: str) -> None:
    """Raises UserError unless a file can be written at `path` (`--out`): not a directory, not
    the input `image`, an image format its extension names (`output_format`), in a directory
    that exists (or, with `make_directory`, that can be made: `save_image` makes it, so that
    a command failing before then leaves nothing behind)."""
    if os.path.isdir(path):
        raise UserError(f"--out: {path} is a directory; give a file name")
    output_format(path)
    if os.path.exists(path) and os.path.exists(image) and os.path.samefile(path, image):
        raise UserError(f"--out: {path} is the input image; give another file name")
    directory = os.path.dirname(os.path.abspath(path))
    if not make_directory and not os.path.isdir(directory):
        raise UserError(f"--out: no such directory {directory}")
    existing = directory  # The directory, or the nearest of its parents that exists.
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise UserError(f"--out: cannot create directory {directory}: {existing} is a file")
    if not os.access(existing, os.W_OK):
        raise UserError(f"--out: cannot write in {existing}")


def output_format(path: str) -> str:
    """The image format of `--out`, as its extension names it (.png, .jpg, .webp, ...); PNG
    without an extension. UserError for an extension of no format Pillow writes."""
    extension = os.path.splitext(path)[1].lower()
    if not extension:
        return "PNG"
    name = Image.registered_extensions().get(extension)
    if name is None or name not in Image.SAVE:
        raise UserError(f"--out: {path}: {extension} is no image format that can be written; "
                        "use .png or .jpg")
    return name


def save_image(image: Image.Image, path: str) -> None:
    """Writes `image` at `path` in the format of its extension (`output_format`), its
    directory made if missing; UserError when the file cannot be written."""
    name = output_format(path)
    if name == "JPEG" and image.mode not in ("RGB", "L"):
        image = image.convert("RGB")
    try:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        image.save(path, format=name)
    except OSError as e:
        raise UserError(f"--out: cannot write {path}: {e.strerror or e}") from None
