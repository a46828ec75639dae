"""Shaping by name for real (issue 15 item 7): scenarios/shaping-names.yaml on each backend. Two
sites share one address; the ISP that shapes by SNI and Host throttles only the named one (the
middlebox marks its flows, iptables CLASSIFY puts them in the rule's htb class), the ISP that
shapes the address throttles both; the same verdicts on both backends."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import ROOT, assert_no_leftovers

from harness.runner import run_scenario

SCENARIO = ROOT / "scenarios" / "shaping-names.yaml"
EXPECTED = {
    ("by-name", "https://video.test/"): "throttled", ("by-name", "http://video.test/"): "throttled",
    ("by-name", "https://docs.test/"): "ok", ("by-name", "http://docs.test/"): "ok",
    ("by-address", "https://video.test/"): "throttled", ("by-address", "http://video.test/"): "throttled",
    ("by-address", "https://docs.test/"): "throttled", ("by-address", "http://docs.test/"): "throttled",
}


def docker_ok() -> bool:
    return shutil.which("docker") is not None and subprocess.run(["docker", "info"],
                                                                 capture_output=True).returncode == 0


@pytest.mark.parametrize("backend", ["netns", pytest.param("compose", marks=pytest.mark.docker)])
def test_one_of_two_cohosted_sites_is_throttled_by_name(backend: str, lab_name: str, tmp_path: Path) -> None:
    if backend == "compose" and not docker_ok():
        pytest.skip("no Docker Engine")
    outcome = run_scenario(SCENARIO, out=tmp_path, name=lab_name, backend=backend)
    assert outcome.scored is not None and not outcome.scored.score.mismatches, [
        (r.vantage, r.url, r.observed.value, r.why) for r in outcome.scored.score.mismatches]
    assert {k: v for k, v in outcome.verdicts.items() if k[0] != "control"} == EXPECTED
    if backend == "netns":
        assert_no_leftovers(lab_name)
