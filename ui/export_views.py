"""The Evaluate page's export section: pick a format, export with progress, see the parity check
(the evaluated split scored by Keras and by the exported artifact) and download the folder as a zip.

The page calls export_section(run_dir); the export itself runs in engine.export.
"""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from engine.errors import UserError
from engine.export import FORMATS
from ui import insight_services
from ui.text import plain


def parity_text(info: dict) -> str:
    """What the parity check found, in one sentence."""
    split, count = info.get("split", "evaluated"), info.get("count", 0)
    keras, exported = info["keras_accuracy"], info["exported_accuracy"]
    difference = info["max_abs_probability_difference"]
    if info.get("tolerance") is not None:
        return (
            f"The exported model matches Keras on the {count:,} {split} images: accuracy "
            f"{exported * 100:.2f} % for both, and no probability differs by more than "
            f"{difference:.1e} (at most {info['tolerance']:.0e} is allowed)."
        )
    return (
        f"Quantization changes the accuracy on the {count:,} {split} images by "
        f"{(exported - keras) * 100:+.2f} points ({keras * 100:.2f} % with Keras, "
        f"{exported * 100:.2f} % exported); {info.get('prediction_agreement', 0):.1%} of the "
        f"predictions are unchanged, and probabilities differ by up to {difference:.3f}."
    )


def _size_text(size: int) -> str:
    return f"{size / 2**20:.2f} MB" if size >= 2**20 else f"{size / 2**10:.1f} kB"


def show_export(info: dict, run_id: str) -> None:
    """An export's figures, its parity sentence, its README and the zip download."""
    columns = st.columns(4)
    columns[0].metric("Keras accuracy", f"{info['keras_accuracy'] * 100:.2f} %", border=True)
    columns[1].metric("Exported accuracy", f"{info['exported_accuracy'] * 100:.2f} %", border=True)
    columns[2].metric(
        "Largest probability difference",
        f"{info['max_abs_probability_difference']:.2e}",
        border=True,
    )
    columns[3].metric("File size", _size_text(int(info.get("artifact_bytes", 0))), border=True)
    (st.success if info.get("tolerance") is not None else st.info)(plain(parity_text(info)))
    st.caption(
        plain(
            f"{info.get('description', info['format'])} in {info['folder']} · run by "
            f"{info.get('runtime', 'unknown runtime')} · exported {info.get('created', '')}"
        )
    )
    readme = Path(info["folder"]) / "README.md"
    if readme.is_file():
        with st.expander("The preprocessing a caller must do (README.md)"):
            st.code(readme.read_text(encoding="utf-8"), language="markdown")
    name = f"{run_id}-{info['format']}"
    st.download_button(
        "Download the export (.zip)",
        data=insight_services.export_zip(info["folder"], name),
        file_name=f"{name}.zip",
        mime="application/zip",
        key="eval_export_download",
        icon=":material/download:",
    )


def export_section(run_dir: Path) -> None:
    """Export the run's model as a SavedModel or TensorFlow Lite file, checked against Keras."""
    run_dir = Path(run_dir)
    st.subheader("Export the model")
    format = st.selectbox(
        "Format",
        list(FORMATS),
        format_func=FORMATS.get,
        key="eval_export_format",
        help="SavedModel for TensorFlow serving; TensorFlow Lite for phones and small devices; "
        "dynamic-range quantization stores the weights as 8-bit integers, about 4 times smaller.",
    )
    if st.button(
        "Export",
        key="eval_export",
        help="Writes the model into the run's exports folder, then scores the evaluated split "
        "with the exported file itself to check it against the Keras model.",
    ):
        bar = st.progress(0.0, text="Starting the export...")
        try:
            with st.spinner(f"Exporting as {FORMATS[format]}..."):
                insight_services.export_model(
                    run_dir, format, lambda done, text: bar.progress(min(done, 1.0), text=text)
                )
        except UserError as error:
            st.error(plain(error))
        bar.empty()
    info = insight_services.existing_export(run_dir, format)
    if info is None:
        st.caption(f"Not exported as {FORMATS[format]} yet.")
        return
    show_export(info, run_dir.name)
