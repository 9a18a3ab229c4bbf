"""Image Classification Studio: the router. Each page is a script in pages/."""

import streamlit as st

from ui.services import warm_up
from ui.state import init_state

st.set_page_config(
    page_title="Image Classification Studio", page_icon=":material/image_search:", layout="wide"
)
init_state()
warm_up()

PAGES = [
    st.Page("pages/home.py", title="Home", icon=":material/home:", default=True),
    st.Page("pages/data.py", title="Data", icon=":material/photo_library:"),
    st.Page("pages/augment.py", title="Augment", icon=":material/auto_fix_high:"),
    st.Page("pages/train.py", title="Train", icon=":material/model_training:"),
    st.Page("pages/evaluate.py", title="Evaluate", icon=":material/fact_check:"),
    st.Page("pages/compare.py", title="Compare", icon=":material/compare:"),
    st.Page("pages/predict.py", title="Predict", icon=":material/center_focus_strong:"),
]
st.navigation(PAGES).run()
