"""Train: choose a model and hyperparameters, start a run in its own process, watch it live."""

from __future__ import annotations

import shlex

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
    init_state,
    launch_once,
    runs_dir,
    set_train_overrides,
    train_overrides,
)
from ui.text import plain

init_state()
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
    notes = [
        note
        for note in recipe["notes"]
        if config.train.epochs == 0 or not note.startswith("epochs are fitted")
    ]
    rows = train_form.run_summary(config, summary, notes + services.transfer_notes(config.model))
    # st.table renders Markdown in its cells, and the dataset's path is one of them.
    st.table({"setting": [row[0] for row in rows], "value": [plain(row[1]) for row in rows]})
else:
    st.error(plain(config_error))

# The click is handled in this rerun, after the form has read every widget (a value changed in
# the same interaction as the click counts), and before the run box below is drawn, so the page
# watches the new run at once; launch_once ignores a second click of a double click.
if st.button(
    "Start training",
    type="primary",
    key="train_start",
    icon=":material/play_arrow:",
    disabled=config is None or bool(st.session_state.get(LAUNCHING)),
):
    launch_once(config)
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
    if state == "running":
        done, total = status.get("global_step", 0), status.get("total_steps") or 1
        st.progress(
            min(done / total, 1.0),
            text=f"{plain(status.get('phase', ''))}: step {done:,} of {total:,}",
        )
    elif state == "queued":
        st.info("Waiting for the run before it to finish.")
    elif state == "failed":
        st.error(plain(status.get("error", "The run failed.")))
    elif state == "cancelled":
        st.warning(
            plain(status["message"])
            if status.get("message")
            else f"Cancelled after {status.get('epochs_done', len(epochs))} epochs; the best model "
            "so far is kept."
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
    if run["damaged"] and not status.get("damaged"):  # a result file; a failed run said it above
        st.warning(f"Part of run {plain(names[watched])} is damaged: {plain(run['damaged'])}.")
    if state in runs.ACTIVE_STATES and st.button(
        "Cancel run", key="train_cancel", icon=":material/stop:"
    ):
        runs.request_cancel(run_dir)
        st.toast("Cancel requested: the run stops at its next batch.")
    if epochs or steps:
        per_epoch = {watched: status.get("steps_per_epoch") or 1}
        st.plotly_chart(
            figures.training_curves(
                [(watched, epochs, steps)], per_epoch, labels={watched: names[watched]}
            ),
            key="train_curves",
        )
    elif state in runs.ACTIVE_STATES:
        st.caption(plain(status.get("phase", "starting...")))
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
