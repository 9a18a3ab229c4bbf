"""Decoding any image file the same way everywhere: training, preview, evaluation and prediction.

JPEG, PNG, BMP, GIF (first frame) and WebP; grayscale, RGBA, palette, 16-bit and CMYK become RGB;
EXIF orientation is applied. Failures raise ImageError with a short reason for the load report.
"""

from __future__ import annotations

import io
import math
import os
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

# Our own pixel cap replaces Pillow's decompression-bomb check, so the reason can be reported.
Image.MAX_IMAGE_PIXELS = None
ImageFile.LOAD_TRUNCATED_IMAGES = False

# Part of the decoded cache's key: bump it whenever a change here (or in the resize) changes the
# pixels a file decodes to, so caches built by the older code are not reused.
DECODER_VERSION = 1
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
DEFAULT_MAX_PIXELS = 40_000_000
# The JPEG decoder may scale by 1/2, 1/4 or 1/8 down to 80% of the target side; the resize then
# enlarges by at most 1.25x. On 500x375 photos going to 224 this makes decoding 30% cheaper.
DRAFT_SLACK = 0.8


class ImageError(Exception):
    """A file that cannot be used as an image; str(error) is the reason shown in the load report."""


def open_image(
    source: str | os.PathLike | bytes, max_pixels: int = DEFAULT_MAX_PIXELS, draft_size: int = 0
) -> Image.Image:
    """Open and fully decode an image as an RGB PIL image with EXIF orientation applied.

    draft_size lets the JPEG decoder scale by 1/2, 1/4 or 1/8 while decoding, never below
    DRAFT_SLACK of that side: the cheapest way to make a small image out of a large photo.
    """
    if isinstance(source, bytes):
        if not source:
            raise ImageError("empty file (0 bytes)")
        handle = io.BytesIO(source)
    else:
        path = Path(source)
        try:
            if path.stat().st_size == 0:
                raise ImageError("empty file (0 bytes)")
        except FileNotFoundError:
            raise ImageError("file not found") from None
        handle = path
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            image = Image.open(handle)
            width, height = image.size
            if width * height > max_pixels:
                raise ImageError(
                    f"too large: {width}x{height} pixels is over the cap of {max_pixels:,}"
                )
            image.seek(0)  # the first frame of a GIF or animated WebP
            if draft_size and image.format == "JPEG":
                side = math.ceil(draft_size * DRAFT_SLACK)
                image.draft("RGB", (side, side))
            image.load()
            return to_rgb(ImageOps.exif_transpose(image))
    except ImageError:
        raise
    except UnidentifiedImageError:
        raise ImageError("not an image Pillow can read") from None
    except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError) as error:
        text = str(error).lower()
        if "truncated" in text or "premature" in text or "broken" in text:
            raise ImageError("truncated or corrupt image data") from None
        raise ImageError(f"cannot decode: {error}") from None


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert any Pillow mode to 8-bit RGB, scaling 16-bit and float images instead of clipping."""
    if image.mode == "RGB":
        return image
    if image.mode in {"I;16", "I;16B", "I;16L", "I", "F"}:
        array = np.asarray(image, dtype=np.float64)
        low, high = float(array.min()), float(array.max())
        if image.mode.startswith("I;16"):
            low, high = 0.0, 65535.0
        scaled = (array - low) / max(high - low, 1e-9) * 255.0
        return Image.fromarray(np.clip(scaled + 0.5, 0, 255).astype(np.uint8)).convert("RGB")
    if image.mode in {"P", "PA"} and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in {"RGBA", "LA"}:
        # Composite on white: transparent icons and logos are drawn to be seen on a light page.
        background = Image.new("RGBA", image.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, image.convert("RGBA")).convert("RGB")
    return image.convert("RGB")


def resize_image(image: Image.Image, size: int, mode: str = "squash") -> np.ndarray:
    """Resize an RGB image to size x size uint8: squash (stretch) or crop (centre crop first)."""
    if mode == "crop":
        image = ImageOps.fit(image, (size, size), method=Image.Resampling.BILINEAR)
    elif image.size != (size, size):
        image = image.resize((size, size), Image.Resampling.BILINEAR)
    return np.asarray(image, dtype=np.uint8)


def load_resized(
    source: str | os.PathLike | bytes,
    size: int,
    mode: str = "squash",
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> np.ndarray:
    """Decode and resize one image file to a size x size x 3 uint8 array."""
    return resize_image(open_image(source, max_pixels, draft_size=size), size, mode)


def array_to_rgb(array: np.ndarray) -> np.ndarray:
    """Turn an H x W, H x W x 1, H x W x 3 or H x W x 4 array (uint8 or float) into uint8 RGB."""
    array = np.asarray(array)
    if array.dtype != np.uint8:
        array = array.astype(np.float32)
        if array.size and float(array.max()) <= 1.0:
            array = array * 255.0
        array = np.clip(array + 0.5, 0, 255).astype(np.uint8)
    if array.ndim == 2:
        array = array[..., None]
    if array.shape[-1] == 1:
        array = np.repeat(array, 3, axis=-1)
    elif array.shape[-1] == 4:
        array = array[..., :3]
    return array


def resize_array(array: np.ndarray, size: int, mode: str = "squash") -> np.ndarray:
    """Resize a uint8 RGB array with the same resampling as files."""
    if array.shape[0] == size and array.shape[1] == size:
        return array
    return resize_image(Image.fromarray(array), size, mode)


def read_header(path: str | os.PathLike) -> tuple[int, int, str]:
    """Width, height and Pillow mode from the file header only (no decoding)."""
    with Image.open(path) as image:
        return image.size[0], image.size[1], image.mode
