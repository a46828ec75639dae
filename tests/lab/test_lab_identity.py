"""Lab identity on real labs: exact names, a name in use left alone, dead services reported as lab
faults, and interrupts and kills at any step that leave nothing `harness down` cannot remove."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import ROOT, assert_no_leftovers, leftovers

from netlab.backends.base import pid_alive
from netlab.backends.base import wait_until as poll  # a deadline, never a sleep

DEMO = ROOT / "scenarios" / "demo.yaml"
RESOLVER = ROOT / "scenarios" / "resolver.yaml"
RUN_DIR = Path("/run/netlab")


def harness(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "harness", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT, env={**os.environ, "CI": "true"})


def status(lab: str) -> str | None:
    rows = json.loads(harness("status", "--json").stdout)
    return next((r["state"] for r in rows if r["lab"] == lab), None)


@pytest.fixture
def labs(lab_name: str) -> Iterator[list[str]]:
    """Two lab names, one a prefix of the other; both are removed whatever the test did."""
    names = [lab_name, f"{lab_name}-2"]
    yield names
    for n in names:
        harness("down", n)
        assert_no_leftovers(n)


def test_labs_whose_names_share_a_prefix_are_apart(labs: list[str], tmp_path: Path) -> None:
    short, long = labs
    assert harness("up", str(DEMO), "--name", long).returncode == 0
    up = harness("up", str(DEMO), "--name", short)  # once refused: `demo-2` looked like `demo`
    assert up.returncode == 0, up.stdout + up.stderr
    assert status(short) == "up" and status(long) == "up"
    assert harness("down", short).returncode == 0
    assert_no_leftovers(short)
    assert status(long) == "up" and leftovers(long)["namespaces"]
    run = harness("run", str(DEMO), "--name", long, "--check", "--out", str(tmp_path / "r"))
    assert run.returncode == 0, run.stdout + run.stderr
    assert "21/21 verdicts match" in run.stdout


def test_up_of_a_name_in_use_leaves_the_running_lab_alone(lab_name: str, tmp_path: Path) -> None:
    try:
        assert harness("up", str(DEMO), "--name", lab_name).returncode == 0
        state = json.loads((RUN_DIR / lab_name / "state.json").read_text())
        again = harness("up", str(DEMO), "--name", lab_name)
        assert again.returncode == 2, again.stdout + again.stderr
        assert "already exists" in again.stdout
        assert status(lab_name) == "up" and pid_alive(state["owner_pid"])
        other = harness("run", str(RESOLVER), "--name", lab_name, "--out", str(tmp_path / "x"))
        assert other.returncode == 2 and "was built from" in other.stdout, other.stdout + other.stderr
        assert not (tmp_path / "x").exists()
        run = harness("run", str(DEMO), "--name", lab_name, "--check", "--out", str(tmp_path / "r"))
        assert run.returncode == 0 and "21/21" in run.stdout, run.stdout + run.stderr
    finally:
        harness("down", lab_name)
    assert_no_leftovers(lab_name)


def test_a_dead_service_is_a_named_lab_fault_until_down(lab_name: str, tmp_path: Path) -> None:
    try:
        assert harness("up", str(DEMO), "--name", lab_name).returncode == 0
        state = json.loads((RUN_DIR / lab_name / "state.json").read_text())
        dpi = next(s for s in state["services"] if s["name"] == "dpi")
        os.kill(dpi["pid"], signal.SIGKILL)
        assert poll(lambda: (status(lab_name) or "").startswith("faulty"), 30), status(lab_name)
        assert f"{dpi['host']}/dpi" in (status(lab_name) or "")
        # The supervisor stays and keeps the lab (and the fault) for the user to see.
        assert pid_alive(state["owner_pid"])
        assert poll(lambda: bool(json.loads((RUN_DIR / lab_name / "state.json").read_text())["faults"]), 30)
        run = harness("run", str(DEMO), "--name", lab_name, "--check", "--out", str(tmp_path / "r"))
        assert run.returncode == 3, run.stdout + run.stderr
        assert f"{dpi['host']}/dpi (router) exited with status -9" in run.stdout
        assert "Traceback" not in run.stdout + run.stderr
    finally:
        down = harness("down", lab_name)
    assert down.returncode == 0
    assert_no_leftovers(lab_name)


PHASES = {
    "up": lambda lab, out: (RUN_DIR / lab / "state.json").exists(),
    "measuring": lambda lab, out: (out / "measurements.jsonl").exists()
    and (out / "measurements.jsonl").stat().st_size > 0,
    "scoring": lambda lab, out: (out / "run.json").exists(),
}


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
@pytest.mark.parametrize("phase", list(PHASES))
def test_an_interrupt_at_any_step_leaves_no_lab_and_no_traceback(phase: str, sig: signal.Signals, lab_name: str,
                                                                 tmp_path: Path) -> None:
    out = tmp_path / "r"
    testlist = tmp_path / "list.csv"  # through --targets, so its scenario copy is checked too
    testlist.write_text("url,category_code\nhttps://news.test/,NEWS\nhttp://news.test/,NEWS\n"
                        "https://social.test/,GRP\n")
    proc = subprocess.Popen([sys.executable, "-m", "harness", "run", str(DEMO), "--name", lab_name, "--out",
                             str(out), "--targets", str(testlist)], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env={**os.environ, "CI": "true"})
    reached = poll(lambda: PHASES[phase](lab_name, out) or proc.poll() is not None, 60)
    proc.send_signal(sig)
    output, _ = proc.communicate(timeout=90)
    assert reached
    assert "Traceback" not in output and "Event loop is closed" not in output, output
    assert proc.returncode in (0, 130), output  # 0: the run had finished before the signal came
    assert_no_leftovers(lab_name)
    assert not list(out.glob(".targets")), "the test list's scenario was left in the results folder"


def test_a_killed_run_leaves_nothing_down_cannot_remove(lab_name: str, tmp_path: Path) -> None:
    out = tmp_path / "r"
    proc = subprocess.Popen([sys.executable, "-m", "harness", "run", str(DEMO), "--name", lab_name, "--out",
                             str(out)], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, "CI": "true"})
    try:
        assert poll(lambda: PHASES["measuring"](lab_name, out), 60)
    finally:
        proc.kill()
        proc.wait()
    assert leftovers(lab_name)["namespaces"]
    assert status(lab_name) is not None  # shown, so the user can see what to remove
    down = harness("down", lab_name)
    assert down.returncode == 0, down.stdout + down.stderr
    assert_no_leftovers(lab_name)


def test_a_lab_whose_owner_was_killed_shows_as_orphaned(lab_name: str) -> None:
    try:
        assert harness("up", str(DEMO), "--name", lab_name).returncode == 0
        owner = json.loads((RUN_DIR / lab_name / "state.json").read_text())["owner_pid"]
        os.kill(owner, signal.SIGKILL)
        assert poll(lambda: not pid_alive(owner), 10)
        assert (status(lab_name) or "").startswith("orphaned"), status(lab_name)
    finally:
        down = harness("down", lab_name)
    assert down.returncode == 0, down.stdout + down.stderr
    assert_no_leftovers(lab_name)
