"""Image Classification Studio: the router. Each page is a script in pages/."""

import streamlit as st

st.set_page_config(
    page_title="Image Classification Studio", page_icon=":material/image_search:", layout="wide"
)

st.title("Image Classification Studio")
st.write(
    "The dashboard is being built. Meanwhile, the engine runs from the command line: `python -m engine --help`."
)
