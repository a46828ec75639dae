"""Every shipped scenario, brought up for real: each verdict equals the oracle, nothing is left."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import ROOT, assert_no_leftovers

from harness.runner import run_scenario

SCENARIOS = sorted(p.name for p in (ROOT / "scenarios").glob("*.yaml"))


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_verdicts_equal_the_oracle(scenario: str, lab_name: str, tmp_path: Path) -> None:
    outcome = run_scenario(ROOT / "scenarios" / scenario, out=tmp_path, name=lab_name)
    assert outcome.campaign.errors == []
    assert outcome.scored is not None
    bad = [(r.vantage, r.url, r.observed.value, r.expected.verdict.value if r.expected else None, r.why)
           for r in outcome.scored.score.mismatches]
    assert bad == []
    assert outcome.campaign.measurements == len(outcome.scored.scenario.targets) * len(outcome.scored.vantages)
    assert_no_leftovers(lab_name)
