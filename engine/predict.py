"""Prediction on arbitrary images with a run's model: the same decoding and resizing as training,
and whether each image is unfamiliar (engine.familiarity)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from engine import runs
from engine.data.images import ImageError, load_resized
from engine.errors import UserError
from engine.jsonio import read_json_object


def load_model(model_file: str | os.PathLike):
    """Load a saved .keras model, or raise a UserError naming the file."""
    import keras

    import engine.models  # noqa: F401  registers the custom layers saved models refer to

    model_file = Path(model_file)
    if not model_file.is_file():
        raise UserError(
            f"The model file {model_file} does not exist; train the run again or pick another run."
        )
    try:
        return keras.models.load_model(model_file, compile=False)
    except (
        Exception
    ) as error:  # Keras raises many types for a bad file; all mean the same to the user
        raise UserError(
            f"The model file {model_file.name} could not be loaded ({type(error).__name__}); "
            "it may be damaged or from an incompatible Keras version: train the run again."
        ) from None


def run_model_path(run_dir: str | os.PathLike) -> Path:
    """The model a run is evaluated and used with: best.keras, or last.keras without model selection.

    A run trained without a validation split (`"model_selection": false` in its status) had
    nothing to pick a best epoch with, so its last model is the one it trained.
    """
    run_dir = Path(run_dir)
    status = read_json_object(run_dir / "status.json") or {}
    which = "last" if status.get("model_selection") is False else "best"
    return runs.model_path(run_dir, which)


def flip_horizontal(images):
    """Images (batch, height, width, channels) mirrored left to right; NumPy arrays or tensors."""
    return images[:, :, ::-1]


class Predictor:
    """A run's model with its preprocessing: `predict(files)` gives top-k per file."""

    def __init__(self, run_dir: str | os.PathLike, model=None):
        self.run_dir = Path(run_dir)
        self.config = runs.load_config(self.run_dir)
        report = read_json_object(self.run_dir / "load_report.json") or {}
        self.class_names: list[str] = report.get("class_names") or []
        self.image_size: int = int(report.get("image_size") or self.config.data.image_size)
        if not self.class_names or not self.image_size:
            raise UserError(
                f"Run {self.run_dir.name} has no load report (it did not finish loading its data); pick a completed run."
            )
        self.model = model if model is not None else load_model(run_model_path(self.run_dir))
        self._dual = None  # familiarity.measure_model's model, built on first use
        self._familiarity = None
        # Why unfamiliar images cannot be told apart (None until tried, "" when they can).
        self.familiarity_problem: str | None = None

    def preprocess(self, source: str | os.PathLike | bytes) -> np.ndarray:
        """One image file or its bytes -> image_size x image_size x 3 float32 in [0, 255]."""
        return load_resized(
            source, self.image_size, self.config.data.resize, self.config.data.max_pixels
        ).astype(np.float32)

    def predict(
        self,
        sources: list[tuple[str, str | os.PathLike | bytes]],
        top_k: int = 5,
        batch_size: int = 64,
        tta: bool = False,
        with_images: bool = False,
    ) -> list[dict]:
        """For each (name, path or bytes): {"file", "top_k": [{"label", "probability"}]} or {"file", "error"}.

        With tta, probabilities are the mean over the image and its horizontal flip. With
        with_images, each usable file also gets "image": the uint8 RGB array the model saw, to
        show instead of the uploaded bytes (a browser cannot draw a 16-bit PNG or a TIFF).
        A file that is not a usable image gets its reason and never stops the others.
        """
        results: list[dict] = [{"file": name} for name, _ in sources]
        images, positions = [], []
        for position, (_, source) in enumerate(sources):
            try:
                images.append(self.preprocess(source))
                positions.append(position)
            except ImageError as error:
                results[position]["error"] = f"not usable as an image: {error}"
            except OSError as error:
                results[position]["error"] = f"cannot be read: {error.strerror or error}"
        if with_images:
            for position, image in zip(positions, images, strict=True):
                results[position]["image"] = image.astype(np.uint8)
        if images:
            probabilities, unfamiliar = self._probabilities_and_familiarity(
                np.stack(images), batch_size, tta
            )
            k = max(1, min(top_k, len(self.class_names)))
            for position, row, flag in zip(positions, probabilities, unfamiliar, strict=True):
                order = np.argsort(-row)[:k]
                results[position]["top_k"] = [
                    {"label": self.class_names[i], "probability": float(row[i])} for i in order
                ]
                results[position]["unfamiliar"] = flag
        return results

    def _probabilities_and_familiarity(
        self, images: np.ndarray, batch_size: int, tta: bool
    ) -> tuple[np.ndarray, list[bool | None]]:
        """Probabilities (as probabilities()) and, from the same pass, whether each image is
        unfamiliar (engine.familiarity); None each when that cannot be judged (familiarity_problem)."""
        familiarity = self.familiarity()
        if familiarity is None:
            return self.probabilities(images, batch_size, tta), [None] * len(images)
        from engine.features import outputs

        measured = outputs(self._dual, images, batch_size)
        features, probabilities = measured[0], measured[1].astype(np.float64)
        extremes = measured[2] if len(measured) > 2 else None
        flags = familiarity.unfamiliar(features, extremes, probabilities.argmax(axis=1))
        if tta:
            probabilities = (
                probabilities + self._model_output(flip_horizontal(images), batch_size)
            ) / 2
        return probabilities, [bool(flag) for flag in flags]

    def familiarity(self):
        """The run's engine.familiarity.Familiarity, fitted once per model file and cached in
        the run folder; None with familiarity_problem set when it cannot be had."""
        if self._familiarity is None and self.familiarity_problem is None:
            from engine import familiarity

            try:
                self._dual = familiarity.measure_model(self.model)
                self._familiarity = familiarity.load_or_fit(self.run_dir, self._dual)
                self.familiarity_problem = ""
            except UserError as error:
                self.familiarity_problem = str(error)
        return self._familiarity

    def probabilities(
        self, images: np.ndarray, batch_size: int = 64, tta: bool = False
    ) -> np.ndarray:
        """Class probabilities for a batch of preprocessed images (flip-averaged with tta)."""
        probabilities = self._model_output(images, batch_size)
        if tta:
            probabilities = (
                probabilities + self._model_output(flip_horizontal(images), batch_size)
            ) / 2
        return probabilities

    def _model_output(self, images: np.ndarray, batch_size: int) -> np.ndarray:
        if len(images) <= batch_size:
            # Calling the model directly skips predict()'s per-call set-up, which dominates for one image.
            return np.asarray(self.model(images, training=False), dtype=np.float64)
        return np.asarray(
            self.model.predict(images, batch_size=batch_size, verbose=0), dtype=np.float64
        )


def predict_files(
    run_dir: str | os.PathLike,
    paths: list[Path],
    top_k: int = 5,
    tta: bool = False,
    explain_dir: str | os.PathLike | None = None,
) -> tuple[list[dict], list[str]]:
    """`python -m engine predict`: (one result per file, warnings to print).

    With explain_dir, each usable image's Grad-CAM heatmap and overlay are written there
    (engine.explain.write_explanations); a model Grad-CAM cannot explain, or a folder that cannot
    be made, is refused before anything is predicted.
    """
    predictor = Predictor(run_dir)
    grad_cam = None
    if explain_dir is not None:
        from engine.explain import GradCam, explain_folder

        explain_folder(explain_dir)
        grad_cam = GradCam(predictor.model)
    sources = [(str(path), path) for path in paths]
    results = predictor.predict(sources, top_k=top_k, tta=tta, with_images=grad_cam is not None)
    if grad_cam is not None:
        from engine.explain import write_explanations

        write_explanations(grad_cam, results, explain_dir)
        for result in results:
            result.pop("image", None)
    warnings = []
    if predictor.familiarity_problem:
        warnings.append(f"unfamiliar images cannot be told apart: {predictor.familiarity_problem}")
    return results, warnings
