"""The dashboard serves only this machine's host names, and dataset text never renders as Markdown.

Browser checks of the same claims (a rebinding name gets no app, no request leaves the machine)
are in test_browser.py; the server helper here is shared with it.
"""

from __future__ import annotations

import contextlib
import csv
import io
import os
import re
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from ui import server
from ui.text import csv_text, plain

PROJECT = Path(__file__).resolve().parent.parent
IMAGE_LINK = "![i](https:example.invalid)"  # a folder name cannot hold "/"; this still fetches
BOLD = "**b**"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextlib.contextmanager
def streamlit_server(runs_dir: Path, cache_dir: Path, log_file: Path, offline: bool = True):
    """`streamlit run app.py` on a free localhost port; yields its URL once it answers."""
    port = free_port()
    env = {**os.environ, "STUDIO_RUNS_DIR": str(runs_dir), "STUDIO_CACHE_DIR": str(cache_dir)}
    # Never the user's own settings file: a module-wide server starts before the per-test
    # fixture has set one.
    env.setdefault("STUDIO_SETTINGS_FILE", str(Path(log_file).with_name("settings.json")))
    if offline:
        env["STUDIO_OFFLINE"] = "1"
    command = [sys.executable, "-m", "streamlit", "run", "app.py", "--server.port", str(port)]
    command += ["--server.headless", "true", "--server.address", "127.0.0.1"]
    with open(log_file, "wb") as log:
        process = subprocess.Popen(
            command, cwd=PROJECT, env=env, stdout=log, stderr=subprocess.STDOUT
        )
        try:
            url = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 60
            while True:
                try:
                    if urllib.request.urlopen(f"{url}/_stcore/health", timeout=2).status == 200:
                        break
                except OSError:
                    if time.monotonic() > deadline or process.poll() is not None:
                        raise RuntimeError(
                            f"streamlit did not start within 60 s; see {log_file}"
                        ) from None
                    time.sleep(0.5)
            yield url
        finally:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()


# ----- the Host allow-list ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "header, name",
    [
        ("localhost:8501", "localhost"),
        ("LOCALHOST.", "localhost"),
        ("127.0.0.1", "127.0.0.1"),
        ("[::1]:8501", "::1"),
        ("rebind.example:8501", "rebind.example"),
        ("localhost:notaport", None),
        ("user@localhost", None),
        ("localhost/path", None),
        ("", None),
        (None, None),
    ],
)
def test_host_name_reads_the_name_out_of_a_host_header(header, name):
    assert server.host_name(header) == name


def test_only_the_allowed_names_pass():
    loopback = list(server.LOOPBACK)
    for header in ("localhost:8501", "127.0.0.1:8501", "[::1]:8501", "localhost"):
        assert server.is_allowed(header, loopback), header
    for header in (
        "rebind.example:8501",
        "localhost.rebind.example",
        "127.0.0.1.nip.io",
        "[::2]:8501",
        "",
        None,
    ):
        assert not server.is_allowed(header, loopback), header
    assert server.is_allowed("box.lan:8501", [*loopback, "box.lan"])
    assert server.is_allowed("a.studio.test", ["*.studio.test"])
    assert not server.is_allowed("studio.test.evil", ["*.studio.test"])
    assert server.is_allowed("anything:1", ["*"])


def test_allowed_hosts_come_from_streamlit_config(monkeypatch):
    options = {"server.allowedHosts": ["localhost", " Box.LAN. "]}
    monkeypatch.setattr(server.st, "get_option", options.get)
    assert server.allowed_hosts() == ["localhost", "box.lan"]
    options["server.allowedHosts"] = []  # Streamlit's default means any host; here, loopback
    assert server.allowed_hosts() == ["localhost", "127.0.0.1", "::1"]


def test_config_lists_loopback_and_hides_error_details():
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    config = tomllib.loads((PROJECT / ".streamlit" / "config.toml").read_text())
    assert config["server"]["allowedHosts"] == ["localhost", "127.0.0.1", "::1"]
    assert config["client"]["showErrorDetails"] in ("type", "none")


def get_status(url: str, host: str) -> int:
    request = urllib.request.Request(url, headers={"Host": host})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


def websocket_status(port: int, host: str) -> int:
    """The status line's code of a websocket handshake on the app's stream."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as connection:
        connection.sendall(
            (
                "GET /_stcore/stream HTTP/1.1\r\n"
                f"Host: {host}\r\n"
                "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: streamlit\r\n\r\n"
            ).encode()
        )
        status_line = connection.recv(4096).split(b"\r\n")[0].decode()
    return int(status_line.split()[1])


@pytest.mark.slow
def test_the_server_answers_only_to_this_machines_names(tmp_path):
    with streamlit_server(tmp_path / "runs", tmp_path / "cache", tmp_path / "log.txt") as url:
        port = int(url.rsplit(":", 1)[1])
        for host in (f"localhost:{port}", f"127.0.0.1:{port}", f"[::1]:{port}"):
            assert get_status(f"{url}/", host) == 200, host
            assert get_status(f"{url}/_stcore/health", host) == 200, host
            assert websocket_status(port, host) == 101, host
        for host in (f"rebind.example:{port}", f"localhost.rebind.example:{port}", ""):
            assert get_status(f"{url}/", host) == 403, host
            assert get_status(f"{url}/_stcore/health", host) == 403, host
            assert get_status(f"{url}/train", host) == 403, host
            assert websocket_status(port, host) == 403, host


# ----- dataset text is shown literally ---------------------------------------------------------


def test_plain_escapes_what_markdown_would_render():
    assert plain(IMAGE_LINK) == r"\!\[i\](https\:example.invalid)"
    assert plain(BOLD) == r"\*\*b\*\*"
    assert plain(":red[x] $x$ <b> &lt; `c` a_b ~s~ | #") == (
        r"\:red\[x\] \$x\$ \<b\> \&lt; \`c\` a\_b \~s\~ \| \#"
    )
    assert plain("1. first\n- second") == r"1\. first - second"  # one line: no list
    assert plain("- a") == r"\- a"
    # Ordinary sentences and names stay as they are.
    for text in ("Uploaded pairs.npz", "Class 'fox' has no images: see below.", "cat"):
        assert plain(text) == text


UNESCAPED = re.compile(r"(?<!\\)[!*\[\]]")


def markdown_texts(at: AppTest) -> list[str]:
    """Every text the page hands to Streamlit's Markdown renderer."""
    elements = [*at.markdown, *at.caption, *at.header, *at.subheader, *at.info, *at.warning]
    elements += [*at.error, *at.success]
    texts = [element.value for element in elements]
    texts += [caption for image in at.image for caption in image.captions]
    return texts


def test_data_page_shows_class_names_literally(tmp_path):
    from conftest import write_class_folder  # conftest sets test-only environment defaults

    root = write_class_folder(tmp_path / "hostile", classes=(IMAGE_LINK,), per_class=12)
    write_class_folder(root, classes=(BOLD,), per_class=4)  # imbalanced: the warning names both
    at = AppTest.from_file(str(PROJECT / "pages" / "data.py"), default_timeout=60).run()
    at.radio(key="data_source").set_value("Folder on this machine").run()
    at.text_input(key="data_folder").input(str(root)).run()
    at.button(key="data_load").click().run()
    assert not at.exception

    captions = {caption.split(" · ")[0] for image in at.image for caption in image.captions}
    assert captions == {plain(IMAGE_LINK), plain(BOLD)}
    [warning] = [warning.value for warning in at.warning]
    assert plain(IMAGE_LINK) in warning and plain(BOLD) in warning
    texts = markdown_texts(at)
    assert not [text for text in texts if UNESCAPED.search(text)], texts
    # A selectbox option is plain text already: it shows the name as it is.
    [class_box] = [box for box in at.selectbox if box.label == "Class"]
    assert IMAGE_LINK in class_box.options


def test_augment_page_shows_sample_names_literally(tmp_path):
    from conftest import write_class_folder  # conftest sets test-only environment defaults

    root = write_class_folder(tmp_path / "hostile", classes=(BOLD, IMAGE_LINK), per_class=8)
    at = AppTest.from_file(str(PROJECT / "pages" / "augment.py"), default_timeout=60)
    at.session_state["data_config"] = {"spec": str(root)}
    at.run()
    assert not at.exception
    headings = [markdown.value for markdown in at.markdown if " · " in markdown.value]
    assert len(headings) == 3
    for heading in headings:
        name = heading.split(" · ")[1]
        assert heading in (f"**{plain(BOLD)}** · {name}", f"**{plain(IMAGE_LINK)}** · {name}")
        assert not UNESCAPED.search(name), name


# ----- downloads -------------------------------------------------------------------------------


def test_csv_download_cells_cannot_run_as_formulas():
    table = pd.DataFrame(
        {
            "file": ['=HYPERLINK("https://x")', "+1", "-1", "@SUM(A1)", "\tx", "\rx", "ok.png"],
            "top-1 label": ["cat", "=1+1", "dog", "cat", "dog", "cat", "-x"],
            "probability": [0.5, -0.25, 1.0, 0.0, 0.75, 0.125, 0.5],
        }
    )
    rows = list(csv.reader(io.StringIO(csv_text(table), newline="")))
    assert rows[0] == ["file", "top-1 label", "probability"]
    assert [row[0] for row in rows[1:]] == [
        '\'=HYPERLINK("https://x")',
        "'+1",
        "'-1",
        "'@SUM(A1)",
        "'\tx",
        "'\rx",
        "ok.png",
    ]
    assert [row[1] for row in rows[1:]] == ["cat", "'=1+1", "dog", "cat", "dog", "cat", "'-x"]
    # Numbers stay numbers: a negative probability is not text a spreadsheet would run.
    assert [float(row[2]) for row in rows[1:]] == list(table["probability"])


# ----- Plotly figures ---------------------------------------------------------------------------

LINK = '<a href="https:example.invalid">x</a> & <b>'


def test_figures_show_names_as_text_not_plotly_html():
    """Plotly renders <a>, <b> and <br> in labels; a name from a dataset or run folder is shown as
    the text it is, and a clicked confusion-matrix cell gives the class name back."""
    import html

    from ui import figures
    from ui.run_views import selectable_confusion_heatmap

    escaped = '&lt;a href="https:example.invalid"&gt;x&lt;/a&gt; &amp; &lt;b&gt;'
    assert figures.plot_text(LINK) == escaped
    assert list(figures.class_counts_bar({"train": {LINK: 3, "cat": 2}}).data[0].x) == [
        escaped,
        "cat",
    ]
    heatmap = figures.confusion_heatmap([[1, 0], [2, 3]], [LINK, "cat"]).data[0]
    assert list(heatmap.x) == list(heatmap.y) == [escaped, "cat"]
    [bar] = figures.probability_bars([{"label": LINK, "probability": 0.9}]).data
    assert list(bar.y) == [escaped]
    [run_bars] = figures.per_class_bars({"run": {LINK: 0.5}}, labels={"run": LINK}).data
    assert list(run_bars.x) == [escaped] and run_bars.name == escaped
    curves = figures.training_curves(
        [("a", [{"epoch": 1, "loss": 1.0}], []), ("b", [{"epoch": 1, "loss": 0.5}], [])],
        labels={"a": LINK, "b": "b"},
    )
    assert escaped in {trace.name for trace in curves.data}
    assert LINK not in {trace.name for trace in curves.data}
    cells = selectable_confusion_heatmap([[1, 0], [2, 3]], [LINK, "cat"], False).data[1]
    assert {html.unescape(name) for name in cells.x} == {LINK, "cat"}
