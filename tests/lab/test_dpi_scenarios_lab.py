"""The middlebox's reassembly window (issue 15 item 8) and shaping by name (item 7) for real, on
each backend, with the same verdicts on both (netns: tests/lab/test_scenarios.py, with the
tables of tests/lab/scenario_checks.py; here, compose):

- scenarios/dpi-reassembly.yaml: the same SNI and Host rules at a thorough, a shallow (100 bytes)
  and a first-segment (3 packets) middlebox; padded and segmented requests evade exactly where
  the oracle says;
- scenarios/shaping-names.yaml: two sites share one address; the ISP that shapes by SNI and Host
  throttles only the named one (the middlebox marks its flows, iptables CLASSIFY puts them in the
  rule's htb class), the ISP that shapes the address throttles both."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import ROOT, docker_ok
from scenario_checks import VERDICT_TABLES, check_verdict_table

from harness.runner import run_scenario


@pytest.mark.docker
@pytest.mark.parametrize("scenario", sorted(VERDICT_TABLES))
def test_verdicts_as_the_oracle_says_on_compose(scenario: str, lab_name: str, tmp_path: Path) -> None:
    if not docker_ok():
        pytest.skip("no Docker Engine")
    outcome = run_scenario(ROOT / "scenarios" / scenario, out=tmp_path, name=lab_name, backend="compose")
    assert outcome.scored is not None and not outcome.scored.score.mismatches, [
        (r.vantage, r.url[:40], r.observed.value, r.why) for r in outcome.scored.score.mismatches]
    check_verdict_table(scenario, outcome.verdicts)
