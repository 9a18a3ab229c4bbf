"""Train: choose a model and hyperparameters, start a run in its own process, watch it live."""

from __future__ import annotations

import shlex
import time

import streamlit as st

from engine import run_admin, runs
from engine.errors import UserError
from ui import figures, run_services, services, train_form
from ui.run_views import evaluation_accuracy_text
from ui.state import (
    LAUNCH_ERROR,
    LAUNCHING,
    TRAIN_RUN,
    data_config,
    default_run_config,
    forget_last_launch,
    init_state,
    launch_once,
    repeated_launch,
    request_launch,
    runs_dir,
    set_train_overrides,
    train_overrides,
)
from ui.text import plain

init_state()
# A Start click is handled by this run alone, or by none: a click is never carried over to a
# later visit (an error may stop this run before Start is drawn).
launch_requested = bool(st.session_state.pop(LAUNCHING, False))
st.title("Train")
data = data_config()
train_form.apply_pending_learning_rate()
try:
    recipe = services.recipe(data)
    summary = services.dataset_summary(data)
except UserError as error:
    st.error(f"{plain(error)} Change the dataset on the Data page.")
    st.stop()
st.caption(
    "Dataset and image size are chosen on the Data page, augmentation on the Augment page; "
    "the values below start from the recipe the engine chose for this dataset."
)

with st.expander("Model and hyperparameters", expanded=not st.session_state.get(TRAIN_RUN)):
    model_fields, train_fields = train_form.training_form(
        recipe, services.model_catalog(), train_overrides()
    )
    set_train_overrides(recipe, model_fields, train_fields)
    finder, finder_note = st.columns([1, 3])
    if finder.button("Find a learning rate", key="train_lr_find", icon=":material/query_stats:"):
        bar = finder_note.progress(0.0, text="Trying learning rates...")
        try:
            candidate = default_run_config().replace(
                data={"image_size": recipe["config"].get("data", {}).get("image_size", 0)}
                if not data.image_size
                else {},
                model=model_fields,
                train={**train_fields, "epochs": max(1, train_fields.get("epochs") or 1)},
            )
            result = services.lr_find(
                candidate,
                progress=lambda done, total: bar.progress(
                    done / max(total, 1), text=f"Trying learning rates: step {done} of {total}"
                ),
            )
            st.session_state[train_form.LR_FIND_RESULT] = result
            st.session_state[train_form.LR_PENDING] = result["suggested_learning_rate"]
            st.rerun()
        except UserError as error:
            bar.empty()
            st.error(plain(error))
    found = st.session_state.get(train_form.LR_FIND_RESULT)
    if found:
        st.plotly_chart(figures.lr_find_figure(found), key="train_lr_curve")
        st.caption(
            f"Suggested learning rate {found['suggested_learning_rate']:.1e} (the middle of the "
            "longest descent of the smoothed training loss, as fastai's lr_find), put into the "
            "learning-rate box."
        )

try:
    image_size = data.image_size or recipe["config"].get("data", {}).get("image_size", 0)
    config = default_run_config().replace(
        data={"image_size": image_size}, model=model_fields, train=train_fields
    )
    services.check_config(config)
    config_error = None
except UserError as error:
    config, config_error = None, str(error)

st.subheader("This run will use")
if config is not None:
    notes = services.recipe_notes(recipe, config)
    rows = train_form.run_summary(config, summary, notes + services.transfer_notes(config.model))
    # st.table renders Markdown in its cells, and the dataset's path is one of them.
    st.table({"setting": [row[0] for row in rows], "value": [plain(row[1]) for row in rows]})
else:
    st.error(plain(config_error))

# Start's on_click only asks for a launch (request_launch). This run then draws Start disabled
# (a second click of a double click finds it so), starts the run with the form as it reads now (a
# value changed in the same interaction as the click counts), and draws Start again in its place
# before the run box below, which watches the new run at once. A second click that reached the
# server before Start was disabled is a repeated launch: nothing to start, nothing to disable.
start_slot = st.empty()
if launch_requested and not repeated_launch(config):
    start_slot.button(
        "Start training",
        type="primary",
        key="train_start_busy",
        icon=":material/hourglass_top:",
        disabled=True,
    )
    # Streamlit merges two drawings of one place that wait in its send queue together: a short
    # pause lets the disabled Start reach the browser before the enabled one replaces it. (No
    # spinner: an element more here would move every element below to a new place, and the
    # browser keeps each old one, faded, beside its replacement until this run ends.)
    time.sleep(0.15)
    launch_once(config)
start_slot.button(
    "Start training",
    type="primary",
    key="train_start",
    icon=":material/play_arrow:",
    disabled=config is None,
    on_click=request_launch,
)
if st.session_state.get(LAUNCH_ERROR):
    st.error(plain(st.session_state.pop(LAUNCH_ERROR)))

all_runs = run_services.list_runs(runs_dir())
if not all_runs:
    st.info("No runs yet: choose a model and press Start training.")
    st.stop()

# Coming back (a reload, a new tab) shows the run that is training, or the newest one.
active = [run["run_id"] for run in all_runs if run["state"] in runs.ACTIVE_STATES]
run_ids = [run["run_id"] for run in all_runs]
chosen = st.session_state.get(TRAIN_RUN)
if chosen not in run_ids:
    chosen = active[-1] if active else run_ids[0]
# TRAIN_RUN is the truth (Start and the Runs page set it); the box follows it on every rerun.
st.session_state[TRAIN_RUN] = st.session_state["train_watch"] = chosen
states = {run["run_id"]: run["state"] for run in all_runs}  # read afresh on every rerun
names = {run["run_id"]: run_admin.display_name(run) for run in all_runs}
watched = st.selectbox(
    "Run",
    run_ids,
    key="train_watch",
    format_func=lambda r: f"{names[r]}  ({states[r]})",
    on_change=lambda: st.session_state.update({TRAIN_RUN: st.session_state["train_watch"]}),
)
if len(active) > 1:
    st.caption(f"{len(active)} runs are training or waiting; they train one after another.")
run_dir = runs_dir() / watched
with st.expander("TensorBoard"):
    st.caption(
        f"This run's TensorBoard logs are in {plain(run_dir / 'tensorboard')}. To see every "
        "run's logs side by side, run this in a terminal and open the address it prints:"
    )
    st.code(f"tensorboard --logdir {shlex.quote(str(runs_dir()))}", language="bash")


@st.fragment(run_every=1.0 if states[watched] in runs.ACTIVE_STATES else None)
def live_view() -> None:
    run = runs.describe_run(run_dir)  # status.json, and which of the run's files are damaged
    status = run["status"]
    state = status.get("state")
    epochs, steps = runs.read_history(run_dir)
    total_epochs = status.get("epochs") or _configured_epochs()
    columns = st.columns(5)
    columns[0].metric("State", state)
    columns[1].metric("Epoch", f"{status.get('epoch', 0)}/{total_epochs}")
    columns[2].metric("ETA", _duration(status.get("eta_seconds")) if state == "running" else "-")
    columns[3].metric("Images/s", f"{status.get('images_per_second') or 0:,.0f}")
    columns[4].metric("Device", plain(status.get("device", "-")))
    # The state's lines sit in one container, so the curves below keep their place whatever the
    # lines are (Streamlit shows an element that moved beside its faded old self for a while).
    with st.container():
        if state == "running":
            done, total = status.get("global_step", 0), status.get("total_steps") or 1
            st.progress(
                min(done / total, 1.0),
                text=f"{plain(status.get('phase', ''))}: step {done:,} of {total:,}",
            )
        elif state == "queued" and any(other != watched for other in active):
            st.info("Waiting for the run before it to finish.")
        elif state == "queued":
            st.info("Starting the training process...")
        elif state == "failed":
            st.error(plain(status.get("error", "The run failed.")))
        elif state == "cancelled":
            st.warning(
                plain(status["message"])
                if status.get("message")
                else f"Cancelled after {status.get('epochs_done', len(epochs))} epochs; the best "
                "model so far is kept."
            )
        elif state == "completed":
            evaluation = run_services.evaluation(run_dir) or {}
            chosen_by = (
                f"best epoch {status.get('best_epoch')} by validation accuracy"
                if status.get("model_selection", True) and status.get("best_epoch")
                else "the last epoch's weights (no validation split chose them)"
            )
            st.success(
                f"Completed: {chosen_by}; {evaluation_accuracy_text(evaluation)}."
                if evaluation.get("accuracy") is not None
                else "Completed."
            )
        if run["damaged"] and not status.get("damaged"):  # a failed run said it above
            st.warning(f"Part of run {plain(names[watched])} is damaged: {plain(run['damaged'])}.")
        if state in runs.ACTIVE_STATES and st.button(
            "Cancel run", key="train_cancel", icon=":material/stop:"
        ):
            runs.request_cancel(run_dir)
            forget_last_launch()  # Start with the same settings is meant now, no double click
            st.toast("Cancel requested: the run stops at its next batch.")
    if epochs or steps or state in runs.ACTIVE_STATES:
        # An active run's axes show from its first second and fill in as its history grows.
        per_epoch = {watched: status.get("steps_per_epoch") or 1}
        curves = figures.training_curves(
            [(watched, epochs, steps)], per_epoch, labels={watched: names[watched]}
        )
        if not (epochs or steps):  # axes for the whole run, not Plotly's -1..6 of no data
            length = total_epochs if isinstance(total_epochs, int) and total_epochs > 0 else 1
            curves.update_xaxes(range=[0, length])
            curves.update_yaxes(range=[0, 1])
        st.plotly_chart(curves, key="train_curves")
    # A state change of the watched run or another active one (queued -> running -> completed)
    # reruns the page, so the run box's labels and the polling follow it.
    if state != states[watched] or any(
        runs.read_status(runs_dir() / other).get("state") != states[other]
        for other in active
        if other != watched
    ):
        st.rerun()


def _configured_epochs() -> int | str:
    """The epochs config.json asks for; "?" when it cannot be read (the run shows as damaged)."""
    try:
        return runs.load_config(run_dir).train.epochs
    except UserError:
        return "?"


def _duration(seconds) -> str:
    if seconds is None:
        return "-"
    minutes, seconds = divmod(int(seconds), 60)
    return f"{minutes}m {seconds:02d}s" if minutes else f"{seconds}s"


live_view()
