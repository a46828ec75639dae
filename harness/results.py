"""A results folder: measurements.jsonl, run.json (what ran where), the scenario, and the
verdicts and score computed from them. Several folders (shards) score as one run."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field, replace
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

from harness.analysis import load_fingerprints
from harness.campaign import shard_targets
from harness.errors import ResultsError
from harness.score import (
    TECHNIQUES,
    Score,
    VerdictRow,
    measurement_files,
    score,
    unmeasured_rows,
    verdict_rows,
)
from netlab.blockpage import declared_fingerprints
from netlab.capabilities import WEB, Capabilities
from netlab.errors import LabFault, NetlabError
from netlab.impact import IspImpact, impact
from netlab.loader import load_scenario
from netlab.model import Scenario
from netlab.oracle import Expectation, expected_verdicts
from netlab.target import Target
from probes.base import installed_capabilities


@dataclass
class ScoredRun:
    scenario: Scenario
    vantages: list[str]
    score: Score
    impact_expected: dict[str, IspImpact] = field(default_factory=dict)  # from the oracle
    impact_observed: dict[str, IspImpact] = field(default_factory=dict)  # from the measurements
    probe: str = "web"  # the probe type that measured
    capabilities: Capabilities = WEB
    infos: list[dict[str, Any]] = field(default_factory=list)  # each folder's run.json

    @property
    def impact_matches(self) -> bool:
        return all(self.impact_expected[i].to_json() == self.impact_observed[i].to_json()
                   for i in self.impact_expected)


def write_run_info(out_dir: Path, scenario: Scenario, info: dict[str, Any]) -> None:
    """run.json; with the probe's declared capabilities beside its name, so the folder scores the
    same on a machine where that probe type is not installed."""
    if isinstance(info.get("probe"), str) and "probe_capabilities" not in info:
        caps = installed_capabilities(info["probe"])
        info = {**info, "probe_capabilities": caps.to_json() if caps else None}
    out_dir.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(scenario.source, out_dir / "scenario.yaml")
    (out_dir / "run.json").write_text(json.dumps(info, indent=1))


def read_run_infos(dirs: list[Path]) -> list[dict[str, Any]]:
    """The run.json of each results folder, checked before anything is scored: every folder
    exists and is given once, all come from one scenario, and none ended in a lab fault (its
    measurements cannot be trusted: LabFault, exit 3, rather than verdicts that blame the rules)."""
    if not dirs:
        raise ResultsError("no results folder given")
    seen: dict[Path, Path] = {}
    for d in dirs:
        key = Path(d).resolve()
        if key in seen:
            raise ResultsError(f"results folder {d} is given twice (as {seen[key]} and {d}): its verdicts "
                               "would count twice")
        seen[key] = Path(d)
    infos = []
    for d in dirs:
        if not Path(d).is_dir():
            raise ResultsError(f"{d}: no such results folder")
        try:
            info = json.loads((Path(d) / "run.json").read_text())
        except (OSError, ValueError) as exc:
            raise ResultsError(f"{d} is not a results folder of `harness run` ({exc})") from None
        if not isinstance(info, dict) or not isinstance(info.get("scenario_name"), str) \
                or not isinstance(info.get("vantages"), list) or not isinstance(info.get("site_addresses"), dict):
            raise ResultsError(f"{d}/run.json lacks scenario_name, vantages or site_addresses: not a results "
                               "folder of `harness run`")
        shard = info.get("shard") or [1, 1]
        if not (isinstance(shard, list) and len(shard) == 2 and all(type(x) is int for x in shard)
                and 1 <= shard[0] <= shard[1]):
            raise ResultsError(f"{d}/run.json: shard {shard!r} is not [index, count]")
        infos.append(info)
    names = {i["scenario_name"] for i in infos}
    if len(names) > 1:
        raise ResultsError(f"these folders come from different scenarios: {', '.join(sorted(names))}")
    faulty = [(d, i["lab_faults"]) for d, i in zip(dirs, infos, strict=True) if i.get("lab_faults")]
    if faulty:
        raise LabFault("; ".join(f"{d}: the run ended in a lab fault ({', '.join(map(str, f))})" for d, f in faulty)
                       + ". Its measurements cannot be trusted and are not scored; run it again")
    return infos


def expected_pairs(scenario: Scenario, infos: list[dict[str, Any]]) -> dict[str, set[str]]:
    """url -> the vantages that were to measure it: each folder's shard of the scenario's targets
    (run.json "shard") from each of its campaign's vantages ("campaign_vantages" where the run
    measured only some, else every vantage of the lab). Shards of one campaign add up to all."""
    out: dict[str, set[str]] = {}
    for info in infos:
        index, count = info.get("shard") or (1, 1)
        vantages = info.get("campaign_vantages") or info["vantages"]
        for t in shard_targets(scenario.targets, index, count):
            out.setdefault(t.url, set()).update(vantages)
    return out


def run_capabilities(infos: list[dict[str, Any]]) -> Capabilities:
    """What the folders' probe type measures: run.json's ``probe_capabilities``, else (a folder
    written before probes declared them) the installed probe of that name's. Unknown, they are the
    web probe's: every stage is expected, so what a probe could not see fails rather than passes.
    Folders of different probe types are not one run."""
    kinds = {(i.get("probe") or "web") for i in infos}
    if len(kinds) > 1:
        raise ResultsError(f"these folders hold measurements of different probe types ({', '.join(sorted(kinds))}); "
                           "score each on its own, or compare them with `harness compare`")
    doc = infos[0].get("probe_capabilities")
    if isinstance(doc, dict):
        return Capabilities.from_json(doc)
    return installed_capabilities(kinds.pop()) or WEB


@dataclass
class RunOracle:
    """What a campaign was to measure, and the oracle's expectation of each (vantage, target)."""

    scenario: Scenario
    sites: dict[str, IPv4Address]
    vantages: list[str]
    caps: Capabilities
    expectations: dict[tuple[str, str], Expectation]
    wanted: list[tuple[str, str]]  # the expected pairs the campaign was to measure
    errors: list[dict[str, Any]] = field(default_factory=list)  # the campaign's (run.json)
    infos: list[dict[str, Any]] = field(default_factory=list)
    probe: str = "web"

    def at_ooni_level(self) -> RunOracle:
        """The same oracle for OONI's blocking/accessible (harness.calls): what OONI's classic analysis
        sees of what this probe measured, each expectation as the OONI class it implies."""
        from harness.calls import OONI_VIEW, as_ooni_expectation

        caps = self.caps.meet(OONI_VIEW)
        exp = {k: as_ooni_expectation(e, k[1]) for k, e in expected_verdicts(self.scenario, self.sites, caps).items()}
        return replace(self, caps=caps, expectations=exp, wanted=[k for k in self.wanted if k in exp])

    def scored(self, rows: list[VerdictRow], techniques: tuple[str, ...] = TECHNIQUES) -> ScoredRun:
        """The score of ``rows`` (one per measured pair, a no_measurement row for each pair of
        ``wanted`` without one), with collateral damage and effectiveness."""
        rows = rows + unmeasured_rows(self.expectations, {(r.vantage, r.url) for r in rows}, self.wanted,
                                      self.errors)
        rows.sort(key=lambda r: (r.url, r.vantage))
        measured = {(r.vantage, r.url) for r in rows}
        rules = {k: e.rule for k, e in self.expectations.items()}
        expected = {k: e.verdict for k, e in self.expectations.items() if k in measured}
        observed = {(r.vantage, r.url): r.observed for r in rows}
        return ScoredRun(scenario=self.scenario, vantages=self.vantages, score=score(rows, techniques),
                         impact_expected=impact(self.scenario, self.sites, expected, rules),
                         impact_observed=impact(self.scenario, self.sites, observed, rules),
                         probe=self.probe, capabilities=self.caps, infos=self.infos)


def folder_scenario(folder: Path, infos: list[dict[str, Any]]) -> Scenario:
    """The scenario a results folder measured: its copy of the scenario file, with the targets
    run.json records when the run measured others than the file's (`harness run --targets`)."""
    scenario = load_scenario(Path(folder) / "scenario.yaml")
    recorded = {tuple(i["targets"]) if isinstance(i.get("targets"), list) else None for i in infos}
    if len(recorded) > 1:
        raise ResultsError("these folders measured different targets (run.json \"targets\"): score each on its own")
    urls = recorded.pop()
    if urls is None:
        return scenario
    try:
        return scenario.with_targets([Target.parse(u) for u in urls])
    except NetlabError as exc:
        raise ResultsError(f"{folder}/run.json: targets: {exc}") from None


def run_oracle(dirs: list[Path], scenario: Scenario | None = None) -> RunOracle:
    """The oracle of results folders (checked by read_run_infos first)."""
    infos = read_run_infos(dirs)
    scenario = scenario or folder_scenario(dirs[0], infos)
    sites = {k: IPv4Address(v) for k, v in infos[0]["site_addresses"].items()}
    caps = run_capabilities(infos)
    expectations = expected_verdicts(scenario, sites, caps)
    wanted = expected_pairs(scenario, infos)
    return RunOracle(scenario, sites, infos[0]["vantages"], caps, expectations,
                     [k for k in expectations if k[0] in wanted.get(k[1], ())],
                     [e for i in infos for e in i.get("errors") or []], infos, infos[0].get("probe") or "web")


def score_results(dirs: list[Path], fingerprint_files: list[Path] | None = None,
                  scenario: Scenario | None = None) -> ScoredRun:
    """Score results folders. ``scenario``: the one already loaded for the run, if there is one
    (a 50,000-target scenario costs tens of MB to load twice); else the folders' copy.

    Every (vantage, target) the campaign was to measure gets a row: a pair without a measurement
    is a no_measurement mismatch (why: the campaign's errors in run.json), so a run that measured
    little or nothing never scores as a pass."""
    oracle = run_oracle(dirs, scenario)
    rows = verdict_rows(measurement_files(dirs), oracle.expectations,
                        load_fingerprints(fingerprint_files, declared_fingerprints(oracle.scenario)),
                        expected=[], errors=oracle.errors)
    return oracle.scored(rows)


def write_verdicts(out_dir: Path, run: ScoredRun) -> None:
    with open(out_dir / "verdicts.jsonl", "w") as f:
        for r in run.score.rows:
            f.write(json.dumps(r.to_json()) + "\n")
    (out_dir / "score.json").write_text(json.dumps({
        **run.score.to_json(),
        "impact": {isp: {"observed": run.impact_observed[isp].to_json(), "expected": run.impact_expected[isp].to_json()}
                   for isp in run.impact_observed}}, indent=1))
