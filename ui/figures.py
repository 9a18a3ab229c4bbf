"""Plotly figures built from the engine's data: counts, curves, confusion matrices, probabilities."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

PALETTE = [
    "#1f77b4",
    "#ff7f0e",
    "#2ca02c",
    "#d62728",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#7f7f7f",
    "#bcbd22",
    "#17becf",
]


def class_counts_bar(counts: dict[str, dict[str, int]]) -> go.Figure:
    """Grouped bars of images per class, one colour per split."""
    figure = go.Figure()
    for split, per_class in counts.items():
        if sum(per_class.values()):
            figure.add_bar(name=split, x=list(per_class), y=list(per_class.values()))
    figure.update_layout(
        barmode="group",
        xaxis_title="class",
        yaxis_title="images",
        legend_title="split",
        margin=dict(t=30, b=10),
        height=360,
    )
    figure.update_xaxes(type="category")  # class names such as "0".."9" are labels, not numbers
    return figure


def training_curves(
    series: list[tuple[str, list[dict], list[dict]]], steps_per_epoch: dict[str, int] | None = None
) -> go.Figure:
    """Loss and accuracy against epochs, for one run or several overlaid.

    series: (name, epoch rows, in-epoch step rows) per run. Step rows are drawn as thin lines at
    fractional epochs, so the curve moves within an epoch as TensorBoard's does.
    """
    figure = make_subplots(
        rows=1, cols=2, subplot_titles=("loss", "accuracy"), horizontal_spacing=0.08
    )
    for number, (name, epochs, steps) in enumerate(series):
        colour = PALETTE[number % len(PALETTE)]
        prefix = f"{name} " if len(series) > 1 else ""
        per_epoch = (steps_per_epoch or {}).get(name)
        for column, metric in ((1, "loss"), (2, "accuracy")):
            show = column == 1
            if steps and per_epoch:
                x = [row["epoch"] - 1 + row["step"] / per_epoch for row in steps if metric in row]
                figure.add_scatter(
                    x=x,
                    y=[row[metric] for row in steps if metric in row],
                    mode="lines",
                    row=1,
                    col=column,
                    line=dict(color=colour, width=1),
                    opacity=0.35,
                    name=f"{prefix}train (in epoch)",
                    legendgroup=f"{name}-steps",
                    showlegend=show,
                )
            x = [row["epoch"] for row in epochs]
            figure.add_scatter(
                x=x,
                y=[row.get(metric) for row in epochs],
                mode="lines+markers",
                row=1,
                col=column,
                line=dict(color=colour),
                name=f"{prefix}train",
                legendgroup=f"{name}-train",
                showlegend=show,
            )
            figure.add_scatter(
                x=x,
                y=[row.get(f"val_{metric}") for row in epochs],
                mode="lines+markers",
                row=1,
                col=column,
                line=dict(color=colour, dash="dash"),
                name=f"{prefix}validation",
                legendgroup=f"{name}-val",
                showlegend=show,
            )
    figure.update_xaxes(title_text="epoch")
    figure.update_yaxes(title_text="loss", row=1, col=1)
    figure.update_yaxes(title_text="accuracy", row=1, col=2)
    figure.update_layout(height=380, margin=dict(t=40, b=10), legend=dict(orientation="h", y=-0.2))
    return figure


def confusion_heatmap(
    matrix: list[list[int]], class_names: list[str], normalize: bool = False
) -> go.Figure:
    """A confusion matrix with true classes as rows; row-normalised values when asked."""
    counts = np.asarray(matrix, dtype=float)
    values = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1) if normalize else counts
    text = [[f"{v:.2f}" if normalize else f"{int(v)}" for v in row] for row in values]
    size = len(class_names)
    figure = go.Figure(
        go.Heatmap(
            z=values,
            x=class_names,
            y=class_names,
            colorscale="Blues",
            text=text,
            texttemplate="%{text}" if size <= 20 else None,
            hovertemplate="true %{y}<br>predicted %{x}<br>%{text}<extra></extra>",
            colorbar=dict(title="share" if normalize else "images"),
        )
    )
    side = min(900, max(380, 42 * size + 160))
    figure.update_layout(
        xaxis_title="predicted class",
        yaxis_title="true class",
        height=side,
        yaxis=dict(autorange="reversed"),
        margin=dict(t=20, b=10),
    )
    figure.update_xaxes(tickangle=-45 if size > 8 else 0, type="category")
    figure.update_yaxes(type="category")
    return figure


def probability_bars(top_k: list[dict]) -> go.Figure:
    """Horizontal bars of the top-k labels and their probabilities."""
    labels = [item["label"] for item in top_k][::-1]
    values = [item["probability"] for item in top_k][::-1]
    figure = go.Figure(
        go.Bar(
            x=values,
            y=labels,
            orientation="h",
            text=[f"{v:.1%}" for v in values],
            textposition="auto",
        )
    )
    figure.update_layout(
        xaxis=dict(title="probability", range=[0, 1]),
        yaxis=dict(title="class", type="category"),
        height=60 + 32 * len(labels),
        margin=dict(t=10, b=10, l=10, r=10),
    )
    return figure


def per_class_bars(per_run: dict[str, dict[str, float]], metric: str = "F1") -> go.Figure:
    """Per-class scores of several runs side by side."""
    figure = go.Figure()
    for name, scores in per_run.items():
        figure.add_bar(name=name, x=list(scores), y=list(scores.values()))
    figure.update_layout(
        barmode="group",
        xaxis=dict(title="class", type="category"),
        yaxis=dict(title=metric, range=[0, 1.05]),
        height=360,
        margin=dict(t=20, b=10),
        legend=dict(orientation="h", y=-0.25),
    )
    return figure
