"""The whole job in code: bring a lab up (or use a running one), measure, score, tear down.

Used by `harness run`, the tests and the pytest plugin; the CLI adds only progress and output.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.campaign import CampaignConfig, CampaignResult, run_campaign
from harness.results import ScoredRun, score_results, write_run_info, write_verdicts
from netlab.backends import get_backend
from netlab.backends.base import Progress, RunningLab
from netlab.compile import compile_lab
from netlab.loader import load_scenario
from netlab.model import Scenario


@dataclass
class RunOutcome:
    out_dir: Path
    campaign: CampaignResult
    scored: ScoredRun | None  # None when a lab fault made the measurements untrustworthy
    up_seconds: float = 0.0
    down_seconds: float = 0.0

    @property
    def verdicts(self) -> dict[tuple[str, str], str]:
        assert self.scored is not None
        return {(r.vantage, r.url): r.observed.value for r in self.scored.score.rows}


def measure_and_score(lab: RunningLab, scenario: Scenario, out: Path, config: CampaignConfig, *,
                      backend: str = "netns", fingerprints: list[Path] | None = None,
                      on_result: Callable[[str, dict[str, Any]], None] | None = None,
                      up_seconds: float = 0.0) -> RunOutcome:
    result = asyncio.run(run_campaign(lab, scenario, out, config, on_result=on_result))
    write_run_info(out, scenario, {
        "lab": lab.name, "backend": backend, "scenario_name": scenario.name, "probe": config.probe,
        "shard": list(config.shard), "vantages": list(lab.state.vantages),
        "site_addresses": lab.state.site_addresses, "measurements": result.measurements,
        "errors": result.errors, "lab_faults": result.lab_faults,
        "campaign_seconds": round(result.seconds, 3), "up_seconds": round(up_seconds, 3)})
    if result.lab_faults:
        return RunOutcome(out, result, None, up_seconds)
    scored = score_results([out], fingerprints)
    write_verdicts(out, scored)
    return RunOutcome(out, result, scored, up_seconds)


def run_scenario(path: str | Path, *, out: Path, name: str | None = None, backend: str = "netns",
                 config: CampaignConfig | None = None, progress: Progress | None = None,
                 fingerprints: list[Path] | None = None,
                 on_result: Callable[[str, dict[str, Any]], None] | None = None) -> RunOutcome:
    """Measure a scenario in a lab of its own: up, campaign, score, and always down."""
    scenario = load_scenario(path)
    t0 = time.monotonic()
    lab = get_backend(backend).up(compile_lab(scenario, name or scenario.name), progress=progress)
    up = time.monotonic() - t0
    try:
        outcome = measure_and_score(lab, scenario, out, config or CampaignConfig(), backend=backend,
                                    fingerprints=fingerprints, on_result=on_result, up_seconds=up)
    finally:
        t1 = time.monotonic()
        lab.down()
        down = time.monotonic() - t1
    outcome.down_seconds = down
    return outcome
