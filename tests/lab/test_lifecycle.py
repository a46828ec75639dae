"""Lab lifecycle: up/status/down from the CLI, attach, teardown after failures and crashes."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import ROOT, WHERE_AM_I, assert_no_leftovers, leftovers

from harness.campaign import CampaignConfig, run_campaign
from netlab.backends.netns import NetnsBackend, ns_name
from netlab.compile import compile_lab
from netlab.errors import LabError
from netlab.loader import load_scenario

FIREWALL = ROOT / "scenarios" / "firewall.yaml"


def harness(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "harness", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT, env={**os.environ, "CI": "true"})


def test_up_status_run_down(lab_name: str, tmp_path: Path) -> None:
    try:
        up = harness("up", str(FIREWALL), "--name", lab_name)
        assert up.returncode == 0, up.stdout + up.stderr
        status = json.loads(harness("status", "--json").stdout)
        mine = [s for s in status if s["lab"] == lab_name]
        assert mine and mine[0]["state"] == "up" and mine[0]["backend"] == "netns"
        run = harness("run", str(FIREWALL), "--name", lab_name, "--check", "--out", str(tmp_path / "r"))
        assert run.returncode == 0, run.stdout + run.stderr
        assert f"using the running lab {lab_name}" in run.stdout
        assert "24/24 verdicts match" in run.stdout
        # the lab is still up after a run that attached to it
        assert [s for s in json.loads(harness("status", "--json").stdout) if s["lab"] == lab_name]
        scored = harness("score", str(tmp_path / "r"), "--check")
        assert scored.returncode == 0 and "24/24" in scored.stdout
    finally:
        down = harness("down", lab_name)
    assert down.returncode == 0, down.stdout + down.stderr
    assert_no_leftovers(lab_name)


def test_down_cleans_up_after_a_killed_supervisor(lab_name: str) -> None:
    assert harness("up", str(FIREWALL), "--name", lab_name).returncode == 0
    state = json.loads((Path("/run/netlab") / lab_name / "state.json").read_text())
    os.kill(state["owner_pid"], signal.SIGKILL)  # a crash: no teardown ran
    assert leftovers(lab_name)["namespaces"]
    assert harness("down", lab_name).returncode == 0
    assert_no_leftovers(lab_name)


def test_teardown_after_a_failure_mid_run(lab_name: str, tmp_path: Path) -> None:
    scenario = load_scenario(FIREWALL)
    lab = NetnsBackend().up(compile_lab(scenario, lab_name))
    seen = []

    def explode(vantage: str, line: dict) -> None:
        seen.append(line)
        raise RuntimeError("boom in the middle of the campaign")

    try:
        with pytest.raises(RuntimeError, match="boom"):
            asyncio.run(run_campaign(lab, scenario, tmp_path, CampaignConfig(), on_result=explode))
    finally:
        lab.down()
    assert seen
    assert_no_leftovers(lab_name)


def test_cli_run_interrupted_leaves_nothing(lab_name: str, tmp_path: Path) -> None:
    proc = subprocess.Popen([sys.executable, "-m", "harness", "run", str(ROOT / "scenarios/resolver.yaml"),
                             "--name", lab_name, "--out", str(tmp_path / "r")], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not (Path("/run/netlab") / lab_name / "state.json").exists():
        time.sleep(0.02)
    ns_ready = time.monotonic() + 30
    while time.monotonic() < ns_ready and not json.loads(
            (Path("/run/netlab") / lab_name / "state.json").read_text() or "{}").get("ready"):
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode != 0, out
    assert_no_leftovers(lab_name)


def test_a_second_lab_of_the_same_name_is_refused(lab_name: str) -> None:
    backend = NetnsBackend()
    lab = backend.up(compile_lab(load_scenario(FIREWALL), lab_name))
    try:
        with pytest.raises(LabError, match="already exists"):
            backend.up(compile_lab(load_scenario(FIREWALL), lab_name))
    finally:
        lab.down()
    assert_no_leftovers(lab_name)


def test_two_labs_at_once(lab_name: str, tmp_path: Path) -> None:
    """Same scenario, same address plan, two labs: each is isolated in its own namespaces."""
    from harness.runner import run_scenario

    names = [f"{lab_name}a", f"{lab_name}b"]

    async def both() -> list:
        loop = asyncio.get_running_loop()
        return await asyncio.gather(*(loop.run_in_executor(None, lambda n=n: run_scenario(
            FIREWALL, out=tmp_path / n, name=n)) for n in names))

    outcomes = asyncio.run(both())
    for o in outcomes:
        assert o.scored is not None and not o.scored.score.mismatches
    for n in names:
        assert_no_leftovers(n)


def test_probe_refuses_targets_outside_the_lab(lab_name: str) -> None:
    scenario = load_scenario(FIREWALL)
    lab = NetnsBackend().up(compile_lab(scenario, lab_name))
    try:
        from harness.campaign import WORKER_ARGV, probe_context
        cmd = lab.command("fwisp", WORKER_ARGV)
        jobs = [json.dumps({"context": probe_context(lab, scenario, "fwisp", {}).to_dict(), "concurrency": 2}),
                json.dumps({"id": 1, "probe": "web", "url": "https://example.org/"}),
                json.dumps({"id": 2, "probe": "web", "url": "http://93.184.216.34/"})]
        res = subprocess.run(cmd, input="\n".join(jobs) + "\n", capture_output=True, text=True, timeout=60)
        lines = sorted((json.loads(x) for x in res.stdout.splitlines()), key=lambda x: x["id"])
        assert [x.get("kind") for x in lines] == ["refused", "refused"], res.stdout + res.stderr
        assert "example.org" in lines[0]["error"]
        # Lab addresses are contacted only from inside a lab host, which the probes recognise.
        where = subprocess.run(lab.command("fwisp", WHERE_AM_I), capture_output=True, text=True, timeout=60)
        assert where.stdout.split() == [ns_name(lab_name, "fwisp")], where.stderr
    finally:
        lab.down()
