"""Hostile images: formats outside the allow-list, decoders that raise, 16-bit data, large decodes,
and a decoded cache on a full disk or left damaged. Each ends in a reason or a sentence."""

from __future__ import annotations

import errno
import io
import json
import struct
import threading
import time
import tracemalloc
from collections import namedtuple
from pathlib import Path

import numpy as np
import pytest
from conftest import pattern_image, write_class_folder
from PIL import EpsImagePlugin, Image, ImageFile

from engine.config import DataConfig, RunConfig
from engine.data import images as image_module
from engine.data import load_dataset
from engine.data.images import ImageError, load_resized, open_image, read_header
from engine.errors import UserError

EPS = (
    b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n%%EndComments\n"
    b"0 0 moveto 10 10 lineto stroke\nshowpage\n%%EOF\n"
)
SIXTEEN_BIT = np.array([[0, 255, 256, 511], [32768, 65280, 65534, 65535]], dtype=np.uint16)
SIXTEEN_BIT_AS_8 = [[0, 0, 1, 1], [128, 255, 255, 255]]  # value >> 8
Usage = namedtuple("Usage", "total used free")


def encoded(image: Image.Image, image_format: str) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=image_format)
    return buffer.getvalue()


def retyped_tiff(field_type: int) -> bytes:
    """A valid RGB TIFF whose StripOffsets tag (273) claims another field type.

    Pillow then reads the offset as a string, a rational, bytes, a float or (LONG8, eight bytes
    read where the pixels start, set to 0xFF here) a number over 2**63, and its decoder raises
    TypeError or OverflowError, which escaped the decoding of a whole dataset.
    """
    data = bytearray(encoded(Image.fromarray(pattern_image(0, 1, size=16)), "TIFF"))
    assert data[:4] == b"II*\x00"
    ifd = struct.unpack_from("<I", data, 4)[0]
    for entry in range(struct.unpack_from("<H", data, ifd)[0]):
        position = ifd + 2 + 12 * entry
        tag, _, _, offset = struct.unpack_from("<HHII", data, position)
        if tag == 273:
            struct.pack_into("<H", data, position + 2, field_type)
            data[offset : offset + 8] = b"\xff" * 8
            return bytes(data)
    raise AssertionError("no StripOffsets tag")


TIFF_FIELD_TYPES = {2: "ascii", 5: "rational", 7: "undefined", 11: "float", 16: "long8"}


# ----- 1. only image formats ------------------------------------------------------------------
def test_postscript_named_jpg_is_refused_and_never_reaches_ghostscript(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(EpsImagePlugin, "Ghostscript", lambda *a, **k: calls.append(a))
    photo = tmp_path / "photo.jpg"
    photo.write_bytes(EPS)
    with Image.open(photo) as image:  # what Pillow does without an allow-list
        assert image.format == "EPS"

    for source in (photo, EPS):
        with pytest.raises(ImageError, match=r"not an image in an allowed format \(JPEG, PNG"):
            open_image(source)
        with pytest.raises(ImageError, match="allowed format"):
            read_header(source)

    root = write_class_folder(tmp_path / "data", per_class=4)
    (root / "cat" / "photo.jpg").write_bytes(EPS)
    dataset = load_dataset(DataConfig(spec=str(root), image_size=8))
    dataset.prepare()
    reasons = {Path(item["file"]).name: item["reason"] for item in dataset.skipped()}
    assert set(reasons) == {"photo.jpg"}
    assert sum(sum(split.values()) for split in dataset.counts().values()) == 12
    assert calls == []


# ----- 2. any decoder exception is a reason ---------------------------------------------------
@pytest.mark.parametrize("field_type", sorted(TIFF_FIELD_TYPES), ids=TIFF_FIELD_TYPES.values())
def test_tiffs_whose_decoder_raises_type_errors_are_reasons(field_type):
    raw = OverflowError if field_type == 16 else TypeError
    with pytest.raises(raw), Image.open(io.BytesIO(retyped_tiff(field_type))) as image:
        image.load()  # what the decoder raises unguarded
    with pytest.raises(ImageError, match="^cannot decode: ") as caught:
        load_resized(retyped_tiff(field_type), 8)
    assert "\n" not in str(caught.value)


def test_one_hostile_tiff_among_good_files_does_not_stop_the_load(tmp_path):
    root = write_class_folder(tmp_path / "data", per_class=6)
    for field_type, name in TIFF_FIELD_TYPES.items():
        (root / "dog" / f"{name}.tif").write_bytes(retyped_tiff(field_type))
    dataset = load_dataset(DataConfig(spec=str(root), image_size=8))
    dataset.prepare()
    reasons = {Path(item["file"]).stem: item["reason"] for item in dataset.skipped()}
    assert set(reasons) == set(TIFF_FIELD_TYPES.values())
    assert all(reason.startswith("cannot decode: ") for reason in reasons.values())
    assert sum(sum(split.values()) for split in dataset.counts().values()) == 18


@pytest.mark.parametrize(
    "error, reason",
    [
        (NotImplementedError(), "cannot decode: NotImplementedError"),
        (TypeError("unsupported operand"), "cannot decode: unsupported operand"),
        (OverflowError("Python int too large"), "cannot decode: Python int too large"),
        (ValueError("tile cannot extend outside image"), "cannot decode: tile cannot extend"),
        (struct.error("unpack requires a buffer of 4 bytes"), "cannot decode: unpack requires"),
        (SyntaxError("broken PNG file"), "truncated or corrupt image data"),
        (KeyError("I;42"), "cannot decode: 'I;42'"),
        (IndexError("list index out of range"), "cannot decode: list index out of range"),
        (ZeroDivisionError("division by zero"), "cannot decode: division by zero"),
        (EOFError(), "cannot decode: EOFError"),
        (MemoryError(), "not enough memory to decode it"),
        (OSError("image file is truncated (3 bytes not processed)"), "truncated or corrupt"),
        (RuntimeError("line one\nline two"), "cannot decode: line one"),
    ],
)
def test_any_exception_from_a_decoder_becomes_a_one_line_reason(monkeypatch, error, reason):
    def fail(self):
        raise error

    monkeypatch.setattr(ImageFile.ImageFile, "load", fail)
    with pytest.raises(ImageError) as caught:
        open_image(encoded(Image.fromarray(pattern_image(1, 2)), "PNG"))
    assert str(caught.value).startswith(reason)
    assert "\n" not in str(caught.value)


def fuzzed(data: bytes, rng: np.random.Generator) -> bytes:
    """Some bytes flipped (mostly in the header, where parsers trust lengths) and/or cut short."""
    buffer = bytearray(data)
    kind = int(rng.integers(0, 3))
    if kind in (0, 2):
        reach = len(buffer) if rng.random() < 0.3 else min(len(buffer), 200)
        for _ in range(int(rng.integers(1, 9))):
            buffer[int(rng.integers(0, reach))] = int(rng.integers(0, 256))
    if kind in (1, 2):
        buffer = buffer[: int(rng.integers(1, len(buffer)))]
    return bytes(buffer)


def test_fuzzed_images_decode_or_give_a_reason():
    picture = Image.fromarray(pattern_image(2, 3, size=16))
    bases = {name: encoded(picture, name) for name in ("PNG", "JPEG", "GIF", "BMP", "TIFF", "WEBP")}
    bases["PNG 16-bit"] = encoded(Image.fromarray(SIXTEEN_BIT), "PNG")
    bases["PNG RGBA"] = encoded(picture.convert("RGBA"), "PNG")
    rng = np.random.default_rng(8)
    decoded, reasons, started = 0, [], time.monotonic()
    for data in bases.values():
        for _ in range(100):
            try:
                array = load_resized(fuzzed(data, rng), 8, max_pixels=1_000_000)
            except ImageError as error:
                reasons.append(str(error))
                continue
            assert array.dtype == np.uint8 and array.shape == (8, 8, 3)
            decoded += 1
    assert decoded + len(reasons) == 800
    assert decoded >= 40 and len(reasons) >= 400  # both outcomes were exercised
    assert all(reason and "\n" not in reason for reason in reasons)
    assert time.monotonic() - started < 20


# ----- 3. 16-bit images -----------------------------------------------------------------------
@pytest.mark.parametrize(
    "array, image_format",
    [
        (SIXTEEN_BIT, "PNG"),  # opens as I;16
        (SIXTEEN_BIT.astype(">u2"), "TIFF"),  # I;16B
        (SIXTEEN_BIT.astype(np.int32), "TIFF"),  # I, 32-bit integers in the 16-bit range
    ],
    ids=["png-I;16", "tiff-I;16B", "tiff-I"],
)
def test_sixteen_bit_values_keep_their_high_byte(array, image_format):
    decoded = np.asarray(open_image(encoded(Image.fromarray(array), image_format)))
    assert decoded.dtype == np.uint8 and decoded.shape == (2, 4, 3)
    for channel in range(3):
        assert decoded[..., channel].tolist() == SIXTEEN_BIT_AS_8


def test_wide_integer_and_float_images_are_scaled_to_their_range():
    wide = np.array([[0, 1 << 19, (1 << 20) - 1, -(1 << 20)]], dtype=np.int32)
    assert image_module.wide_to_uint8(wide).tolist() == [[128, 192, 255, 0]]
    floats = np.array([[0.0, 0.5, 1.0, np.nan]], dtype=np.float32)
    assert image_module.wide_to_uint8(floats).tolist() == [[0, 128, 255, 0]]
    decoded = np.asarray(
        open_image(encoded(Image.fromarray(np.ascontiguousarray(floats[:, :3])), "TIFF"))
    )
    assert decoded[..., 1].tolist() == [[0, 128, 255]]


def test_sixteen_bit_decode_makes_no_float_copies():
    side = 1500
    ramp = (np.arange(side * side, dtype=np.uint32) % 65536).astype(np.uint16)
    data = encoded(Image.fromarray(ramp.reshape(side, side)), "PNG")
    tracemalloc.start()
    try:
        decoded = open_image(data)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert np.asarray(decoded)[0, 257, 0] == 1  # 257 >> 8
    # Float64 arrays took 32 bytes a pixel here (a 77 KB PNG needed 1.4 GB); integers take 4.
    assert peak / side**2 < 6


class BrightnessModel:
    """Two classes, dark and bright, from the mean pixel; records what it was given."""

    def __init__(self):
        self.seen = []

    def __call__(self, images, training=False):
        images = np.asarray(images)
        self.seen.append(images)
        bright = images.mean(axis=(1, 2, 3)) / 255.0
        return np.stack([1.0 - bright, bright], axis=1)


def saved_run(tmp_path: Path) -> Path:
    from engine.jsonio import write_json
    from engine.runs import create_run

    run_dir = create_run(RunConfig(), tmp_path / "runs")
    write_json(run_dir / "load_report.json", {"class_names": ["dark", "bright"], "image_size": 8})
    return run_dir


def test_a_sixteen_bit_png_is_predicted_and_bad_files_get_reasons(tmp_path):
    from engine.predict import Predictor

    model = BrightnessModel()
    predictor = Predictor(saved_run(tmp_path), model=model)
    white = encoded(Image.fromarray(np.full((20, 30), 65535, np.uint16)), "PNG")
    faint = encoded(Image.fromarray(np.full((20, 30), 256, np.uint16)), "PNG")
    results = predictor.predict(
        [
            ("white16.png", white),
            ("photo.jpg", EPS),
            ("faint16.png", faint),
            ("odd.tif", retyped_tiff(16)),
        ],
        top_k=2,
        with_images=True,
    )
    assert [result["file"] for result in results] == [
        "white16.png",
        "photo.jpg",
        "faint16.png",
        "odd.tif",
    ]
    assert results[0]["top_k"][0] == {"label": "bright", "probability": pytest.approx(1.0)}
    assert results[2]["top_k"][0]["label"] == "dark"
    assert results[2]["top_k"][1]["probability"] == pytest.approx(1 / 255)
    assert results[1]["error"].startswith("not usable as an image: not an image in an allowed")
    assert results[3]["error"].startswith("not usable as an image: cannot decode: ")
    assert "top_k" not in results[1] and "image" not in results[3]
    assert results[0]["image"].dtype == np.uint8 and results[0]["image"].shape == (8, 8, 3)
    assert int(results[0]["image"].min()) == 255 and int(results[2]["image"].max()) == 1
    [batch] = model.seen
    assert batch.shape == (2, 8, 8, 3)


# ----- 4. large decodes, a couple at a time ---------------------------------------------------
def test_large_decodes_run_a_couple_at_a_time_and_small_ones_do_not_wait(tmp_path, monkeypatch):
    monkeypatch.setattr(image_module, "LARGE_DECODE_PIXELS", 1000)
    root = tmp_path / "data"
    for class_id, name in enumerate(("left", "right")):
        (root / name).mkdir(parents=True)
        for i in range(8):
            for kind, side in (("large", 40), ("small", 20)):  # 1600 and 400 pixels
                picture = pattern_image(class_id, seed=i, size=side)
                Image.fromarray(picture).save(root / name / f"{i:02d}-{kind}.png")

    lock, active, peak = threading.Lock(), {"large": 0, "small": 0}, {"large": 0, "small": 0}
    to_rgb = image_module.to_rgb

    def counted_to_rgb(image):
        kind = "large" if image.size[0] * image.size[1] > 1000 else "small"
        with lock:
            active[kind] += 1
            peak[kind] = max(peak[kind], active[kind])
        time.sleep(0.05 if kind == "large" else 0.15)
        with lock:
            active[kind] -= 1
        return to_rgb(image)

    monkeypatch.setattr(image_module, "to_rgb", counted_to_rgb)
    dataset = load_dataset(DataConfig(spec=str(root), image_size=8))
    dataset.prepare(workers=8)
    assert dataset.skipped() == []
    assert peak["large"] == image_module.LARGE_DECODES_AT_ONCE == 2
    assert peak["small"] > 2

    # Re-entrant within a thread, and released after an error: all slots are free again.
    slot = image_module.large_decode_slot
    with pytest.raises(RuntimeError), slot(10**9), slot(10**9):
        raise RuntimeError("inside")
    held = [image_module._large_decodes.acquire(blocking=False) for _ in range(2)]
    assert held == [True, True]
    for _ in held:
        image_module._large_decodes.release()


# ----- 5. the decoded cache on a full disk, and damaged ---------------------------------------
def built(class_folder: Path, image_size: int = 16):
    dataset = load_dataset(DataConfig(spec=str(class_folder), image_size=image_size))
    dataset.prepare()
    return dataset


def leftovers(folder: Path) -> list[str]:
    return sorted(path.name for path in folder.iterdir()) if folder.exists() else []


def test_a_full_disk_while_allocating_is_a_sentence_and_leaves_no_file(class_folder, monkeypatch):
    def no_space(descriptor, offset, length):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("os.posix_fallocate", no_space)
    dataset = load_dataset(DataConfig(spec=str(class_folder), image_size=16))
    with pytest.raises(UserError, match=r"^The disk is full at .+: the decoded cache needs 1 MB"):
        dataset.prepare()
    assert leftovers(dataset.cache_dir) == []


def test_too_little_free_space_is_refused_before_building(class_folder, monkeypatch):
    decoded = []
    monkeypatch.setattr(
        "engine.data.cache.DecodedCache.decode", lambda self, index, size=None: decoded.append(1)
    )
    monkeypatch.setattr("shutil.disk_usage", lambda path: Usage(10**12, 10**12, 3 * 1024**2))
    dataset = load_dataset(DataConfig(spec=str(class_folder), image_size=256))
    with pytest.raises(UserError) as caught:
        dataset.prepare()
    # 36 images of 256 x 256 x 3 bytes are 6.75 MB, and meta.json rounds it up to 7.
    assert str(caught.value) == (
        f"The disk is full at {dataset.cache_dir}: the decoded cache needs 7 MB and 3 MB are "
        "free; free some disk space or set STUDIO_CACHE_DIR to a folder on a larger disk."
    )
    assert decoded == [] and leftovers(dataset.cache_dir) == []


@pytest.mark.parametrize("allocation", ["fallocate", "unsupported", "absent"])
def test_the_cache_file_is_allocated_on_disk_before_it_is_mapped(tmp_path, monkeypatch, allocation):
    root = write_class_folder(tmp_path / "data", per_class=4)
    whole = encoded(Image.fromarray(pattern_image(1, 5, size=64)), "JPEG")
    (root / "dog" / "cut.jpg").write_bytes(whole[: len(whole) // 2])  # its header reads, no more
    if allocation == "unsupported":

        def unsupported(descriptor, offset, length):
            raise OSError(errno.EOPNOTSUPP, "Operation not supported")

        monkeypatch.setattr("os.posix_fallocate", unsupported)
    elif allocation == "absent":
        monkeypatch.delattr("os.posix_fallocate")
    dataset = built(root, image_size=64)
    [skipped] = dataset.skipped()
    assert skipped["file"] == "dog/cut.jpg"
    path = dataset.cache_dir / "images.u8"
    stat = path.stat()
    # Every block is on disk, the skipped item's 12 KB of zeros included: no hole to fill later.
    assert stat.st_blocks * 512 >= stat.st_size
    images = np.load(path, mmap_mode="r")
    assert images.shape == (13, 64, 64, 3)
    assert int(np.asarray(images).reshape(13, -1).max(axis=1).astype(bool).sum()) == 12


DAMAGE = {
    "images truncated": ("images.u8", lambda data: data[: len(data) // 2]),
    "images empty": ("images.u8", lambda data: b""),
    "images not npy": ("images.u8", lambda data: b"\x00garbage" * 100),
    "images of another shape": (
        "images.u8",
        lambda data: _npy(np.zeros((36, 8, 8, 3), np.uint8)),
    ),
    "meta not json": ("meta.json", lambda data: data[: len(data) // 2]),
    "meta binary": ("meta.json", lambda data: b"\xff\xfe\x00binary"),
    "meta a list": ("meta.json", lambda data: b"[]"),
    "meta short valid": ("meta.json", lambda data: _edit_meta(data, valid=[True])),
    "meta valid strings": ("meta.json", lambda data: _edit_meta(data, valid=["yes"] * 36)),
    "meta skipped numbers": ("meta.json", lambda data: _edit_meta(data, skipped=[1, 2])),
    "meta without count": ("meta.json", lambda data: _edit_meta(data, count=None)),
}


def _npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def _edit_meta(data: bytes, **changes) -> bytes:
    return json.dumps(json.loads(data) | changes).encode()


@pytest.mark.parametrize("damage", DAMAGE.values(), ids=DAMAGE.keys())
def test_a_damaged_cache_is_built_again(class_folder, damage):
    name, change = damage
    first = built(class_folder)
    expected = np.array(first.images())
    target = first.cache_dir / name
    target.write_bytes(change(target.read_bytes()))

    again = built(class_folder)
    assert np.array_equal(np.array(again.images()), expected)
    assert again.skipped() == []
    meta = json.loads((again.cache_dir / "meta.json").read_text())
    assert meta["count"] == 36 and meta["valid"] == [True] * 36
    # The cache and its perceptual hashes (engine.data.splits keeps copies in one split); no
    # temporary or damaged file is left behind.
    assert leftovers(again.cache_dir) == ["images.u8", "meta.json", "near_duplicates.npz"]
