"""Every built-in probe type against every shipped scenario (issue 19): each one's verdicts equal
what the oracle derives from its declared capabilities. One lab per scenario, every probe type
measured in it one after another (as `harness run --probe A --probe B` does)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import ROOT, assert_no_leftovers, lab_name_prefix

from harness.campaign import CampaignConfig
from harness.runner import measure_and_score
from netlab.backends import get_backend
from netlab.backends.base import RunningLab
from netlab.compile import compile_lab
from netlab.loader import load_scenario
from probes.base import BUILTIN_PROBES

SCENARIOS = sorted(p.name for p in (ROOT / "scenarios").glob("*.yaml"))
PROBES = sorted(BUILTIN_PROBES)


@pytest.fixture(scope="module", params=SCENARIOS)
def scenario_lab(request: pytest.FixtureRequest) -> Iterator[tuple[str, RunningLab]]:
    name = f"{lab_name_prefix()}{uuid.uuid4().hex[:6]}"
    scenario = load_scenario(ROOT / "scenarios" / request.param)
    lab = get_backend("netns").up(compile_lab(scenario, name))
    try:
        yield request.param, lab
    finally:
        lab.down()
        assert_no_leftovers(name)


@pytest.mark.parametrize("probe", PROBES)
def test_probe_type_verdicts_equal_the_oracle(scenario_lab: tuple[str, RunningLab], probe: str,
                                              tmp_path: Path) -> None:
    file, lab = scenario_lab
    scenario = load_scenario(ROOT / "scenarios" / file)
    outcome = measure_and_score(lab, scenario, tmp_path, CampaignConfig(probe=probe))
    assert outcome.campaign.errors == []
    assert outcome.scored is not None
    bad = [(r.vantage, r.url, r.label, r.expected.verdict.value if r.expected else None, r.why)
           for r in outcome.scored.score.mismatches]
    assert bad == []
    assert outcome.scored.score.passed
    assert outcome.scored.impact_matches


def test_run_check_with_every_probe_type_on_one_lab(lab_name: str, tmp_path: Path) -> None:
    """The command line: `harness run --check --probe dns --probe tcp ...` measures each probe type
    on one lab, each into OUT/<probe>, and exits 0 when all of them match their oracle."""
    args = [a for p in PROBES for a in ("--probe", p)]
    res = subprocess.run([sys.executable, "-m", "harness", "run", str(ROOT / "scenarios/demo.yaml"), "--check",
                          "--name", lab_name, "--out", str(tmp_path / "ab"), *args], capture_output=True, text=True,
                         cwd=ROOT, timeout=600, env={**os.environ, "CI": "true"})
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-2000:]
    assert sorted(p.name for p in (tmp_path / "ab").iterdir()) == PROBES
    # One score per probe type, each complete: 21 pairs, or 18 for the quic probe, which measures
    # the https targets on 443 only (its declared capabilities; the oracle expects no other pair).
    scores = re.findall(r"Score: (\d+)/(\d+) verdicts", res.stdout)
    assert len(scores) == len(PROBES), res.stdout[-4000:]
    assert sorted(int(total) for ok, total in scores if ok == total) == sorted(
        18 if p == "quic" else 21 for p in PROBES)
    assert_no_leftovers(lab_name)
