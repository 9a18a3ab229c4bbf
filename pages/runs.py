"""Runs: every run in a table; rename, annotate, delete or continue the one you pick."""

from __future__ import annotations

import streamlit as st

from engine import run_admin, runs
from engine.errors import UserError
from ui import data_views, run_services
from ui.run_views import run_notes, runs_table_rows
from ui.state import TRAIN_RUN, init_state, runs_dir
from ui.text import plain

init_state()
CONFIRM_DELETE = "runs_confirm_delete"  # the run id whose Delete waits for its confirmation
MESSAGE = "runs_message"  # what the last action did, shown after the rerun it causes

st.title("Runs")
st.caption(
    f"Every run in {plain(runs_dir())}. A run's folder keeps its id; the name is what the pages show."
)
all_runs = run_services.list_runs(runs_dir())
if not all_runs:
    st.info("No runs yet: train one on the Train page.")
    st.stop()

st.dataframe(runs_table_rows(all_runs), hide_index=True)
message = st.session_state.pop(MESSAGE, None)
if message:
    st.success(plain(message))

by_id = {run["run_id"]: run for run in all_runs}
run_id = st.selectbox(
    "Run",
    list(by_id),
    format_func=lambda r: f"{run_admin.display_name(by_id[r])}  ({by_id[r]['state']})",
    key="runs_run",
)
run = by_id[run_id]
run_dir = runs_dir() / run_id
name = run_admin.display_name(run)
active = run["state"] in runs.ACTIVE_STATES


def done(text: str) -> None:
    st.session_state[MESSAGE] = text
    st.rerun()


rename_column, notes_column = st.columns(2)
with rename_column:
    new_name = st.text_input("Name", name, key=f"runs_name_{run_id}", max_chars=80)
    if st.button("Rename", key="runs_rename", icon=":material/edit:"):
        try:
            saved = run_admin.set_name(run_dir, new_name)
        except UserError as error:
            st.error(plain(error))
        else:
            done(f"Renamed {name} to {saved}.")
with notes_column:
    notes = st.text_area("Notes", run_notes(run), key=f"runs_notes_{run_id}", height=100)
    if st.button("Save notes", key="runs_save_notes", icon=":material/save:"):
        try:
            run_admin.set_notes(run_dir, notes)
        except UserError as error:
            st.error(plain(error))
        else:
            done(f"Saved the notes of {name}.")

st.subheader("Continue training")
epochs_column, continue_column = st.columns([1, 2], vertical_alignment="bottom")
more_epochs = epochs_column.number_input(
    "More epochs", min_value=1, max_value=1000, value=5, key="runs_more_epochs"
)
if continue_column.button(
    "Continue this run",
    key="runs_continue",
    icon=":material/fast_forward:",
    disabled=active,
    help="Trains on from the run's last checkpoint in the same folder; its history grows.",
):
    try:
        resumed = run_admin.resume_run(run_dir, int(more_epochs), runs_dir())
    except UserError as error:
        st.error(plain(error))
    else:
        st.session_state[TRAIN_RUN] = resumed.name
        st.success(f"{plain(name)} trains {int(more_epochs)} more epochs.")
        data_views.page_link(
            "pages/train.py", "Watch it on the Train page", ":material/play_arrow:"
        )

st.subheader("Delete")
if active:
    st.caption(f"{plain(name)} is {run['state']}: cancel it on the Train page before deleting it.")
if st.button("Delete this run", key="runs_delete", icon=":material/delete:", disabled=active):
    st.session_state[CONFIRM_DELETE] = run_id
if st.session_state.get(CONFIRM_DELETE) == run_id and not active:
    st.warning(f"Delete {plain(name)} and every file in its folder? This cannot be undone.")
    yes_column, no_column = st.columns(2)
    if yes_column.button("Yes, delete it", key="runs_delete_confirm", type="primary"):
        st.session_state.pop(CONFIRM_DELETE)
        try:
            run_admin.delete_run(run_dir)
        except UserError as error:
            st.error(plain(error))
        else:
            done(f"Deleted {name}.")
    if no_column.button("Keep it", key="runs_delete_cancel"):
        st.session_state.pop(CONFIRM_DELETE)
        st.rerun()
