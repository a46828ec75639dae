"""Run a program inside a container lab host from anywhere that sees the lab folder.

hostd listens on ``<lab folder>/run/<host>.sock``, one socket per lab host. A client connects, and
sends the command line together with its own standard input, output and error (SCM_RIGHTS): hostd
starts the program in that host (its network namespace) with exactly those descriptors, so its
output reaches the caller with no relay and no Docker API in between. hostd answers with the exit
status when the program ends, and kills the program if the client goes away first (the harness
killing a stuck worker kills it in the host). The same socket says whether the host is up: a
refused connection means the host went down (hostd closes its socket) or the lab's container is gone.

This serves `harness run --backend compose` from the Docker host and the campaign of a generated
compose file from its ``score`` container alike (both see the lab folder). The client is this
file run as a script (``python3 -P hostexec.py SOCKET -- ARGV...``): standard library only, so it
runs wherever the lab folder is, whatever is importable there.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import selectors
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

MAX_HEADER = 1 << 16
# An AF_UNIX path has at most 107 bytes; longer ones are reached through the folder's descriptor.
MAX_SUN_PATH = 100


@contextlib.contextmanager
def _short_path(path: Path) -> Iterator[str]:
    if len(os.fsencode(str(path))) <= MAX_SUN_PATH:
        yield str(path)
        return
    fd = os.open(path.parent, os.O_PATH | os.O_DIRECTORY)
    try:
        yield f"/proc/self/fd/{fd}/{path.name}"
    finally:
        os.close(fd)


def connect(path: str | Path, timeout: float | None = None) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        with _short_path(Path(path)) as p:
            sock.connect(p)
    except OSError:
        sock.close()
        raise
    sock.settimeout(None)
    return sock


def alive(path: str | Path) -> bool:
    """True if a hostd answers on ``path`` (its host is up)."""
    try:
        connect(path, timeout=2.0).close()
    except OSError:
        return False
    return True


Wrap = Callable[[list[str]], list[str]]


class ExecServer:
    """hostd's side: one thread, one selector over the listening sockets (one per lab host), the
    clients and the programs' pidfds (no polling). Each socket has its ``wrap``: how a command line
    becomes one that runs in its host (``ip netns exec <namespace> ...``)."""

    def __init__(self, listeners: dict[Path, Wrap]) -> None:
        self.sel = selectors.DefaultSelector()
        self.listeners: dict[Path, socket.socket] = {}
        for path, wrap in listeners.items():
            path.parent.mkdir(parents=True, exist_ok=True)
            with contextlib.suppress(FileNotFoundError):
                path.unlink()  # left by a previous lab of this name
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            with _short_path(path) as p:
                sock.bind(p)
            sock.listen(64)
            self.sel.register(sock, selectors.EVENT_READ, ("listen", wrap))
            self.listeners[path] = sock
        self.procs: dict[socket.socket, subprocess.Popen[bytes]] = {}
        self.wraps: dict[socket.socket, Wrap] = {}
        self._closing: queue.SimpleQueue[Path] = queue.SimpleQueue()
        self._ctl_r, self._ctl_w = os.pipe()
        self.sel.register(self._ctl_r, selectors.EVENT_READ, ("control", None))
        self.thread = threading.Thread(target=self._serve, name="hostexec", daemon=True)

    def start(self) -> ExecServer:
        self.thread.start()
        return self

    def close(self, path: Path) -> None:
        """Stop answering on ``path`` (its host is down): a client is refused there from now on,
        as at a stopped container; what already runs there is the caller's to kill."""
        self._closing.put(path)
        os.write(self._ctl_w, b"c")

    def stop(self) -> None:
        """Stop serving and kill every program still running."""
        os.write(self._ctl_w, b"x")
        self.thread.join(timeout=5)
        for sock in self.listeners.values():
            sock.close()
        for proc in list(self.procs.values()):
            _kill(proc)

    def _serve(self) -> None:
        while True:
            for key, _ in self.sel.select():
                kind, data = key.data
                if kind == "control":
                    if os.read(self._ctl_r, 1) == b"x":
                        return
                    self._close_listener(self._closing.get())
                elif kind == "listen":
                    try:
                        conn, _ = key.fileobj.accept()  # type: ignore[union-attr]
                    except OSError:  # closed earlier in this round (close()): its host is down
                        continue
                    self.wraps[conn] = data
                    self.sel.register(conn, selectors.EVENT_READ, ("client", None))
                elif kind == "client":
                    self._client_event(key.fileobj)  # type: ignore[arg-type]
                elif kind == "exit":
                    self._exited(key.fd, data)

    def _close_listener(self, path: Path) -> None:
        sock = self.listeners.pop(path, None)
        if sock is not None:
            self.sel.unregister(sock)
            sock.close()
            with contextlib.suppress(FileNotFoundError):
                path.unlink()

    def _client_event(self, conn: socket.socket) -> None:
        proc = self.procs.get(conn)
        if proc is not None:
            # A client sends nothing after its request: readable means it went away. The program's
            # exit (its pidfd) ends the exchange.
            if not _recv_or_eof(conn):
                self.sel.unregister(conn)
                _kill(proc)
            return
        try:
            msg, fds, _, _ = socket.recv_fds(conn, MAX_HEADER, 3)
        except OSError:
            msg, fds = b"", []
        if not msg or len(fds) != 3:  # a liveness check, or a broken request
            for fd in fds:
                os.close(fd)
            self._drop(conn)
            return
        try:
            argv = self.wraps[conn](json.loads(msg)["argv"])
            proc = subprocess.Popen(argv, stdin=fds[0], stdout=fds[1], stderr=fds[2], start_new_session=True)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            with contextlib.suppress(OSError):
                os.write(fds[2], f"hostexec: cannot run {msg[:200]!r}: {exc}\n".encode())
            _reply(conn, 127)
            self._drop(conn)
            return
        finally:
            for fd in fds:
                os.close(fd)
        self.procs[conn] = proc
        pidfd = os.pidfd_open(proc.pid)
        self.sel.register(pidfd, selectors.EVENT_READ, ("exit", conn))

    def _exited(self, pidfd: int, conn: socket.socket) -> None:
        self.sel.unregister(pidfd)
        os.close(pidfd)
        proc = self.procs.pop(conn)
        _reply(conn, proc.wait())
        self._drop(conn)

    def _drop(self, conn: socket.socket) -> None:
        with contextlib.suppress(KeyError):
            self.sel.unregister(conn)
        self.wraps.pop(conn, None)
        conn.close()


def _recv_or_eof(conn: socket.socket) -> bool:
    try:
        return bool(conn.recv(1))
    except OSError:
        return False


def _reply(conn: socket.socket, status: int) -> None:
    with contextlib.suppress(OSError):
        conn.sendall(json.dumps({"status": status}).encode() + b"\n")


def _kill(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)


def client_command(python: str, socket_path: str | Path, argv: list[str]) -> list[str]:
    """The command line that runs ``argv`` in the host whose hostd listens on ``socket_path``."""
    # -P: nothing from this file's folder shadows the standard library the client uses.
    return [python, "-P", str(Path(__file__).resolve()), str(socket_path), "--", *argv]


def main(argv: list[str]) -> int:
    if len(argv) < 3 or argv[1] != "--":
        print("usage: hostexec.py SOCKET -- PROGRAM [ARG...]", file=sys.stderr)
        return 2
    path, cmd = argv[0], argv[2:]
    try:
        sock = connect(path)
    except OSError as exc:
        print(f"hostexec: no lab host answers on {path} ({exc}): its container is not running", file=sys.stderr)
        return 255
    socket.send_fds(sock, [json.dumps({"argv": cmd}).encode()], [0, 1, 2])
    # The program has our input and output now: let go of them, so their ends close when it ends.
    devnull = os.open(os.devnull, os.O_RDWR)
    os.dup2(devnull, 0)
    os.dup2(devnull, 1)
    answer = b""
    while not answer.endswith(b"\n"):
        chunk = sock.recv(256)
        if not chunk:
            print(f"hostexec: the lab host went away while running {cmd[:3]}", file=sys.stderr)
            return 255
        answer += chunk
    status = int(json.loads(answer)["status"])
    return status if status >= 0 else 128 - status  # killed by a signal: as a shell reports it


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
