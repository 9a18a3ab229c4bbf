"""The Data page's health audit: choices, a progress bar, and the report's counts, galleries,
tables and class balance. The files of a group of copies are excluded one by one, all but the
first, or one kept of every group (ui.edits_services; Undo takes it back), and the audit then
follows the data as changed. Every file and class name is the user's text, shown through
plain() or in table cells and figure labels, never as Markdown or HTML."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pandas as pd
import streamlit as st

from engine.config import DataConfig
from engine.errors import UserError
from engine.jsonio import dumps
from ui import health_services, services
from ui.figures import balance_figure
from ui.health_edits_views import (
    group_gallery,
    keep_one_of_each,
    last_edit,
)
from ui.text import plain

AUDITED = "data_health_audited"  # the data, run and choice of the last report shown
STAGES = {
    "decode": "Decoding images",
    "hash": "Hashing images",
    "measure": "Measuring images",
    "features": "Computing the run's features",
    "labels": "Cross-validating labels (fold)",
}
ISSUES = {
    "unreadable": "Unreadable",
    "dark": "Very dark",
    "bright": "Very bright",
    "blurry": "Blurry",
    "low_information": "Low information",
    "grayscale": "Grayscale among colour",
    "odd_size": "Odd size",
    "odd_aspect_ratio": "Odd aspect ratio",
}


def health_section(config: DataConfig, runs_dir: Path | None = None) -> None:
    """The audit of the dataset `config` names: options, a Run button, then the last report.

    runs_dir: where runs are listed; a completed run on this dataset can give the label-issue
    features (its penultimate layer) instead of simple image features.
    """
    st.caption(
        "Copies of the same photo (exact, or resized, re-encoded or slightly cropped), copies "
        "that sit in two splits or two classes, odd images, class balance, and photos whose "
        "label is probably wrong. The audit decodes the dataset first if training has not."
    )
    runs = health_services.feature_runs(config, runs_dir) if runs_dir else []
    labels_column, features_column = st.columns(2)
    label_issues = labels_column.checkbox(
        "Find label issues",
        key="data_health_labels",
        help="Cross-validated logistic regression and cleanlab; takes longer.",
    )
    choices = [""] + [run["path"] for run in runs]
    names = {run["path"]: run["name"] for run in runs}
    chosen = features_column.selectbox(
        "Features for label issues",
        choices,
        key="data_health_run",
        format_func=lambda path: names.get(path, "Simple image features"),
        disabled=not label_issues or not runs,
        help="A completed run on this dataset sees the photos better than simple features.",
    )
    run_dir = Path(chosen) if label_issues and chosen else None
    # The data as audited, less its exclusions and relabels: once audited here, the report
    # follows each change (an audit run again reads its measurements: a second or so).
    unedited = dataclasses.replace(config, exclude=(), relabel={})
    audited = (unedited, services.get_dataset(config).fingerprint, run_dir, label_issues)
    report = health_services.stored_report(config, run_dir, label_issues)
    start = st.button("Run the audit", key="data_health_start", icon=":material/health_and_safety:")
    if start or (report is None and st.session_state.get(AUDITED) == audited):
        report = _audit(config, run_dir, label_issues)
    if report is None:
        st.info("Run the audit to see the health of this dataset.")
        return
    st.session_state[AUDITED] = audited
    show_report(config, report)


def _audit(config: DataConfig, run_dir: Path | None, label_issues: bool) -> dict | None:
    """Run the audit with a progress bar; None, and the engine's sentence, when it fails."""
    bar = st.progress(0.0, text="Starting the audit...")

    def progress(stage: str, done: int, total: int) -> None:
        text = f"{STAGES.get(stage, stage)}: {done:,} of {total:,}"
        bar.progress(min(done / max(total, 1), 1.0), text=text)

    try:
        return health_services.run_audit(config, run_dir, label_issues, progress)
    except UserError as error:
        st.error(plain(error))
        return None
    finally:
        bar.empty()


def show_report(config: DataConfig, report: dict) -> None:
    """The last exclusion's sentence, the report's counts, then a tab per finding."""
    with st.container():  # always drawn, so the tabs below keep their place and their choice
        last_edit(config)
    issues = report["image_issues"]
    columns = st.columns(6)
    columns[0].metric("Images", f"{report['images']:,}")
    columns[1].metric("Exact duplicate groups", len(report["exact_duplicates"]))
    columns[2].metric("Near duplicate groups", len(report["near_duplicates"]))
    columns[3].metric("Leaks across splits", len(report["leakage"]))
    columns[4].metric("Label conflicts", len(report["label_conflicts"]))
    columns[5].metric("Odd images", sum(len(entries) for entries in issues.values()))
    tabs = st.tabs(
        ["Duplicates", "Leakage", "Label conflicts", "Image issues", "Label issues", "Balance"]
    )
    with tabs[0]:
        keep_one_of_each(config, report)
        st.markdown("**Exact duplicates**: byte-identical files")
        group_gallery(config, report["exact_duplicates"], "exact", "No byte-identical files.")
        distance = report["near_duplicate_distance"]
        st.markdown(f"**Near duplicates**: perceptual hashes within {distance} of 512 bits")
        group_gallery(config, report["near_duplicates"], "near", "No near duplicates.")
    with tabs[1]:
        group_gallery(config, report["leakage"], "leak", "No copies sit in two splits.")
    with tabs[2]:
        group_gallery(config, report["label_conflicts"], "conflict", "No copies in two classes.")
    with tabs[3]:
        rows = [
            {"issue": ISSUES.get(kind, kind), **entry}
            for kind, entries in issues.items()
            for entry in entries
        ]
        if rows:
            st.dataframe(pd.DataFrame(rows), hide_index=True, key="data_health_issues")
            st.caption(
                "Score: the mean grey level (0-1) for dark and bright, the share of colour for "
                "grayscale, and the ratio to the set's median for the others."
            )
        else:
            st.success("No odd images.")
    with tabs[4]:
        label_issue_table(report)
    with tabs[5]:
        st.plotly_chart(balance_figure(report["class_balance"]), key="data_health_balance")
    st.download_button(
        "Download the report (JSON)",
        dumps(report, indent=2),
        file_name="health.json",
        mime="application/json",
        key="data_health_download",
    )


def label_issue_table(report: dict) -> None:
    """The label issues, most suspicious first, with how they were found."""
    model = report.get("label_model")
    if model is None:
        st.info("Tick Find label issues and run the audit again to look for wrong labels.")
        return
    if model.get("note"):
        st.info(plain(model["note"]))
        return
    st.caption(
        f"{len(report['label_issues']):,} files, from a logistic regression on "
        f"{plain(model['features'])} ({model['folds']}-fold, out-of-sample accuracy "
        f"{model['accuracy']:.1%}); the lower the quality, the more likely the label is wrong."
    )
    if report["label_issues"]:
        quality = st.column_config.ProgressColumn("quality", min_value=0.0, max_value=1.0)
        st.dataframe(
            pd.DataFrame(report["label_issues"]),
            hide_index=True,
            column_config={"quality": quality},
            key="data_health_label_issues",
        )
