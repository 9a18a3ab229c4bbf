"""Train: choose a model and hyperparameters, start a run in its own process, watch it live."""

from __future__ import annotations

import streamlit as st

from engine import runs
from engine.config import ModelConfig, TrainConfig
from engine.errors import UserError
from ui import figures, services
from ui.state import TRAIN_RUN, data_config, default_run_config, init_state, runs_dir

init_state()
st.title("Train")
data = data_config()
st.caption(
    f"Dataset: **{data.spec}** (change it on the Data page). Augmentation settings come from the Augment page."
)

catalog = services.model_catalog()
names = [model["name"] for model in catalog]
describe = {model["name"]: model for model in catalog}
defaults_model, defaults_train = ModelConfig(), TrainConfig()

with st.expander("Model and hyperparameters", expanded=not st.session_state.get(TRAIN_RUN)):
    left, right = st.columns(2)
    with left:
        name = st.selectbox(
            "Model",
            names,
            index=names.index(defaults_model.name),
            key="train_model",
            format_func=lambda n: f"{n} ({describe[n]['family']})",
        )
        st.caption(describe[name]["description"])
        model_fields: dict = {"name": name}
        if describe[name]["family"] == "configurable" and name == "custom_cnn":
            model_fields["blocks"] = st.slider(
                "Convolution blocks", 1, 5, defaults_model.blocks, key="train_blocks"
            )
            model_fields["filters"] = st.select_slider(
                "Filters in the first block",
                [8, 16, 32, 64],
                defaults_model.filters,
                key="train_filters",
            )
            model_fields["kernel_size"] = st.select_slider(
                "Kernel size", [3, 5, 7], defaults_model.kernel_size, key="train_kernel"
            )
            model_fields["batch_norm"] = st.checkbox(
                "Batch normalisation", defaults_model.batch_norm, key="train_batch_norm"
            )
            model_fields["dropout"] = st.slider(
                "Dropout", 0.0, 0.7, defaults_model.dropout, 0.05, key="train_dropout"
            )
            model_fields["dense_units"] = st.select_slider(
                "Dense units", [0, 64, 128, 256, 512], defaults_model.dense_units, key="train_dense"
            )
            model_fields["pooling"] = st.radio(
                "Head", ["global_average", "flatten"], key="train_pooling", horizontal=True
            )
        if describe[name]["family"] == "transfer":
            weights = st.radio(
                "Weights",
                ["imagenet", "none", "local file"],
                key="train_weights",
                horizontal=True,
                help="ImageNet weights are downloaded once by Keras and need the internet the first time.",
            )
            model_fields["weights"] = (
                st.text_input("Weights file", key="train_weights_file")
                if weights == "local file"
                else weights
            )
            model_fields["mode"] = st.radio(
                "Mode",
                ["feature_extraction", "fine_tuning", "two_phase"],
                key="train_mode",
                format_func=lambda m: m.replace("_", " "),
                horizontal=True,
            )
            if model_fields["mode"] != "feature_extraction":
                model_fields["fine_tune_layers"] = st.number_input(
                    "Unfreeze the top N layers of the base",
                    1,
                    500,
                    defaults_model.fine_tune_layers,
                    key="train_unfreeze",
                )
                model_fields["fine_tune_from"] = st.text_input(
                    "...or unfreeze from this layer (e.g. block5_conv3)", key="train_unfreeze_from"
                )
                model_fields["fine_tune_learning_rate_factor"] = st.select_slider(
                    "Fine-tuning learning rate factor",
                    [0.01, 0.03, 0.1, 0.3, 1.0],
                    0.1,
                    key="train_ft_factor",
                )
            if model_fields["mode"] == "two_phase":
                model_fields["head_epochs"] = st.number_input(
                    "Epochs for the head first (0 = half)", 0, 500, 0, key="train_head_epochs"
                )
    with right:
        train_fields = {
            "epochs": st.number_input("Epochs", 1, 1000, defaults_train.epochs, key="train_epochs"),
            "batch_size": st.select_slider(
                "Batch size",
                [8, 16, 32, 64, 128, 256],
                defaults_train.batch_size,
                key="train_batch_size",
            ),
            "learning_rate": st.select_slider(
                "Learning rate",
                [1e-5, 3e-5, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2],
                defaults_train.learning_rate,
                key="train_learning_rate",
            ),
            "optimizer": st.selectbox(
                "Optimizer", ["adam", "adamw", "sgd", "rmsprop"], key="train_optimizer"
            ),
            "schedule": st.selectbox(
                "Learning-rate schedule", ["constant", "cosine", "plateau"], key="train_schedule"
            ),
            "early_stopping_patience": st.number_input(
                "Early stopping patience (0 = off)",
                0,
                100,
                defaults_train.early_stopping_patience,
                key="train_patience",
            ),
            "label_smoothing": st.slider(
                "Label smoothing", 0.0, 0.3, 0.0, 0.05, key="train_label_smoothing"
            ),
            "class_weights": st.checkbox(
                "Weight classes by inverse frequency", key="train_class_weights"
            ),
            "mixed_precision": st.checkbox(
                "Mixed precision (GPU only)", key="train_mixed_precision"
            ),
            "seed": st.number_input("Seed", 0, 2**31 - 1, defaults_train.seed, key="train_seed"),
        }

if st.button("Start training", type="primary", key="train_start", icon=":material/play_arrow:"):
    try:
        config = default_run_config().replace(model=model_fields, train=train_fields)
        run_dir = runs.launch_run(config, runs_dir())
        st.session_state[TRAIN_RUN] = run_dir.name
        st.toast(f"Started {run_dir.name}")
    except UserError as error:
        st.error(str(error))

all_runs = services.list_runs(runs_dir())
if not all_runs:
    st.info("No runs yet: choose a model and press Start training.")
    st.stop()

# Coming back (a reload, a new tab) shows the run that is training, or the newest one.
active = [run["run_id"] for run in all_runs if run["state"] in runs.ACTIVE_STATES]
run_ids = [run["run_id"] for run in all_runs]
chosen = st.session_state.get(TRAIN_RUN)
if chosen not in run_ids:
    chosen = active[-1] if active else run_ids[0]
states = {run["run_id"]: run["state"] for run in all_runs}
watched = st.selectbox(
    "Run",
    run_ids,
    index=run_ids.index(chosen),
    key="train_watch",
    format_func=lambda r: f"{r}  ({states[r]})",
)
st.session_state[TRAIN_RUN] = watched
if len(active) > 1:
    st.caption(f"{len(active)} runs are training or waiting; they train one after another.")
run_dir = runs_dir() / watched


@st.fragment(run_every=1.0 if states[watched] in runs.ACTIVE_STATES else None)
def live_view() -> None:
    status = runs.read_status(run_dir)
    state = status.get("state")
    epochs, steps = runs.read_history(run_dir)
    total_epochs = status.get("epochs") or runs.load_config(run_dir).train.epochs
    columns = st.columns(5)
    columns[0].metric("State", state)
    columns[1].metric("Epoch", f"{status.get('epoch', 0)}/{total_epochs}")
    columns[2].metric("ETA", _duration(status.get("eta_seconds")) if state == "running" else "-")
    columns[3].metric("Images/s", f"{status.get('images_per_second') or 0:,.0f}")
    columns[4].metric("Device", status.get("device", "-"))
    if state == "running":
        done, total = status.get("global_step", 0), status.get("total_steps") or 1
        st.progress(
            min(done / total, 1.0), text=f"{status.get('phase', '')}: step {done:,} of {total:,}"
        )
    elif state == "queued":
        st.info("Waiting for the run before it to finish.")
    elif state == "failed":
        st.error(status.get("error", "The run failed."))
    elif state == "cancelled":
        st.warning(
            f"Cancelled after {status.get('epochs_done', len(epochs))} epochs; the best model so far is kept."
        )
    elif state == "completed":
        evaluation = services.evaluation(run_dir) or {}
        accuracy = evaluation.get("accuracy")
        st.success(
            f"Completed: best epoch {status.get('best_epoch')}, test accuracy {accuracy:.4f}."
            if accuracy is not None
            else "Completed."
        )
    if state in runs.ACTIVE_STATES and st.button(
        "Cancel run", key="train_cancel", icon=":material/stop:"
    ):
        runs.request_cancel(run_dir)
        st.toast("Cancel requested: the run stops at its next batch.")
    if epochs or steps:
        per_epoch = {watched: status.get("steps_per_epoch") or 1}
        st.plotly_chart(
            figures.training_curves([(watched, epochs, steps)], per_epoch), key="train_curves"
        )
    elif state in runs.ACTIVE_STATES:
        st.caption(status.get("phase", "starting..."))
    if state not in runs.ACTIVE_STATES and states[watched] in runs.ACTIVE_STATES:
        st.rerun()  # the run ended: stop polling and show the final view


def _duration(seconds) -> str:
    if seconds is None:
        return "-"
    minutes, seconds = divmod(int(seconds), 60)
    return f"{minutes}m {seconds:02d}s" if minutes else f"{seconds}s"


live_view()
