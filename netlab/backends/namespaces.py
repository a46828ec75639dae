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

from pyroute2 import IPRoute, netns

from netlab.names import NETNS_DIR

CLONE_NEWNET = 0x40000000
NETLINK_ROUTE = 0
_libc = ctypes.CDLL(None, use_errno=True)
T = TypeVar("T")


def _in_own_thread(name: str, fn: Callable[[], T]) -> T:
    """``fn``'s result (or its exception) from a short-lived thread of its own: what ``fn`` does
    to its thread's namespace (setns, unshare) ends with that thread."""
    box: dict[str, object] = {}

    def target() -> None:
        try:
            box["result"] = fn()
        except BaseException as exc:
            box["error"] = exc

    t = threading.Thread(target=target, name=name, daemon=True)
    t.start()
    t.join()
    if "error" in box:
        raise box["error"]  # type: ignore[misc]
    return box["result"]  # type: ignore[return-value]


def _check(status: int, what: str) -> None:
    if status != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def run_in_netns(ns: str, fn: Callable[[], T]) -> T:
    """Run ``fn`` in a thread that has joined network namespace ``ns``; return its result."""

    def joined() -> T:
        fd = os.open(os.path.join(NETNS_DIR, ns), os.O_RDONLY)
        try:
            _check(_libc.setns(fd, CLONE_NEWNET), f"setns({ns})")
        finally:
            os.close(fd)
        return fn()

    return _in_own_thread(f"netns-{ns}", joined)


def create_netns(ns: str) -> None:
    """Create network namespace ``ns`` (bound at NETNS_DIR/ns, as `ip netns add` does) without
    forking a process as pyroute2's netns.create does: a short-lived thread unshares its own
    network namespace and pyroute2 binds it there (netns.attach). Only that thread was ever in it."""

    def unshared() -> None:
        _check(_libc.unshare(CLONE_NEWNET), f"unshare for {ns}")
        netns.attach(ns, "thread-self")

    _in_own_thread(f"netns-create-{ns}", unshared)


def iproute_in_netns(ns: str) -> IPRoute:
    """A netlink handle on ``ns``: its socket made in a thread that joined ``ns`` (run_in_netns),
    where pyroute2's NetNS forks a process to make it."""
    sock = socket_in_netns(ns, socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_ROUTE)
    return IPRoute(fileno=sock.detach())


def socket_in_netns(ns: str, family: int = socket.AF_INET, type: int = socket.SOCK_STREAM, proto: int = 0
                    ) -> socket.socket:
    return run_in_netns(ns, lambda: socket.socket(family, type, proto))


def write_sysctl(ns: str, name: str, value: str) -> None:
    """Set a net.* sysctl inside ``ns`` (the /proc/sys/net view follows the opening thread)."""
    path = "/proc/sys/" + name.replace(".", "/")

    def write() -> None:
        with open(path, "w") as f:
            f.write(value)

    run_in_netns(ns, write)
