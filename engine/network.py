"""A quick, cached check of whether Keras weights and tfds data can be downloaded."""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time

# Keras application weights and tfds data are both served from here.
HOST = "storage.googleapis.com"
PORT = 443
CACHE_SECONDS = 60.0
OFFLINE_VARIABLE = "STUDIO_OFFLINE"  # "1" forces offline, without touching the network

_lock = threading.Lock()
_cached_answer: tuple[float, bool] | None = None  # (time.monotonic() of the check, answer)


def forced_offline() -> bool:
    """True when the environment variable STUDIO_OFFLINE asks to act as if offline."""
    return os.environ.get(OFFLINE_VARIABLE, "").strip().lower() in {"1", "true", "yes", "on"}


def is_online(timeout: float = 3.0) -> bool:
    """True when a TCP connection to storage.googleapis.com:443 opens within `timeout` seconds.

    The timeout covers DNS resolution too. The answer is cached for 60 seconds in this process.
    """
    global _cached_answer
    if forced_offline():
        return False
    with _lock:
        if _cached_answer is not None and time.monotonic() - _cached_answer[0] < CACHE_SECONDS:
            return _cached_answer[1]
    answer = probe(HOST, PORT, timeout)
    with _lock:
        _cached_answer = (time.monotonic(), answer)
    return answer


def clear_cache() -> None:
    """Forget the cached answer, so the next is_online() checks again."""
    global _cached_answer
    with _lock:
        _cached_answer = None


def probe(host: str, port: int, timeout: float) -> bool:
    """Resolve `host` and open a TCP connection to it, all within `timeout` seconds."""
    deadline = time.monotonic() + timeout
    addresses = resolve(host, port, timeout)
    for family, socket_type, protocol, _, address in addresses:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        try:
            with socket.socket(family, socket_type, protocol) as connection:
                connection.settimeout(remaining)
                connection.connect(address)
                return True
        except OSError:
            continue
    return False


def resolve(host: str, port: int, timeout: float) -> list[tuple]:
    """socket.getaddrinfo in a daemon thread, because it ignores socket timeouts and can hang."""
    found: list[tuple] = []

    def look_up() -> None:
        with contextlib.suppress(OSError):
            found.extend(socket.getaddrinfo(host, port, type=socket.SOCK_STREAM))

    worker = threading.Thread(target=look_up, name="studio-dns", daemon=True)
    worker.start()
    worker.join(timeout)
    return [] if worker.is_alive() else list(found)
