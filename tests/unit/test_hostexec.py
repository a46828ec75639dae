"""hostd's exec socket (netlab.services.hostexec): the program gets the caller's own stdin, stdout
and stderr, its exit status comes back, and it dies with its caller."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from netlab.services import hostexec


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Path]:
    # A long folder name too: sockets are reached through the folder's descriptor past 107 bytes.
    path = tmp_path / ("d" * 110) / "run" / "h.sock"
    srv = hostexec.ExecServer({path: same}).start()
    yield path
    srv.stop()


def same(argv: list[str]) -> list[str]:
    return argv


def run(path: Path, argv: list[str], data: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(hostexec.client_command(sys.executable, path, argv), input=data, capture_output=True,
                          timeout=30)


def test_the_program_uses_the_callers_pipes_and_its_status_comes_back(server: Path) -> None:
    res = run(server, ["sh", "-c", "cat; echo oops >&2; exit 3"], b"job line\n")
    assert (res.returncode, res.stdout, res.stderr) == (3, b"job line\n", b"oops\n")
    assert run(server, ["sh", "-c", "kill -9 $$"]).returncode == 137


def test_a_program_that_cannot_start_says_why(server: Path) -> None:
    res = run(server, ["/nonexistent/worker"])
    assert res.returncode == 127 and b"No such file" in res.stderr


def test_the_program_dies_with_its_caller(server: Path) -> None:
    client = subprocess.Popen(hostexec.client_command(sys.executable, server, ["sh", "-c", "echo $$; exec sleep 60"]),
                              stdout=subprocess.PIPE)
    assert client.stdout is not None
    pid = int(client.stdout.readline())
    client.kill()  # what the campaign does to a stuck worker
    client.wait()
    deadline = time.monotonic() + 5
    while os.path.exists(f"/proc/{pid}") and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not os.path.exists(f"/proc/{pid}")


def test_liveness_is_whether_the_socket_answers(tmp_path: Path) -> None:
    path = tmp_path / "h.sock"
    srv = hostexec.ExecServer({path: same}).start()
    assert hostexec.alive(path)
    srv.stop()  # as when the lab's container stops: the socket file stays, nobody answers
    assert path.exists() and not hostexec.alive(path)
    res = run(path, ["true"])
    assert res.returncode == 255 and b"not running" in res.stderr


def test_each_hosts_socket_runs_programs_its_own_way_and_one_host_can_go_down(tmp_path: Path) -> None:
    a, b = tmp_path / "run" / "a.sock", tmp_path / "run" / "b.sock"
    srv = hostexec.ExecServer({a: lambda argv: ["env", "HOST=a", *argv],
                               b: lambda argv: ["env", "HOST=b", *argv]}).start()
    try:
        assert run(a, ["sh", "-c", "echo $HOST"]).stdout == b"a\n"
        assert run(b, ["sh", "-c", "echo $HOST"]).stdout == b"b\n"
        srv.close(a)  # hostd takes a host down: its socket refuses, the others answer
        deadline = time.monotonic() + 5
        while hostexec.alive(a) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert not hostexec.alive(a) and hostexec.alive(b)
        assert run(a, ["true"]).returncode == 255
        assert run(b, ["true"]).returncode == 0
    finally:
        srv.stop()
