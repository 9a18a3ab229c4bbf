"""The dashboard's glue: session state, cached engine calls and Plotly figures (imports streamlit)."""
