"""Memory: peak resident memory of an engine training process against loading the folder into numpy.

Each contender runs in its own child process under a small wrapper that reports the child's
peak resident set (getrusage RUSAGE_CHILDREN ru_maxrss, which counts the pages of the engine's
memory-mapped cache the process touched):

- engine: `python -m engine train --dataset cats_vs_dogs --image-size 224 --epochs 1` (default_cnn,
  fresh STUDIO_CACHE_DIR, so it also decodes the cache);
- model floor: a bare model.fit of the same default_cnn at 224x224, batch 32, on 64 random
  images: what the model alone needs, whatever the data pipeline;
- numpy: the notebook way, keras.utils.load_img + img_to_array of every photo at 224x224 into a
  list, then np.array (float32), with keras imported as a notebook would.

Peak memory barely varies between runs, so each contender runs once whatever --repeats says.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from bench.common import (
    PROJECT_ROOT,
    image_files,
    require_folder,
    result_row,
    scratch_space,
    subprocess_environment,
    subset_folder,
)

IMAGE_SIZE = 224
BATCH_SIZE = 32  # the engine's default
GOAL_GB = 2.5
QUICK_PER_CLASS = 24

# Runs the command given as its arguments, then prints the peak RSS of that child in kilobytes.
WRAPPER = """
import resource, subprocess, sys
code = subprocess.call(sys.argv[1:], stdout=sys.stderr)
print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
sys.exit(code)
"""

NUMPY_LOADER = """
import sys
from pathlib import Path
import keras
import numpy as np
suffixes = {".jpg", ".jpeg", ".png"}
files = sorted(p for p in Path(sys.argv[1]).rglob("*") if p.suffix.lower() in suffixes)
size = int(sys.argv[2])
images, labels = [], []
for file in files:
    image = keras.utils.load_img(file, target_size=(size, size))
    images.append(keras.utils.img_to_array(image))
    labels.append(file.parent.name)
x = np.array(images)
print(f"{x.shape} {x.dtype}, {x.nbytes / 1024**3:.2f} GB")
"""


BARE_FIT = """
import sys
import keras
import numpy as np
from engine.config import ModelConfig
from engine.models import build_model
size, batch = int(sys.argv[1]), int(sys.argv[2])
model = build_model(ModelConfig(), size, 2)
model.compile(optimizer="adam", loss="categorical_crossentropy")
images = np.random.default_rng(0).uniform(0, 255, (2 * batch, size, size, 3)).astype("float32")
labels = keras.utils.to_categorical(np.arange(2 * batch) % 2, 2)
model.fit(images, labels, batch_size=batch, epochs=1, verbose=0)
"""


def peak_rss_gb(command: list[str], environment: dict[str, str]) -> tuple[float, str]:
    """(peak resident GB of the command's process, its output) from a wrapper process."""
    completed = subprocess.run(
        [sys.executable, "-c", WRAPPER, *command],
        cwd=PROJECT_ROOT,
        env=environment,
        capture_output=True,
        text=True,
    )
    if completed.returncode != 0:
        tail = (completed.stderr.strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(f"{' '.join(command[:4])} ... failed: {tail}")
    kilobytes = int(completed.stdout.strip().splitlines()[-1])
    return kilobytes / 1024**2, completed.stderr


def engine_peak(folder: Path, scratch: Path) -> tuple[float, dict]:
    command = [
        *(sys.executable, "-m", "engine", "train", "--dataset", str(folder)),
        *("--image-size", str(IMAGE_SIZE), "--epochs", "1", "--runs-dir", str(scratch / "runs")),
    ]
    environment = subprocess_environment(STUDIO_CACHE_DIR=str(scratch / "engine-cache"))
    gigabytes, output = peak_rss_gb(command, environment)
    summaries = [line for line in output.splitlines() if line.startswith('{"state"')]
    return gigabytes, json.loads(summaries[-1]) if summaries else {}


def numpy_peak(folder: Path) -> tuple[float, str]:
    command = [sys.executable, "-c", NUMPY_LOADER, str(folder), str(IMAGE_SIZE)]
    gigabytes, output = peak_rss_gb(command, subprocess_environment())
    shape = [line for line in output.splitlines() if line.startswith("(")]
    return gigabytes, shape[-1] if shape else ""


def bare_fit_peak() -> float:
    command = [sys.executable, "-c", BARE_FIT, str(IMAGE_SIZE), str(BATCH_SIZE)]
    return peak_rss_gb(command, subprocess_environment())[0]


def run(data_root: Path, quick: bool, repeats: int) -> list[dict]:
    source = require_folder(data_root, "cats_vs_dogs")
    with scratch_space("bench-memory-") as scratch:
        folder = subset_folder(source, scratch / "images", QUICK_PER_CLASS if quick else None)
        count = len(image_files(folder))
        engine, summary = engine_peak(folder, scratch)
        notebook, shape = numpy_peak(folder)
        floor = bare_fit_peak()
    cache_gb = count * IMAGE_SIZE * IMAGE_SIZE * 3 / 1024**3
    return [
        result_row(
            f"memory: engine training at {IMAGE_SIZE}x{IMAGE_SIZE} vs numpy arrays",
            "peak RSS GB",
            engine,
            baseline=notebook,
            higher_is_better=False,
            goal=f"≤ {GOAL_GB:g} GB",
            met=engine <= GOAL_GB,
            notes=f"cats_vs_dogs, {count:,} photos; engine: default_cnn, 1 epoch, "
            f"{summary.get('seconds', '?')} s, state {summary.get('state', '?')}, its uint8 "
            f"cache {cache_gb:.2f} GB on disk; numpy: {shape}; one run each",
        ),
        result_row(
            f"memory: engine training vs bare model.fit at {IMAGE_SIZE}x{IMAGE_SIZE}",
            "peak RSS GB",
            engine,
            baseline=floor,
            higher_is_better=False,
            notes=f"bare fit: default_cnn, batch {BATCH_SIZE}, 64 random images, no data "
            "pipeline: the model's own floor; a ratio near 1 means the engine adds little",
        ),
    ]
