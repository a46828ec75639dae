"""Lab tests bring up real namespaces: they need root and Linux network namespaces."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from netlab.names import lab_of

ROOT = Path(__file__).resolve().parents[2]
# Prints the lab host the probes find themselves in (probes.safety.lab_namespace), or None.
WHERE_AM_I = ["python3", "-c", "from probes.safety import lab_namespace; print(lab_namespace())"]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/lab" in str(item.fspath).replace(os.sep, "/"):
            item.add_marker(pytest.mark.lab)
            item.add_marker(pytest.mark.root)
            if os.geteuid() != 0:
                item.add_marker(pytest.mark.skip(reason="lab tests need root (network namespaces)"))


def lab_name_prefix() -> str:
    """`t` and the xdist worker's number (`t0`, `t1`, ...; `t` without xdist), so a lab left behind
    names the worker that made it. $FAUXISP_TEST_LAB_PREFIX replaces the `t`, for telling apart
    the labs of people who run tests on one machine at once."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "").removeprefix("gw")
    return os.environ.get("FAUXISP_TEST_LAB_PREFIX", "t") + worker


@pytest.fixture
def lab_name() -> str:
    """A lab name of its own per test, so tests (and xdist workers) never collide."""
    return f"{lab_name_prefix()}{uuid.uuid4().hex[:6]}"


def leftovers(lab: str) -> dict[str, list[str]]:
    """Every trace a lab can leave: namespaces, its folder, and processes that mention it."""
    ns = [n for n in os.listdir("/run/netns") if lab_of(n) == lab] if os.path.isdir("/run/netns") else []
    procs = subprocess.run(["pgrep", "-af", f"/run/netlab/{lab}/"], capture_output=True, text=True).stdout
    return {
        "namespaces": ns,
        "folders": [str(p) for p in [Path("/run/netlab") / lab] if p.exists()],
        "processes": [line for line in procs.splitlines() if line.strip()],
        "netns_etc": [n for n in os.listdir("/etc/netns") if lab_of(n) == lab]
        if os.path.isdir("/etc/netns") else [],
    }


def assert_no_leftovers(lab: str) -> None:
    left = leftovers(lab)
    assert not any(left.values()), f"lab {lab} left traces behind: {left}"


def docker_ok() -> bool:
    """A Docker Engine answers (tests of the compose backend skip without one)."""
    return shutil.which("docker") is not None and subprocess.run(["docker", "info"],
                                                                 capture_output=True).returncode == 0


def harness_cli(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """`harness ARGS...` as a user runs it (this interpreter, the project's folder, CI output)."""
    return subprocess.run([sys.executable, "-m", "harness", *args], capture_output=True, text=True, cwd=ROOT,
                          timeout=timeout, env={**os.environ, "CI": "true"}, stdin=subprocess.DEVNULL)
