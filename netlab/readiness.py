"""Is a service ready? One answer for every backend: a DNS query answered, a TCP connect
accepted, or a file the service writes once it is up. The caller says where sockets are made
(inside a namespace from outside, or plainly from inside a container)."""

from __future__ import annotations

import socket
from collections.abc import Callable
from pathlib import Path

import dns.exception
import dns.message
import dns.rdatatype

from netlab.errors import LabError
from netlab.plan import ReadyCheck

SocketFactory = Callable[[int, int], socket.socket]


def is_ready(check: ReadyCheck, lab_dir: Path, make_socket: SocketFactory = socket.socket) -> bool:
    if check.kind == "file":
        return (lab_dir / check.path).exists()
    if check.kind == "tcp":
        with make_socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.settimeout(0.5)
            return sock.connect_ex((str(check.address), check.port)) == 0
    if check.kind == "dns":
        # Imported here: dns.query imports aioquic (its DNS-over-QUIC), a fifth of a second that
        # every command attaching to a lab (`harness exec`, `down`, `status`) would pay for nothing.
        from dns.query import udp

        sock = make_socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.setblocking(False)  # dnspython requires a non-blocking socket it is handed
        with sock:
            q = dns.message.make_query(check.qname, dns.rdatatype.A)
            try:
                udp(q, str(check.address), port=check.port, timeout=0.5, sock=sock)
            except dns.exception.Timeout:
                return False
            return True
    raise LabError(f"unknown readiness check {check.kind!r}")
