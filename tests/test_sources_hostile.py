"""Hostile and damaged sources: npz memory bombs, zip bombs and odd zips, folders with links, tfds splits.

Each input either loads correctly or ends in one UserError sentence naming the thing at fault.
"""

from __future__ import annotations

import errno
import io
import json
import os
import threading
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import tensorflow_datasets as tfds
from conftest import pattern_image, write_class_folder
from PIL import Image

from engine.config import DataConfig
from engine.data import extractions as extraction_cache
from engine.data import load_dataset, load_source
from engine.data import zips as zips_module
from engine.data.folders import load_folder_source
from engine.data.npz import load_npz_source
from engine.data.zips import SKIPPED_FILE, load_zip_source
from engine.errors import UserError


def png(class_id: int = 0, seed: int = 0, size: int = 12) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pattern_image(class_id, seed, size=size)).save(buffer, format="PNG")
    return buffer.getvalue()


def npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def npz(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        for key, data in members.items():
            archive.writestr(f"{key}.npy", data)
    return path


def good_arrays(count: int = 8) -> dict[str, np.ndarray]:
    return {
        "X_train": np.zeros((count, 6, 6), np.uint8),
        "y_train": np.arange(count) % 2,
    }


def lying_header(shape: tuple[int, ...], descr: str = "|u1") -> bytes:
    """An .npy header that declares `shape` followed by only 100 bytes of data."""
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        buffer, {"descr": descr, "fortran_order": False, "shape": shape}
    )
    return buffer.getvalue() + b"\0" * 100


# ----- npz ---------------------------------------------------------------------------------
def test_a_label_of_2_62_is_refused_before_it_makes_class_names(tmp_path):
    arrays = good_arrays()
    arrays["y_train"] = arrays["y_train"].astype(np.int64)
    arrays["y_train"][3] = 2**62
    np.savez(tmp_path / "huge_label.npz", **arrays)
    started = time.monotonic()
    with pytest.raises(UserError, match=r"huge_label.npz: y_train holds 4611686018427387904"):
        load_npz_source(str(tmp_path / "huge_label.npz"))
    assert time.monotonic() - started < 5


def test_classes_are_the_labels_present(tmp_path):
    arrays = good_arrays(8)
    arrays["y_train"] = np.array([3, 7, 3, 7, 3, 7, 3, 7]) * 1000
    np.savez(tmp_path / "sparse.npz", **arrays)
    source = load_npz_source(str(tmp_path / "sparse.npz"))
    assert source.class_names == ["3000", "7000"]
    assert source.labels.tolist() == [0, 1, 0, 1, 0, 1, 0, 1]

    arrays["y_train"] = np.arange(8) % 2
    np.savez(tmp_path / "named.npz", class_names=np.array([b"cat", b"dog"]), **arrays)
    assert load_npz_source(str(tmp_path / "named.npz")).class_names == ["cat", "dog"]


def test_a_declared_shape_of_9_tib_is_refused_from_its_header(tmp_path):
    members = {"X_train": lying_header((9 * 2**40,)), "y_train": npy(np.zeros(1, np.int64))}
    npz(tmp_path / "liar.npz", members)
    with pytest.raises(
        UserError,
        match=r"liar.npz: X_train declares \(9895604649984,\) uint8 values \(9.9 TB\) but holds 100 bytes",
    ):
        load_npz_source(str(tmp_path / "liar.npz"))
    # A truthful array over the limit is refused before its data is read.
    np.savez(tmp_path / "big.npz", **good_arrays(64))
    with pytest.raises(
        UserError, match=r"big.npz holds 2.8 KB of arrays, over the limit of 1.0 KB"
    ):
        load_npz_source(str(tmp_path / "big.npz"), max_bytes=1000)


def object_names(path: Path) -> None:
    names = np.empty(2, dtype=object)
    names[:] = ["cat", "dog"]
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("class_names.npy", npy_pickled(names))
        for key, value in good_arrays().items():
            archive.writestr(f"{key}.npy", npy(value))


def npy_pickled(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=True)
    return buffer.getvalue()


def truncated(path: Path) -> None:
    np.savez(path, **good_arrays(200))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def damaged_data(path: Path) -> None:
    np.savez_compressed(
        path,
        X_train=np.arange(20000, dtype=np.int64).reshape(50, 20, 20),
        y_train=np.arange(50) % 2,
    )
    data = bytearray(path.read_bytes())
    middle = len(data) // 4
    data[middle : middle + 64] = bytes(64)
    path.write_bytes(bytes(data))


NPZ_CASES = {
    "empty.npz": (lambda p: p.write_bytes(b""), r"empty.npz is empty \(0 bytes\)"),
    "no_members.npz": (lambda p: zipfile.ZipFile(p, "w").close(), "no_members.npz holds no arrays"),
    "renamed.npz": (
        lambda p: p.write_bytes(npy(np.zeros((4, 4)))),
        "renamed.npz is a single .npy array, not an .npz archive",
    ),
    "text.npz": (lambda p: p.write_text("X_train,y_train\n"), "text.npz is not a readable .npz"),
    "scalar.npz": (
        lambda p: np.savez(p, X_train=np.array(5.0), y_train=np.array(1)),
        r"scalar.npz: X_train has shape \(\); expected N x H x W",
    ),
    "scalar_labels.npz": (
        lambda p: np.savez(p, X_train=np.zeros((1, 4, 4)), y_train=np.array(1)),
        r"scalar_labels.npz: y_train must hold class numbers .* shape \(\)",
    ),
    "no_images.npz": (
        lambda p: np.savez(p, X_train=np.zeros((0, 4, 4)), y_train=np.zeros(0)),
        "no_images.npz: X_train has shape .* which holds no pixels",
    ),
    "object_names.npz": (object_names, "object_names.npz stores class_names as pickled"),
    "string_images.npz": (
        lambda p: np.savez(p, X_train=np.full((2, 3, 3), "a"), y_train=np.zeros(2)),
        "string_images.npz: X_train holds <U1 values; images must be numbers",
    ),
    "nan_labels.npz": (
        lambda p: np.savez(p, X_train=np.zeros((2, 3, 3)), y_train=np.array([0.0, np.nan])),
        "nan_labels.npz: y_train holds nan, which is not a class number",
    ),
    "negative_labels.npz": (
        lambda p: np.savez(p, X_train=np.zeros((2, 3, 3)), y_train=np.array([0, -1])),
        "negative_labels.npz: y_train holds -1",
    ),
    "complex_labels.npz": (
        lambda p: np.savez(p, X_train=np.zeros((2, 3, 3)), y_train=np.array([0j, 1j])),
        "complex_labels.npz: y_train must hold class numbers",
    ),
    "two_cases.npz": (
        lambda p: np.savez(p, X_train=np.zeros((2, 3, 3)), x_train=np.zeros((2, 3, 3))),
        "two_cases.npz holds both X_train and x_train; keep only one",
    ),
    "few_names.npz": (
        lambda p: np.savez(p, class_names=np.array(["cat"]), **good_arrays()),
        "few_names.npz: class_names has 1 name but a label is 1;",
    ),
    "twin_names.npz": (
        lambda p: np.savez(p, class_names=np.array(["cat", "cat"]), **good_arrays()),
        "twin_names.npz: class_names lists 'cat' more than once",
    ),
    "test_only_class.npz": (
        lambda p: np.savez(
            p, X_test=np.zeros((3, 4, 4)), y_test=np.array([0, 1, 2]), **good_arrays()
        ),
        "Class '2' of test_only_class.npz has no training images",
    ),
    "truncated.npz": (truncated, "truncated.npz is not a readable .npz file"),
    "damaged.npz": (damaged_data, r"damaged.npz: X_train is damaged \(Bad CRC-32"),
    "header_lie_float.npz": (
        lambda p: npz(
            p, {"X_train": lying_header((10**6, 8, 8), "<f8"), "y_train": npy(np.zeros(1))}
        ),
        "header_lie_float.npz: X_train declares",
    ),
}


@pytest.mark.parametrize("file_name", sorted(NPZ_CASES))
def test_damaged_and_hostile_npz_end_in_a_sentence(tmp_path, file_name):
    make, message = NPZ_CASES[file_name]
    make(tmp_path / file_name)
    with pytest.raises(UserError, match=message) as caught:
        load_dataset(str(tmp_path / file_name))
    assert "\n" not in str(caught.value) and str(caught.value).endswith(".")


# ----- zips --------------------------------------------------------------------------------
def make_zip(path: Path, entries: dict[str, bytes], compression: int = zipfile.ZIP_STORED) -> Path:
    with zipfile.ZipFile(path, "w", compression=compression) as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    return path


def pets(count: int = 3) -> dict[str, bytes]:
    return {
        f"pets/{name}/{name}_{i}.png": png(class_id, i)
        for class_id, name in enumerate(("cat", "dog"))
        for i in range(count)
    }


def patch_entry(path: Path, name: str, *, new_name: bytes = b"", flags: int = 0, method: int = -1):
    """Rewrite one entry's name bytes, set flag bits or change its method, in both its headers."""
    data = bytearray(path.read_bytes())
    raw = name.encode()
    # (signature, flags offset, method offset, name length offset, name offset)
    for signature, at_flags, at_method, at_length, at_name in (
        (b"PK\x03\x04", 6, 8, 26, 30),
        (b"PK\x01\x02", 8, 10, 28, 46),
    ):
        start = 0
        while (offset := data.find(signature, start)) >= 0:
            start = offset + 4
            length = int.from_bytes(data[offset + at_length : offset + at_length + 2], "little")
            if bytes(data[offset + at_name : offset + at_name + length]) != raw:
                continue
            old = int.from_bytes(data[offset + at_flags : offset + at_flags + 2], "little")
            data[offset + at_flags : offset + at_flags + 2] = (old | flags).to_bytes(2, "little")
            if method >= 0:
                data[offset + at_method : offset + at_method + 2] = method.to_bytes(2, "little")
            if new_name:
                assert len(new_name) == length
                data[offset + at_name : offset + at_name + length] = new_name
    path.write_bytes(bytes(data))


def extractions(cache: Path) -> list[str]:
    folder = cache / "unzipped"
    return sorted(p.name for p in folder.iterdir() if not p.name.endswith(".lock"))


def test_a_zip_bomb_entry_is_left_out_and_the_rest_loads(tmp_path, isolated_dirs):
    entries = pets() | {"pets/cat/bomb.bmp": bytes(8 * 1024**2)}
    archive = make_zip(tmp_path / "bomb.zip", entries, zipfile.ZIP_DEFLATED)
    assert archive.stat().st_size < 100_000
    source = load_zip_source(str(archive), isolated_dirs)
    assert source.class_names == ["cat", "dog"] and len(source.items) == 6
    reasons = {item["file"]: item["reason"] for item in source.skipped}
    assert "like a zip bomb" in reasons["pets/cat/bomb.bmp"]
    written = sum(f.stat().st_size for f in (isolated_dirs / "unzipped").rglob("*") if f.is_file())
    assert written < 100_000


def test_too_little_free_disk_is_refused_before_writing(tmp_path, isolated_dirs, monkeypatch):
    archive = make_zip(tmp_path / "pets.zip", pets())
    monkeypatch.setattr(zips_module, "_free_bytes", lambda folder: 10 * 1024**2)
    with pytest.raises(
        UserError, match=r"Unpacking pets.zip needs 268.4 MB but .* has 10.5 MB free"
    ):
        load_zip_source(str(archive), isolated_dirs)
    assert extractions(isolated_dirs) == []


def test_a_full_disk_while_writing_is_a_sentence_and_leaves_nothing(
    tmp_path, isolated_dirs, monkeypatch
):
    archive = make_zip(tmp_path / "pets.zip", pets())

    class FullDisk(io.BytesIO):
        def write(self, data):
            raise OSError(errno.ENOSPC, "No space left on device")

    real_open = open
    monkeypatch.setattr(
        zips_module,
        "open",
        lambda file, mode="r", *a, **k: (
            FullDisk() if mode == "xb" else real_open(file, mode, *a, **k)
        ),
        raising=False,
    )
    with pytest.raises(
        UserError, match=r"The disk is full at .*; free some space and load pets.zip"
    ):
        load_zip_source(str(archive), isolated_dirs)
    assert extractions(isolated_dirs) == []


def test_a_password_protected_zip_is_refused(tmp_path, isolated_dirs):
    archive = make_zip(tmp_path / "secret.zip", pets())
    patch_entry(archive, "pets/cat/cat_1.png", flags=0x1)
    with pytest.raises(
        UserError,
        match=r"secret.zip is password-protected \(1 of its 6 entries is encrypted, such as pets/cat/cat_1.png\)",
    ):
        load_dataset(str(archive))


def test_odd_entry_names_load_or_are_reported(tmp_path, isolated_dirs):
    long_a, long_b = "a" * 300 + "1.png", "a" * 300 + "2.png"
    entries = pets(2) | {
        ".": b"dot",
        "pets/cat/./dotted.png": png(0, 9),
        "pets/dog/twin/inner.png": png(1, 9),
        "pets/dog/twin": b"a file named like the folder above",
        "pets/bird": b"a file named like a class folder that comes later",
        "pets/cat/" + long_a: png(0, 10),
        "pets/cat/" + long_b: png(0, 11),
        "pets/" + "b" * 300 + "/x.png": png(2, 1),
        "pets/bird/one.png": png(2, 2),
        "pets/cafXX/utf8.png": png(3, 1),
        "pets/naXve/cp437.png": png(3, 2),
        "pets/dog/deflate64.png": png(1, 12),
    }
    archive = make_zip(tmp_path / "odd.zip", entries)
    patch_entry(archive, "pets/cafXX/utf8.png", new_name="pets/café/utf8.png".encode())
    patch_entry(archive, "pets/naXve/cp437.png", new_name="pets/naïve/cp437.png".encode("cp437"))
    patch_entry(archive, "pets/dog/deflate64.png", method=9)
    source = load_zip_source(str(archive), isolated_dirs)

    long_class = next(name for name in source.class_names if name.startswith("bbb"))
    assert len(long_class.encode()) == 255
    assert sorted(source.class_names) == sorted(["bird", "cat", "café", "dog", long_class, "naïve"])
    names = {source.name(i) for i in range(len(source.items))}
    assert "cat/dotted.png" in names and "dog/twin/inner.png" in names
    assert len([n for n in names if n.startswith("cat/aaa")]) == 2  # two long names stay two files
    assert {"café/utf8.png", "naïve/cp437.png", "bird/one.png"} <= names
    reasons = {item["file"]: item["reason"] for item in source.skipped}
    assert "without a file name" in reasons["."]
    assert "same name as a folder" in reasons["pets/dog/twin"]
    assert "same name as a folder" in reasons["pets/bird"]
    assert "compression this program cannot read" in reasons["pets/dog/deflate64.png"]
    assert len(source.items) == 4 + 8


def test_corrupt_entries_are_left_out_whole(tmp_path, isolated_dirs):
    archive = tmp_path / "corrupt.zip"
    with zipfile.ZipFile(archive, "w") as writer:
        for name, data in pets(2).items():
            writer.writestr(name, data)
        writer.writestr("pets/cat/bad_crc.png", png(0, 20))
        writer.writestr("pets/dog/bad_stream.png", png(1, 20), zipfile.ZIP_DEFLATED)
    data = bytearray(archive.read_bytes())
    with zipfile.ZipFile(archive) as reader:
        # Same length, other bytes: the stored entry fails its CRC only after its last byte; the
        # deflated one starts with an invalid block type, which zlib itself refuses.
        for name, at in (("pets/cat/bad_crc.png", 10), ("pets/dog/bad_stream.png", 0)):
            info = reader.getinfo(name)
            start = info.header_offset + 30 + len(info.filename) + len(info.extra) + at
            data[start : start + 30] = b"\xff" * 30
    archive.write_bytes(bytes(data))
    source = load_zip_source(str(archive), isolated_dirs)
    reasons = {item["file"]: item["reason"] for item in source.skipped}
    assert reasons["pets/cat/bad_crc.png"].startswith("corrupt zip entry")
    assert reasons["pets/dog/bad_stream.png"].startswith("corrupt zip entry (Error -3")
    assert len(source.items) == 4
    assert not list((isolated_dirs / "unzipped").rglob("bad_*"))


def test_two_loads_of_one_zip_at_once_extract_it_once(tmp_path, isolated_dirs, monkeypatch):
    archive = make_zip(tmp_path / "pets.zip", pets())
    calls = []
    real_extract = zips_module.extract_zip_safely

    def slow_extract(*args, **kwargs):
        calls.append(threading.get_ident())
        time.sleep(0.3)  # long enough for every other load to arrive meanwhile
        return real_extract(*args, **kwargs)

    monkeypatch.setattr(zips_module, "extract_zip_safely", slow_extract)
    results, errors = [], []
    start = threading.Barrier(4)

    def load():
        start.wait()
        try:
            source = load_zip_source(str(archive), isolated_dirs)
            results.append((source.class_names, [source.name(i) for i in range(len(source.items))]))
        except Exception as error:  # collected: the assertion below names it
            errors.append(error)

    threads = [threading.Thread(target=load) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == [] and len(calls) == 1
    assert len(results) == 4 and all(result == results[0] for result in results)
    assert len(results[0][1]) == 6
    assert len(extractions(isolated_dirs)) == 1  # no staging folder left behind


def test_an_extraction_raced_by_another_process_is_reused(tmp_path, isolated_dirs):
    archive = make_zip(tmp_path / "pets.zip", pets())
    target = tmp_path / "out"
    zips_module.extract_zip_safely(archive, target)
    first = sorted(p.relative_to(target) for p in target.rglob("*"))
    # The same extraction finishing second (as a concurrent process would) keeps the first.
    assert zips_module.extract_zip_safely(archive, target) == []
    assert sorted(p.relative_to(target) for p in target.rglob("*")) == first
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_a_damaged_extraction_is_extracted_again(tmp_path, isolated_dirs):
    archive = make_zip(tmp_path / "pets.zip", pets())
    load_zip_source(str(archive), isolated_dirs)
    (target,) = [isolated_dirs / "unzipped" / name for name in extractions(isolated_dirs)]
    (target / SKIPPED_FILE).write_text("{not json")
    (target / "pets" / "cat" / "cat_0.png").unlink()
    source = load_zip_source(str(archive), isolated_dirs)
    assert len(source.items) == 6 and json.loads((target / SKIPPED_FILE).read_text()) == []


def test_old_extractions_are_evicted(tmp_path, isolated_dirs, monkeypatch):
    folder = isolated_dirs / "unzipped"
    now = time.time()
    ages = {"recent1": 60, "recent2": 120, "recent3": 180, "busy": 240, "ancient": 40 * 86400}
    for name, age in ages.items():
        (folder / name / "cat").mkdir(parents=True)
        os.utime(folder / name, (now - age, now - age))
    stale = folder / ".deadbeef.tmp123"
    stale.mkdir()
    os.utime(stale, (now - 2 * 86400, now - 2 * 86400))
    monkeypatch.setattr(extraction_cache, "KEEP_EXTRACTIONS", 3)
    archive = make_zip(tmp_path / "pets.zip", pets())
    with extraction_cache.locked(folder, "busy"):  # another load is using it: never removed
        source = load_zip_source(str(archive), isolated_dirs)
    current = Path(source.root).relative_to(folder).parts[0]
    assert extractions(isolated_dirs) == sorted([current, "recent1", "recent2", "busy"])
    monkeypatch.setattr(extraction_cache, "KEEP_EXTRACTIONS", 1)
    load_zip_source(str(archive), isolated_dirs)
    assert extractions(isolated_dirs) == [current]


# ----- folders -----------------------------------------------------------------------------
def test_links_out_of_the_folder_are_not_followed_and_are_reported(tmp_path):
    root = write_class_folder(tmp_path / "data", classes=("cat", "dog"), per_class=3)
    outside = write_class_folder(tmp_path / "elsewhere", classes=("bird",), per_class=4)
    (root / "cat" / "secret.png").symlink_to(outside / "bird" / "bird_000.png")
    (root / "cat" / "more").symlink_to(outside / "bird")
    (root / "bird").symlink_to(outside / "bird")
    (root / "dog" / "alias.png").symlink_to(root / "dog" / "dog_000.png")  # inside: read
    (root / "dog" / "loop").symlink_to(root)
    os.mkfifo(root / "dog" / "pipe.png")  # would block a reader forever
    source = load_folder_source(str(root))
    assert source.class_names == ["cat", "dog"]
    assert all(Path(os.path.realpath(item)).is_relative_to(root) for item in source.items)
    assert len(source.items) == 7
    reasons = {item["file"]: item["reason"] for item in source.skipped}
    assert reasons == {
        "bird": "a link to a folder outside the dataset folder; not followed",
        "cat/more": "a link to a folder outside the dataset folder; not followed",
        "cat/secret.png": "a link to a file outside the dataset folder; not read",
        "dog/loop": "a link to a folder; links to folders are not followed",
        "dog/pipe.png": "not a regular file (a pipe, socket or device); not read",
    }


def test_the_number_of_files_is_capped(tmp_path, monkeypatch):
    root = write_class_folder(tmp_path / "data", classes=("cat", "dog"), per_class=6)
    assert len(load_folder_source(str(root)).items) == 12
    monkeypatch.setattr("engine.data.folders.MAX_FILES", 10)
    with pytest.raises(UserError, match=r"data holds more than 10 files; load a smaller folder"):
        load_dataset(str(root))


def test_split_folders_need_a_train_folder(tmp_path):
    write_class_folder(tmp_path / "d" / "val", classes=("cat", "dog"), per_class=2)
    write_class_folder(tmp_path / "d" / "test", classes=("cat", "dog"), per_class=2)
    with pytest.raises(
        UserError, match=r"d has test/, val/ but no train/ folder; put the training"
    ):
        load_dataset(str(tmp_path / "d"))
    write_class_folder(tmp_path / "d" / "train", classes=("cat", "dog"), per_class=2)
    write_class_folder(tmp_path / "d" / "validation", classes=("cat", "dog"), per_class=2)
    with pytest.raises(
        UserError, match=r"has both val/ and validation/, two folders for the validation split"
    ):
        load_dataset(str(tmp_path / "d"))


def test_a_class_without_training_images_is_a_sentence(tmp_path):
    write_class_folder(tmp_path / "d" / "train", classes=("cat", "dog"), per_class=3)
    write_class_folder(tmp_path / "d" / "test", classes=("cat", "dog", "fox"), per_class=2)
    with pytest.raises(
        UserError,
        match=r"Class 'fox' of .*d has no training images; add images to its folder in train/",
    ):
        load_dataset(str(tmp_path / "d"))


def test_files_beside_the_split_folders_are_reported(tmp_path):
    write_class_folder(tmp_path / "d" / "train", classes=("cat", "dog"), per_class=3)
    write_class_folder(tmp_path / "d" / "extra", classes=("cat",), per_class=1)
    (tmp_path / "d" / "README.txt").write_text("about the data")
    (tmp_path / "d" / "train" / "stray.png").write_bytes(png())
    source = load_folder_source(str(tmp_path / "d"))
    assert len(source.items) == 6
    assert {item["file"]: item["reason"].split(";")[0] for item in source.skipped} == {
        "extra": "a folder beside train/ that is not a split folder",
        "README.txt": "not inside a split folder",
        "train/stray.png": "not inside a class folder",
    }


def test_names_that_are_not_utf8_on_disk_load(tmp_path):
    root = tmp_path / "photos"
    latin = root / os.fsdecode(b"caf\xe9")  # a Latin-1 folder name from an old system
    latin.mkdir(parents=True)
    for i in range(3):
        (latin / os.fsdecode(b"\xe9t\xe9_%d.png" % i)).write_bytes(png(0, i))
    write_class_folder(root, classes=("dog",), per_class=3)
    dataset = load_dataset(DataConfig(spec=str(root), image_size=8))
    assert dataset.class_names == ["caf\\xe9", "dog"]
    names = [dataset.source.name(i) for i in range(6)]
    assert "caf\\xe9/\\xe9t\\xe9_0.png" in names
    assert all(name.encode("utf-8") for name in names)
    dataset.prepare()
    assert dataset.skipped() == [] and sum(dataset.counts()["train"].values()) > 0


# ----- tfds --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "split, message",
    [
        ("train[50%:10%]", "selects no examples: its slice starts at or after its end"),
        ("train[30:10]", "selects no examples"),
        ("train[-5:-20]", "selects no examples"),
        ("train[::]", "is not valid"),
        ("all[:10%]", "is not valid"),
    ],
)
def test_a_reversed_or_malformed_tfds_split_is_a_sentence(monkeypatch, tmp_path, split, message):
    monkeypatch.setattr("engine.network.is_online", lambda timeout=3.0: True)
    with tfds.testing.mock_data(num_examples=12, policy=tfds.testing.MockPolicy.USE_CODE):
        with pytest.raises(
            UserError,
            match=rf"The train split '{split}' of tfds dataset 'tf_flowers' {message}".replace(
                "[", r"\["
            ),
        ):
            load_source(DataConfig(spec="tfds:tf_flowers", train_split=split), tmp_path)
        # The same slice written the right way round loads (the mock ignores slices).
        source = load_source(
            DataConfig(spec="tfds:tf_flowers", train_split="train[10%:50%]"), tmp_path
        )
    assert len(source.items) == 12


def test_a_tfds_slice_that_is_empty_once_counted_is_a_sentence():
    from engine.data.tfds_source import _check_split

    counts = {"train": tfds.core.SplitInfo(name="train", shard_lengths=[40], num_bytes=0)}
    with pytest.raises(
        UserError, match=r"'train\[-10:5\]' of tfds dataset 'x' selects no examples"
    ):
        _check_split(tfds, "x", "train", "train[-10:5]", counts)
    with pytest.raises(
        UserError, match=r"'train\[:50\]' of tfds dataset 'x' is outside its 40 examples"
    ):
        _check_split(tfds, "x", "train", "train[:50]", counts)
    _check_split(tfds, "x", "train", "train[-10:35]+train[:5%]", counts)  # 5 + 2 examples: fine
