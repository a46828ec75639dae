"""dpi.reassembly for real (issue 15 item 8): scenarios/dpi-reassembly.yaml on each backend. The
same SNI and Host rules at a thorough, a shallow (100 bytes) and a first-segment (3 packets)
middlebox: padded and segmented requests evade exactly where the oracle says, with the same
verdicts on both backends."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import ROOT, assert_no_leftovers

from harness.runner import run_scenario

SCENARIO = ROOT / "scenarios" / "dpi-reassembly.yaml"
# (vantage, the first 7 characters of the path) -> verdict; "" is "/", "padding" the 100-byte
# padding, "qqqqqqq" the 3000-byte path whose Host header lands in the request's third segment.
EXPECTED = {
    ("thorough", "https"): "tls.reset", ("shallow", "https"): "ok", ("first-segment", "https"): "tls.reset",
    ("thorough", ""): "http.reset", ("shallow", ""): "http.reset", ("first-segment", ""): "http.reset",
    ("thorough", "padding"): "http.reset", ("shallow", "padding"): "ok", ("first-segment", "padding"): "http.reset",
    ("thorough", "qqqqqqq"): "http.reset", ("shallow", "qqqqqqq"): "ok", ("first-segment", "qqqqqqq"): "ok",
}


def docker_ok() -> bool:
    return shutil.which("docker") is not None and subprocess.run(["docker", "info"],
                                                                 capture_output=True).returncode == 0


@pytest.mark.parametrize("backend", ["netns", pytest.param("compose", marks=pytest.mark.docker)])
def test_evasion_by_padding_and_segmentation(backend: str, lab_name: str, tmp_path: Path) -> None:
    if backend == "compose" and not docker_ok():
        pytest.skip("no Docker Engine")
    outcome = run_scenario(SCENARIO, out=tmp_path, name=lab_name, backend=backend)
    assert outcome.scored is not None and not outcome.scored.score.mismatches, [
        (r.vantage, r.url[:40], r.observed.value, r.why) for r in outcome.scored.score.mismatches]
    got = {}
    for (vantage, url), verdict in outcome.verdicts.items():
        if vantage != "control" and "news.test" in url:
            key = "https" if url.startswith("https") else url.split("/", 3)[3][:7]
            got[(vantage, key)] = verdict
    assert got == EXPECTED
    if backend == "netns":
        assert_no_leftovers(lab_name)
