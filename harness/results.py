"""A results folder: measurements.jsonl, run.json (what ran where), the scenario, and the
verdicts and score computed from them. Several folders (shards) score as one run."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

from harness.analysis import load_fingerprints
from harness.score import Score, measurement_files, score, verdict_rows
from netlab.errors import NetlabError
from netlab.impact import IspImpact, impact
from netlab.loader import load_scenario
from netlab.model import Scenario
from netlab.oracle import expected_verdicts


@dataclass
class ScoredRun:
    scenario: Scenario
    vantages: list[str]
    score: Score
    impact_expected: dict[str, IspImpact] = field(default_factory=dict)  # from the oracle
    impact_observed: dict[str, IspImpact] = field(default_factory=dict)  # from the measurements

    @property
    def impact_matches(self) -> bool:
        return all(self.impact_expected[i].to_json() == self.impact_observed[i].to_json()
                   for i in self.impact_expected)


def write_run_info(out_dir: Path, scenario: Scenario, info: dict[str, Any]) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(scenario.source, out_dir / "scenario.yaml")
    (out_dir / "run.json").write_text(json.dumps(info, indent=1))


def score_results(dirs: list[Path], fingerprint_files: list[Path] | None = None,
                  scenario: Scenario | None = None) -> ScoredRun:
    """Score results folders. ``scenario``: the one already loaded for the run, if there is one
    (a 50,000-target scenario costs tens of MB to load twice); else the folders' copy."""
    infos = []
    for d in dirs:
        try:
            infos.append(json.loads((Path(d) / "run.json").read_text()))
        except (OSError, ValueError) as exc:
            raise NetlabError(f"{d} is not a results folder of `harness run` ({exc})") from None
    names = {i["scenario_name"] for i in infos}
    if len(names) > 1:
        raise NetlabError(f"these folders come from different scenarios: {', '.join(sorted(names))}")
    scenario = scenario or load_scenario(Path(dirs[0]) / "scenario.yaml")
    sites = {k: IPv4Address(v) for k, v in infos[0]["site_addresses"].items()}
    expectations = expected_verdicts(scenario, sites)
    rows = verdict_rows(measurement_files(dirs), expectations, load_fingerprints(fingerprint_files))
    measured = {(r.vantage, r.url) for r in rows}
    rules = {k: e.rule for k, e in expectations.items()}
    expected = {k: e.verdict for k, e in expectations.items() if k in measured}
    observed = {(r.vantage, r.url): r.observed for r in rows}
    return ScoredRun(scenario=scenario, vantages=infos[0]["vantages"], score=score(rows),
                     impact_expected=impact(scenario, sites, expected, rules),
                     impact_observed=impact(scenario, sites, observed, rules))


def write_verdicts(out_dir: Path, run: ScoredRun) -> None:
    with open(out_dir / "verdicts.jsonl", "w") as f:
        for r in run.score.rows:
            f.write(json.dumps(r.to_json()) + "\n")
    (out_dir / "score.json").write_text(json.dumps({
        **run.score.to_json(),
        "impact": {isp: {"observed": run.impact_observed[isp].to_json(), "expected": run.impact_expected[isp].to_json()}
                   for isp in run.impact_observed}}, indent=1))
