"""What app.py's server (st.App) adds to Streamlit's: a Host allow-list, and no legacy pages/ mode.

Binding to localhost does not stop DNS rebinding: a web page can point its own name at 127.0.0.1,
and its scripts then reach the dashboard as the same origin. The browser still sends that name in
the Host header, so every HTTP request and websocket whose Host is not allowed is refused here.
The allowed names are Streamlit's own `server.allowedHosts` option (.streamlit/config.toml lists
localhost, 127.0.0.1 and ::1), which Streamlit also checks for the app's websocket.
"""

from __future__ import annotations

from urllib.parse import urlsplit

import streamlit as st
from starlette.middleware import Middleware

LOOPBACK = ("localhost", "127.0.0.1", "::1")  # what an empty server.allowedHosts means here
REFUSAL = (
    b"Forbidden: this dashboard answers only on the host names in server.allowedHosts "
    b"(localhost, 127.0.0.1 and [::1] by default).\n"
)


def allowed_hosts() -> list[str]:
    """server.allowedHosts, or the loopback names when it is empty (to Streamlit: any host)."""
    configured = [
        str(host).strip().lower().rstrip(".") for host in st.get_option("server.allowedHosts") or []
    ]
    return [host for host in configured if host] or list(LOOPBACK)


def host_name(header: str | None) -> str | None:
    """The name in a Host header ("[::1]:8501" -> "::1"), or None for a malformed header."""
    if not header:
        return None
    try:
        parts = urlsplit(f"//{header}")
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number in range
    except ValueError:
        return None
    if not parts.hostname or parts.username or parts.password or parts.path or parts.query:
        return None
    return parts.hostname.lower().rstrip(".")


def is_allowed(header: str | None, patterns: list[str]) -> bool:
    """Whether a Host header names an allowed host: exact names, "*.example.com" or "*"."""
    name = host_name(header)
    if name is None:
        return False
    for pattern in patterns:
        if pattern == "*" or name == pattern:
            return True
        if pattern.startswith("*.") and name.endswith(pattern[1:]):
            return True
    return False


class AllowedHostsOnly:
    """ASGI middleware: 403 to HTTP requests and websockets whose Host is not allowed."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] in ("http", "websocket"):
            hosts = [value for name, value in scope.get("headers") or [] if name == b"host"]
            host = hosts[0].decode("latin-1") if len(hosts) == 1 else None
            if not is_allowed(host, allowed_hosts()):
                await _refuse(scope, send)
                return
        await self.app(scope, receive, send)


async def _refuse(scope, send) -> None:
    if scope["type"] == "websocket":  # closed before it is accepted: the handshake gets a 403
        await send({"type": "websocket.close", "code": 1008})
        return
    await send(
        {
            "type": "http.response.start",
            "status": 403,
            "headers": [
                (b"content-type", b"text/plain; charset=utf-8"),
                (b"content-length", str(len(REFUSAL)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": REFUSAL})


def middleware() -> list[Middleware]:
    """The middleware app.py's st.App runs before Streamlit's own."""
    return [Middleware(AllowedHostsOnly)]


def use_navigation_only() -> None:
    """Turn Streamlit's legacy pages/ mode off before any session starts.

    With pages/ beside app.py, Streamlit runs a deep link such as /train in that mode (the page
    alone, without app.py's router and layout) until some session has called st.navigation.
    Streamlit 1.67 has no public option for this, so this sets the flag st.navigation itself sets
    (streamlit/commands/navigation.py); tests/test_browser.py opens a deep link on a fresh server
    to catch a release that changes it.
    """
    try:
        from streamlit.runtime.pages_manager import PagesManager
    except ImportError:  # a release without it: the deep-link browser test says so
        return
    PagesManager.uses_pages_directory = False
