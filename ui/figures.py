"""Plotly figures built from the engine's data: counts, curves, confusion matrices, probabilities."""

from __future__ import annotations

import html
import math

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


def plot_text(name: str) -> str:
    """A class, file or run name as Plotly shows it: Plotly reads a little HTML in every label
    (<b>, <br>, <a href>), so names from a dataset or a run folder are escaped and shown as the
    text they are. html.unescape gives the name back from a clicked point."""
    return html.escape(str(name), quote=False)


def class_counts_bar(counts: dict[str, dict[str, int]]) -> go.Figure:
    """Grouped bars of images per class, one colour per split."""
    figure = go.Figure()
    for split, per_class in counts.items():
        if sum(per_class.values()):
            figure.add_bar(
                name=split, x=[plot_text(name) for name in per_class], y=list(per_class.values())
            )
    return _split_bars_layout(figure, "images")


def balance_figure(counts: dict[str, dict[str, int]]) -> go.Figure:
    """Grouped bars: each class's share of each split's images, so splits compare at a glance."""
    figure = go.Figure()
    for split, per_class in counts.items():
        total = sum(per_class.values())
        if not total:
            continue
        names = [plot_text(name) for name in per_class]
        shares = [count / total * 100 for count in per_class.values()]
        customdata = list(per_class.values())
        figure.add_bar(
            name=split,
            x=names,
            y=shares,
            customdata=customdata,
            hovertemplate="%{x}: %{y:.1f}% (%{customdata:,} images)<extra>" + split + "</extra>",
        )
    return _split_bars_layout(figure, "share of the split's images (%)")


def _split_bars_layout(figure: go.Figure, y_title: str) -> go.Figure:
    """Grouped per-class bars, one colour per split: the layout both split charts share."""
    figure.update_layout(
        barmode="group",
        xaxis_title="class",
        yaxis_title=y_title,
        legend_title="split",
        margin=dict(t=30, b=10),
        height=360,
    )
    figure.update_xaxes(type="category")  # class names such as "0".."9" are labels, not numbers
    return figure


# Legends sit above the plot, in a row, so they never cover an axis title.
LEGEND_ABOVE = dict(orientation="h", yanchor="bottom", y=1.12, xanchor="left", x=0)


def run_colours(run_ids: list[str]) -> dict[str, str]:
    """One colour per run, by its place in the list: every figure of a page takes it from here."""
    return {run_id: PALETTE[number % len(PALETTE)] for number, run_id in enumerate(run_ids)}


def training_curves(
    series: list[tuple[str, list[dict], list[dict]]],
    steps_per_epoch: dict[str, int] | None = None,
    colours: dict[str, str] | None = None,
    labels: dict[str, str] | None = None,
) -> go.Figure:
    """Loss and accuracy against epochs, for one run or several overlaid.

    series: (run id, epoch rows, in-epoch step rows) per run. Step rows are drawn as thin lines at
    fractional epochs, so the curve moves within an epoch as TensorBoard's does. With several
    runs, the legend has one entry per run (labels[run id], in colours[run id]) and two entries
    that say which line style is train and which is validation.
    """
    colours = colours or run_colours([name for name, _, _ in series])
    labels = labels or {}
    several = len(series) > 1
    figure = make_subplots(
        rows=1, cols=2, subplot_titles=("loss", "accuracy"), horizontal_spacing=0.08
    )
    for name, epochs, steps in series:
        colour = colours[name]
        label = plot_text(labels.get(name, name))
        per_epoch = (steps_per_epoch or {}).get(name)
        # (legend name, legend group, shown in the legend) of the step, train and validation lines:
        # with several runs, one entry per run that toggles all its lines; else one per line.
        if several:
            lines = {
                "steps": (f"{label} train (in epoch)", name, False),
                "train": (label, name, True),
                "validation": (f"{label} validation", name, False),
            }
        else:
            lines = {kind: (kind, f"{name}-{kind}", True) for kind in ("train", "validation")}
            lines["steps"] = ("train (in epoch)", f"{name}-steps", True)
        for column, metric in ((1, "loss"), (2, "accuracy")):
            where = dict(row=1, col=column)
            if steps and per_epoch:
                legend_name, group, shown = lines["steps"]
                x = [row["epoch"] - 1 + row["step"] / per_epoch for row in steps if metric in row]
                figure.add_scatter(
                    x=x,
                    y=[row[metric] for row in steps if metric in row],
                    mode="lines",
                    line=dict(color=colour, width=1),
                    opacity=0.35,
                    name=legend_name,
                    legendgroup=group,
                    showlegend=shown and column == 1,
                    **where,
                )
            x = [row["epoch"] for row in epochs]
            for kind, key, dash in (
                ("train", metric, None),
                ("validation", f"val_{metric}", "dash"),
            ):
                legend_name, group, shown = lines[kind]
                figure.add_scatter(
                    x=x,
                    y=[row.get(key) for row in epochs],
                    mode="lines+markers",
                    line=dict(color=colour, dash=dash),
                    name=legend_name,
                    legendgroup=group,
                    showlegend=shown and column == 1,
                    **where,
                )
    if several:  # what the line styles mean, in grey, after the runs
        for style, dash in (("train", "solid"), ("validation", "dash")):
            figure.add_scatter(
                x=[None],
                y=[None],
                mode="lines",
                line=dict(color="#888888", dash=dash),
                name=style,
                legendgroup="line style",
                row=1,
                col=1,
            )
    figure.update_xaxes(title_text="epoch")
    figure.update_yaxes(title_text="loss", row=1, col=1)
    figure.update_yaxes(title_text="accuracy", row=1, col=2)
    figure.update_layout(height=420, margin=dict(t=90, b=10), legend=LEGEND_ABOVE)
    return figure


def confusion_heatmap(
    matrix: list[list[int]], class_names: list[str], normalize: bool = False
) -> go.Figure:
    """A confusion matrix with true classes as rows; row-normalised values when asked."""
    counts = np.asarray(matrix, dtype=float)
    values = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1) if normalize else counts
    text = [[f"{v:.2f}" if normalize else f"{int(v)}" for v in row] for row in values]
    size = len(class_names)
    names = [plot_text(name) for name in class_names]
    figure = go.Figure(
        go.Heatmap(
            z=values,
            x=names,
            y=names,
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
    labels = [plot_text(item["label"]) for item in top_k][::-1]
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


def per_class_bars(
    per_run: dict[str, dict[str, float]],
    metric: str = "F1",
    colours: dict[str, str] | None = None,
    labels: dict[str, str] | None = None,
) -> go.Figure:
    """Per-class scores of several runs side by side; per_run is keyed by run id."""
    colours = colours or run_colours(list(per_run))
    labels = labels or {}
    figure = go.Figure()
    for name, scores in per_run.items():
        figure.add_bar(
            name=plot_text(labels.get(name, name)),
            x=[plot_text(class_name) for class_name in scores],
            y=list(scores.values()),
            marker_color=colours[name],
        )
    figure.update_layout(
        barmode="group",
        xaxis=dict(title="class", type="category"),
        yaxis=dict(title=metric, range=[0, 1.05]),
        height=400,
        margin=dict(t=60, b=10),
        legend=LEGEND_ABOVE,
    )
    return figure


def lr_find_figure(result: dict) -> go.Figure:
    """Loss against learning rate on a log axis, with the suggestion marked."""
    figure = go.Figure()
    figure.add_scatter(
        x=result["learning_rates"],
        y=result["losses"],
        mode="lines",
        name="loss",
        line={"color": "rgba(120,120,120,0.5)"},
    )
    figure.add_scatter(
        x=result["learning_rates"], y=result["smoothed_losses"], mode="lines", name="smoothed loss"
    )
    suggestion = result["suggested_learning_rate"]
    figure.add_vline(x=suggestion, line_dash="dash", annotation_text=f"suggested {suggestion:.1e}")
    finite = [v for v in result["smoothed_losses"] if math.isfinite(v)]
    top = min(max(finite), 4 * min(finite)) if finite else None
    figure.update_layout(
        xaxis={"type": "log", "title": "learning rate (log scale)"},
        yaxis={"title": "training loss", "range": [0, top * 1.05] if top else None},
        height=320,
        margin={"t": 30, "b": 40},
        legend={"orientation": "h", "y": 1.12},
    )
    return figure
