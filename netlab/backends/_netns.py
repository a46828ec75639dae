"""Small helpers to act inside a network namespace from this process, without spawning one.

``setns(2)`` changes the namespace of the calling thread only, so each helper runs in a
short-lived thread: a socket keeps the namespace it was created in after the thread returns.
"""

from __future__ import annotations

import ctypes
import os
import socket
import threading
from collections.abc import Callable
from typing import TypeVar

CLONE_NEWNET = 0x40000000
NETNS_DIR = "/run/netns"
_libc = ctypes.CDLL(None, use_errno=True)
T = TypeVar("T")


def run_in_netns(ns: str, fn: Callable[[], T]) -> T:
    """Run ``fn`` in a thread that has joined network namespace ``ns``; return its result."""
    box: dict[str, object] = {}

    def target() -> None:
        try:
            fd = os.open(os.path.join(NETNS_DIR, ns), os.O_RDONLY)
            try:
                if _libc.setns(fd, CLONE_NEWNET) != 0:
                    err = ctypes.get_errno()
                    raise OSError(err, f"setns({ns}): {os.strerror(err)}")
            finally:
                os.close(fd)
            box["result"] = fn()
        except BaseException as exc:
            box["error"] = exc

    t = threading.Thread(target=target, name=f"netns-{ns}", daemon=True)
    t.start()
    t.join()
    if "error" in box:
        raise box["error"]  # type: ignore[misc]
    return box["result"]  # type: ignore[return-value]


def socket_in_netns(ns: str, family: int = socket.AF_INET, type: int = socket.SOCK_STREAM) -> socket.socket:
    return run_in_netns(ns, lambda: socket.socket(family, type))


def write_sysctl(ns: str, name: str, value: str) -> None:
    """Set a net.* sysctl inside ``ns`` (the /proc/sys/net view follows the opening thread)."""
    path = "/proc/sys/" + name.replace(".", "/")

    def write() -> None:
        with open(path, "w") as f:
            f.write(value)

    run_in_netns(ns, write)
