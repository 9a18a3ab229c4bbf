"""Text from datasets, runs and errors made safe to show: literal in Markdown, inert in spreadsheets.

Class, file, folder and run names come from the user's files, and Streamlit renders Markdown in
st.markdown, st.write, captions, alerts, toasts, headers, metric values, st.table cells and
st.image captions. A folder named ![i](https://host/x.png) would make the browser fetch that URL,
and **b** would show in bold. Every such text goes through plain() on its way to one of those.
"""

from __future__ import annotations

import re

import pandas as pd

# CommonMark reads a backslash before punctuation as the character itself. Escaped: emphasis,
# code, links and images, HTML and entities, tables, strikethrough, math ($), and the colon that
# opens Streamlit's directives (:red[...], :smile:). Ordinary punctuation stays as it is, so a
# sentence such as "Class 'fox' has no images: ..." reads the same in the page's source.
_SPECIAL = re.compile(r"([\\`*_\[\]<>~$|#!&{}]|:(?=\w))")
_LIST_START = re.compile(r"^(\d+)([.)])|^([-+=])")  # "1. x", "- x" would start a list
_LINE_BREAKS = re.compile(r"[\r\n\u2028\u2029\x0b\x0c\x1c-\x1e\x85]+")
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def plain(text: object) -> str:
    """`text` as Markdown that renders it literally, on one line."""
    escaped = _SPECIAL.sub(r"\\\1", _LINE_BREAKS.sub(" ", str(text)).strip())
    return _LIST_START.sub(lambda match: match.group(0)[:-1] + "\\" + match.group(0)[-1], escaped)


def spreadsheet_cell(value: object) -> object:
    """A CSV cell a spreadsheet will not run: text starting with = + - @ tab or CR gets a '."""
    if isinstance(value, str) and value.startswith(_FORMULA_STARTS):
        return "'" + value
    return value


def csv_text(table: pd.DataFrame) -> str:
    """The table as CSV for a download, its text cells and headers made inert (spreadsheet_cell)."""
    safe = table.map(spreadsheet_cell)
    safe.columns = [spreadsheet_cell(str(column)) for column in table.columns]
    # RFC 4180 line ends: Python's csv quotes a cell holding "\r" only when it is in them.
    return safe.to_csv(index=False, lineterminator="\r\n")
