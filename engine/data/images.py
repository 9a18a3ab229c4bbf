"""Decoding any image file the same way everywhere: training, preview, evaluation and prediction.

JPEG, PNG, BMP, GIF (first frame), WebP and TIFF, and nothing else Pillow knows; grayscale, RGBA,
palette, 16-bit and CMYK become RGB; EXIF orientation is applied. Any failure, whatever a decoder
raised, becomes an ImageError with a short reason for the load report.
"""

from __future__ import annotations

import io
import math
import os
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

# Our own pixel cap replaces Pillow's decompression-bomb check, so the reason can be reported.
Image.MAX_IMAGE_PIXELS = None
ImageFile.LOAD_TRUNCATED_IMAGES = False

# Part of the decoded cache's key: bump it whenever a change here (or in the resize) changes the
# pixels a file decodes to, so caches built by the older code are not reused.
DECODER_VERSION = 2  # 2: 16-bit images keep their high byte (value >> 8)
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
# The only Pillow plugins ever tried: without this list Image.open accepts anything Pillow knows,
# and a PostScript file named photo.jpg would be handed to Ghostscript.
ALLOWED_FORMATS = ("JPEG", "PNG", "GIF", "BMP", "WEBP", "TIFF")
ALLOWED_FORMAT_NAMES = "JPEG, PNG, GIF, BMP, WebP or TIFF"
DEFAULT_MAX_PIXELS = 40_000_000
# Decodes run on up to cpu_count threads; a few images over this size decoding at once can take
# gigabytes, so only LARGE_DECODES_AT_ONCE of them decode at a time.
LARGE_DECODE_PIXELS = 4_000_000
LARGE_DECODES_AT_ONCE = 2
# The JPEG decoder may scale by 1/2, 1/4 or 1/8 down to 80% of the target side; the resize then
# enlarges by at most 1.25x. On 500x375 photos going to 224 this makes decoding 30% cheaper.
DRAFT_SLACK = 0.8


_large_decodes = threading.BoundedSemaphore(LARGE_DECODES_AT_ONCE)
_this_thread = threading.local()


class ImageError(Exception):
    """A file that cannot be used as an image; str(error) is the reason shown in the load report."""


@contextmanager
def large_decode_slot(pixels: int) -> Iterator[None]:
    """Wait for one of LARGE_DECODES_AT_ONCE slots when an image has over LARGE_DECODE_PIXELS.

    Re-entrant within a thread, so a caller that knows the size from a header can hold the slot
    over decoding and resizing while open_image inside it does not wait a second time.
    """
    if pixels <= LARGE_DECODE_PIXELS or getattr(_this_thread, "holds_slot", False):
        yield
        return
    with _large_decodes:
        _this_thread.holds_slot = True
        try:
            yield
        finally:
            _this_thread.holds_slot = False


def open_image(
    source: str | os.PathLike | bytes, max_pixels: int = DEFAULT_MAX_PIXELS, draft_size: int = 0
) -> Image.Image:
    """Open and fully decode an image as an RGB PIL image with EXIF orientation applied.

    draft_size lets the JPEG decoder scale by 1/2, 1/4 or 1/8 while decoding, never below
    DRAFT_SLACK of that side: the cheapest way to make a small image out of a large photo.
    """
    handle = _handle(source)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            image = Image.open(handle, formats=ALLOWED_FORMATS)
            width, height = image.size
            if width * height > max_pixels:
                raise ImageError(
                    f"too large: {width}x{height} pixels is over the cap of {max_pixels:,}"
                )
            with large_decode_slot(width * height):
                image.seek(0)  # the first frame of a GIF or animated WebP
                if draft_size and image.format == "JPEG":
                    side = math.ceil(draft_size * DRAFT_SLACK)
                    image.draft("RGB", (side, side))
                image.load()
                return to_rgb(ImageOps.exif_transpose(image))
    except Exception as error:  # hostile bytes make decoders raise almost anything
        raise _image_error(error) from None


def read_header(source: str | os.PathLike | bytes) -> tuple[int, int, str]:
    """Width, height and Pillow mode from the header only, for the allowed formats only."""
    handle = _handle(source)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(handle, formats=ALLOWED_FORMATS) as image:
                return image.size[0], image.size[1], image.mode
    except Exception as error:
        raise _image_error(error) from None


def _handle(source: str | os.PathLike | bytes) -> io.BytesIO | Path:
    if isinstance(source, bytes | bytearray | memoryview):
        if not len(source):
            raise ImageError("empty file (0 bytes)")
        return io.BytesIO(source)
    path = Path(source)
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise ImageError("file not found") from None
    except OSError as error:
        raise ImageError(f"cannot be read: {error.strerror or error}") from None
    if size == 0:
        raise ImageError("empty file (0 bytes)")
    return path


def _image_error(error: Exception) -> ImageError:
    """The ImageError for whatever opening or decoding raised, with a one-line reason."""
    if isinstance(error, ImageError):
        return error
    if isinstance(error, UnidentifiedImageError):
        return ImageError(f"not an image in an allowed format ({ALLOWED_FORMAT_NAMES})")
    if isinstance(error, OSError) and error.errno is not None:
        return ImageError(f"cannot be read: {error.strerror or error}")
    if isinstance(error, MemoryError):
        return ImageError("not enough memory to decode it")
    lines = str(error).strip().splitlines()
    text = lines[0][:200] if lines else ""
    lowered = text.lower()
    if "truncated" in lowered or "premature" in lowered or "broken" in lowered:
        return ImageError("truncated or corrupt image data")
    return ImageError(f"cannot decode: {text or type(error).__name__}")


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert any Pillow mode to 8-bit RGB, scaling 16-bit and float images instead of clipping."""
    if image.mode == "RGB":
        return image
    if image.mode in {"I", "F"} or image.mode.startswith("I;16"):
        return Image.fromarray(wide_to_uint8(np.asarray(image))).convert("RGB")
    if image.mode in {"P", "PA"} and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in {"RGBA", "LA"}:
        # Composite on white: transparent icons and logos are drawn to be seen on a light page.
        background = Image.new("RGBA", image.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, image.convert("RGBA")).convert("RGB")
    return image.convert("RGB")


def wide_to_uint8(array: np.ndarray) -> np.ndarray:
    """16-bit, 32-bit integer and float grey values as uint8, with integer ops where they can be.

    16-bit values keep their high byte (65535 -> 255, 256 -> 1): one byte a pixel of new memory,
    where float arrays took eight a pixel per step. Integers outside 0..65535 shift their range down
    to 8 bits; floats are stretched from their minimum to their maximum.
    """
    if array.dtype.kind == "u" and array.itemsize == 2:
        little = array.astype("<u2", copy=False)
        return np.ascontiguousarray(little.view(np.uint8)[..., 1::2])
    if array.dtype.kind in "iu":
        low, high = int(array.min()), int(array.max())
        if low >= 0 and high <= 65535:
            return (array >> 8).astype(np.uint8)
        values = array.astype(np.int64) - low if low < 0 else array
        return (values >> max(0, (high - min(low, 0)).bit_length() - 8)).astype(np.uint8)
    values = np.array(array, dtype=np.float32)
    np.nan_to_num(values, copy=False, nan=0.0, posinf=0.0, neginf=0.0)
    low, high = float(values.min()), float(values.max())
    values -= low
    values *= 255.0 / max(high - low, 1e-12)
    values += 0.5
    return values.astype(np.uint8)


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
