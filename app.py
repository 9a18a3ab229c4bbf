"""Image Classification Studio: the router. Each page is a script in pages/.

`streamlit run app.py` first imports this file and serves `app` (st.App, Streamlit's public server
entry), which answers only requests whose Host header names this machine (ui/server.py). The server
then runs this same file for every page view as the script "__main__" ("__page__" when Streamlit's
legacy pages/ mode runs it, as AppTest does), and the router below builds the navigation.
"""

import streamlit as st

if __name__ in ("__main__", "__page__"):  # a page view: the router
    from ui.services import warm_up
    from ui.state import init_state, settings_controls

    st.set_page_config(page_title="Image Classification Studio", page_icon="🔍", layout="wide")
    init_state()  # restores the saved working setup once per session
    settings_controls()
    warm_up()
    PAGES = [
        st.Page("pages/home.py", title="Home", icon=":material/home:", default=True),
        st.Page("pages/data.py", title="Data", icon=":material/photo_library:"),
        st.Page("pages/collect.py", title="Collect", icon=":material/photo_camera:"),
        st.Page("pages/augment.py", title="Augment", icon=":material/auto_fix_high:"),
        st.Page("pages/train.py", title="Train", icon=":material/model_training:"),
        st.Page("pages/runs.py", title="Runs", icon=":material/list_alt:"),
        st.Page("pages/evaluate.py", title="Evaluate", icon=":material/fact_check:"),
        st.Page("pages/compare.py", title="Compare", icon=":material/compare:"),
        st.Page("pages/predict.py", title="Predict", icon=":material/center_focus_strong:"),
    ]
    st.navigation(PAGES).run()
else:  # imported by `streamlit run app.py` (or `uvicorn app:app`): the server
    from ui import server

    server.use_navigation_only()
    app = st.App(__file__, middleware=server.middleware())
