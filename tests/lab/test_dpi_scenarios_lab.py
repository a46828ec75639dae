"""The middlebox's reassembly window (issue 15 item 8) and shaping by name (item 7) for real, on
each backend, with the same verdicts on both:

- scenarios/dpi-reassembly.yaml: the same SNI and Host rules at a thorough, a shallow (100 bytes)
  and a first-segment (3 packets) middlebox; padded and segmented requests evade exactly where
  the oracle says;
- scenarios/shaping-names.yaml: two sites share one address; the ISP that shapes by SNI and Host
  throttles only the named one (the middlebox marks its flows, iptables CLASSIFY puts them in the
  rule's htb class), the ISP that shapes the address throttles both."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import ROOT, assert_no_leftovers, docker_ok

from harness.runner import run_scenario


def reassembly_key(vantage: str, url: str) -> tuple[str, str] | None:
    # news.test's targets: "" is "/", "padding" the 100-byte padding, "qqqqqqq" the 3000-byte
    # path whose Host header lands in the request's third segment
    if "news.test" not in url:
        return None
    return vantage, "https" if url.startswith("https") else url.split("/", 3)[3][:7]


REASSEMBLY = {
    ("thorough", "https"): "tls.reset", ("shallow", "https"): "ok", ("first-segment", "https"): "tls.reset",
    ("thorough", ""): "http.reset", ("shallow", ""): "http.reset", ("first-segment", ""): "http.reset",
    ("thorough", "padding"): "http.reset", ("shallow", "padding"): "ok", ("first-segment", "padding"): "http.reset",
    ("thorough", "qqqqqqq"): "http.reset", ("shallow", "qqqqqqq"): "ok", ("first-segment", "qqqqqqq"): "ok",
}
SHAPING = {
    ("by-name", "https://video.test/"): "throttled", ("by-name", "http://video.test/"): "throttled",
    ("by-name", "https://docs.test/"): "ok", ("by-name", "http://docs.test/"): "ok",
    ("by-address", "https://video.test/"): "throttled", ("by-address", "http://video.test/"): "throttled",
    ("by-address", "https://docs.test/"): "throttled", ("by-address", "http://docs.test/"): "throttled",
}
CASES = {
    "dpi-reassembly": (reassembly_key, REASSEMBLY),
    "shaping-names": (lambda vantage, url: (vantage, url), SHAPING),
}


@pytest.mark.parametrize("backend", ["netns", pytest.param("compose", marks=pytest.mark.docker)])
@pytest.mark.parametrize("scenario", sorted(CASES))
def test_verdicts_as_the_oracle_says(scenario: str, backend: str, lab_name: str, tmp_path: Path) -> None:
    if backend == "compose" and not docker_ok():
        pytest.skip("no Docker Engine")
    outcome = run_scenario(ROOT / "scenarios" / f"{scenario}.yaml", out=tmp_path, name=lab_name, backend=backend)
    assert outcome.scored is not None and not outcome.scored.score.mismatches, [
        (r.vantage, r.url[:40], r.observed.value, r.why) for r in outcome.scored.score.mismatches]
    key, expected = CASES[scenario]
    got = {key(v, u): verdict for (v, u), verdict in outcome.verdicts.items() if v != "control"}
    assert {k: v for k, v in got.items() if k is not None} == expected
    if backend == "netns":
        assert_no_leftovers(lab_name)
