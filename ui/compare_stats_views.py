"""The Compare page's paired test of two runs: the verdict in words, the paired counts and a
per-class chart of where the two disagree (from engine.compare_stats.compare_runs' result).

Run and class names come from the user: every text shown goes through plain(), and names drawn
in a Plotly figure are HTML-escaped, since Plotly reads a few tags in its text.
"""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from ui.figures import LEGEND_ABOVE, plot_text
from ui.text import plain


def pick_pair(runs: list[dict], names: dict[str, str]) -> tuple[dict, dict]:
    """Run A and run B among the selected runs; B's choices leave out A, so they always differ."""
    by_id = {run["run_id"]: run for run in runs}
    left, right = st.columns(2)
    run_a = left.selectbox(
        "Run A", list(by_id), format_func=names.get, key="compare_stats_a", help="The baseline."
    )
    run_b = right.selectbox(
        "Run B",
        [run_id for run_id in by_id if run_id != run_a],
        format_func=names.get,
        key="compare_stats_b",
        help="The run tested against A.",
    )
    return by_id[run_a], by_id[run_b]


def p_text(p_value: float) -> str:
    """ "p = 0.003", "p = 0.41" or "p < 0.001"."""
    if p_value < 0.001:
        return "p < 0.001"
    return f"p = {p_value:.3f}" if p_value < 0.01 else f"p = {p_value:.2f}"


def verdict(result: dict, name_a: str, name_b: str) -> str:
    """One sentence a user understands: which run is better, or that there is no evidence."""
    a_only, b_only, count = result["a_only"], result["b_only"], result["count"]
    images = f"{result['split']} images"
    if a_only + b_only == 0:
        return (
            f"No evidence of a difference: {name_a} and {name_b} are right and wrong on exactly "
            f"the same {count:,} {images}."
        )
    p_value = result["mcnemar_p_value"]
    chance = f"a difference this large would arise by chance with {p_text(p_value)}"
    if p_value < result.get("significance", 0.05):
        better, worse = (name_b, name_a) if b_only > a_only else (name_a, name_b)
        wins, losses = max(a_only, b_only), min(a_only, b_only)
        return (
            f"{better} is better: it is right on {wins:,} {images} that {worse} gets wrong, and "
            f"{worse} on {losses:,} that {better} gets wrong; {chance}."
        )
    return (
        f"No evidence of a difference: {name_a} and {name_b} disagree on {a_only + b_only:,} of "
        f"{count:,} {images} ({a_only:,} right only by {name_a}, {b_only:,} only by {name_b}), "
        f"and {chance}, which is not rare enough to tell them apart."
    )


def interval_text(result: dict, name_a: str, name_b: str) -> str:
    """The accuracy difference B - A with its bootstrap interval, in percentage points."""
    low, high = (100 * value for value in result["difference_interval"])
    return (
        f"Accuracy of {name_b} minus {name_a}: {100 * result['difference']:+.2f} points; 95 % "
        f"bootstrap interval {low:+.2f} to {high:+.2f} points ({result['resamples']:,} paired "
        f"resamples of the {result['count']:,} images)."
    )


def paired_counts(result: dict, name_a: str, name_b: str) -> pd.DataFrame:
    """The 2 x 2 table of paired outcomes: A right or wrong against B right or wrong."""
    return pd.DataFrame(
        [[result["both_right"], result["a_only"]], [result["b_only"], result["both_wrong"]]],
        index=[f"{name_a} right", f"{name_a} wrong"],
        columns=[f"{name_b} right", f"{name_b} wrong"],
    )


def disagreement_figure(
    result: dict, name_a: str, name_b: str, colour_a: str, colour_b: str
) -> go.Figure:
    """Per true class, how many images only A gets right and how many only B does."""
    classes = [plot_text(row["class"]) for row in result["per_class"]]
    figure = go.Figure()
    for key, name, colour in (("a_only", name_a, colour_a), ("b_only", name_b, colour_b)):
        figure.add_bar(
            name=plot_text(f"only {name} right"),
            x=classes,
            y=[row[key] for row in result["per_class"]],
            marker_color=colour,
        )
    figure.update_layout(
        barmode="group",
        xaxis=dict(title="true class", type="category"),
        yaxis=dict(title="images only one run gets right", rangemode="tozero"),
        height=380,
        margin=dict(t=60, b=10),
        legend=LEGEND_ABOVE,
    )
    return figure


def show_comparison(result: dict, names: dict[str, str], colours: dict[str, str]) -> None:
    """The verdict, the accuracies and their difference, the paired counts and the chart."""
    name_a, name_b = names[result["run_a"]], names[result["run_b"]]
    sentence = verdict(result, name_a, name_b)
    significant = result["mcnemar_p_value"] < result.get("significance", 0.05)
    (st.success if significant else st.info)(plain(sentence))
    columns = st.columns(4)
    columns[0].metric(plain(f"{name_a} (A)"), f"{result['accuracy_a'] * 100:.2f} %", border=True)
    columns[1].metric(plain(f"{name_b} (B)"), f"{result['accuracy_b'] * 100:.2f} %", border=True)
    columns[2].metric("B − A", f"{result['difference'] * 100:+.2f} points", border=True)
    columns[3].metric("McNemar p-value", f"{result['mcnemar_p_value']:.3g}", border=True)
    st.caption(
        plain(interval_text(result, name_a, name_b))
        + " The p-value is McNemar's exact test: of the images only one run gets right, how "
        "lopsided a split would come about by chance if both runs were equally good."
    )
    st.dataframe(paired_counts(result, name_a, name_b))
    if result["a_only"] + result["b_only"]:
        st.plotly_chart(
            disagreement_figure(
                result, name_a, name_b, colours[result["run_a"]], colours[result["run_b"]]
            ),
            key="compare_stats_per_class",
        )
