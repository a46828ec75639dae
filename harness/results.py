"""A results folder: measurements.jsonl, run.json (what ran where), the scenario, and the
verdicts and score computed from them. Several folders (shards) score as one run."""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field, replace
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

from harness import ooni
from harness.analysis import Fingerprint, load_fingerprints
from harness.campaign import shard_targets
from harness.digest import RunDigest
from harness.errors import ResultsError
from harness.score import (
    TECHNIQUES,
    ControlSummary,
    Score,
    VerdictRow,
    iter_range,
    line_ranges,
    measured_twice,
    measurement_files,
    measurement_row,
    replace_measurements,
    score,
    unmeasured_rows,
    verdict_rows,
)
from netlab import jsonl
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


def score_and_annotate(out_dir: Path, scenario: Scenario | None = None,
                       fingerprint_files: list[Path] | None = None, digest: RunDigest | None = None) -> ScoredRun:
    """Score a run's own results folder (as ``score_results``) and, in the same pass over its
    measurements, give each its OONI keys and ``x_verdict`` (harness.ooni): every measurement is read
    once and written once, after a pass over the controls unless ``digest`` (what the campaign
    gathered of them) is given. ``measurements.jsonl`` is replaced only when scoring succeeded."""
    oracle = run_oracle([out_dir], scenario)
    path = measurement_files([out_dir])[0]
    annotator = ooni.Annotator(out_dir, digest.views if digest is not None else None)
    fingerprints = load_fingerprints(fingerprint_files, declared_fingerprints(oracle.scenario))
    tmp = path.with_suffix(".jsonl.tmp")
    try:
        if digest is not None and len(os.sched_getaffinity(0)) > 1 and path.stat().st_size >= SPLIT_BYTES:
            rows = _annotate_in_two(path, tmp, _Part(annotator, digest.controls, fingerprints, oracle.expectations))
        else:
            with open(tmp, "wb") as sink:

                def annotate(m: dict[str, Any], row: VerdictRow) -> None:
                    annotator.annotate(m, row.observed.value)
                    sink.write(jsonl.dumps(m) + b"\n")

                rows = verdict_rows([path], oracle.expectations, fingerprints, expected=[],
                                    errors=oracle.errors, on_control=annotator.add_control, on_row=annotate,
                                    controls=digest.controls if digest is not None else None)
        replace_measurements(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return oracle.scored(rows)


#: A smaller measurements.jsonl is scored and annotated in one process: a second one would cost
#: more than it saves.
SPLIT_BYTES = 64 << 20


@dataclass
class _Part:
    """What scoring and annotating a part of measurements.jsonl needs (with the campaign's digest:
    no control pass)."""

    annotator: ooni.Annotator
    controls: dict[str, ControlSummary]
    fingerprints: list[Fingerprint]
    expectations: dict[tuple[str, str], Expectation]

    def annotate(self, path: Path, start: int, end: int, out: Path) -> list[VerdictRow]:
        """Score and annotate the lines of ``path`` in bytes [start, end) into ``out``."""
        rows: list[VerdictRow] = []
        seen: dict[tuple[str, str], Path] = {}
        with open(out, "wb") as sink:
            for m in iter_range(path, start, end):
                row = measurement_row(m, self.controls, self.fingerprints, self.expectations, seen, path)
                rows.append(row)
                self.annotator.annotate(m, row.observed.value)
                sink.write(jsonl.dumps(m) + b"\n")
        return rows


#: What the second process of _annotate_in_two works on: it inherits it (fork), nothing is copied.
_SECOND: tuple[_Part, Path, int, int, Path] | None = None


def _annotate_second() -> list[VerdictRow]:
    assert _SECOND is not None
    part, path, start, end, out = _SECOND
    return part.annotate(path, start, end, out)


def _annotate_in_two(path: Path, tmp: Path, part: _Part) -> list[VerdictRow]:
    """Score and annotate ``path`` into ``tmp`` on two cores: the second half of the lines in a
    forked process, while this one does the first; the lab is idle by now, so the second core is
    free (the pass was a sixth of a 100,000-measurement run, one core busy). The lines keep their
    order; the rows are the same as in one process, a pair measured twice included."""
    global _SECOND
    (start0, end0), (start1, end1) = line_ranges(path, 2)
    second = tmp.with_suffix(".tmp2")
    _SECOND = (part, path, start1, end1, second)
    try:
        with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("fork")) as pool:
            later = pool.submit(_annotate_second)
            rows = part.annotate(path, start0, end0, tmp)
            more = later.result()
        seen = {(r.vantage, r.url) for r in rows}
        for r in more:
            if (r.vantage, r.url) in seen:
                raise measured_twice(r.vantage, r.url, path, path)
        with open(tmp, "r+b") as sink, open(second, "rb") as src:
            # In the kernel, page cache to page cache: a 100,000-measurement run's half is 3.5 GB.
            # (copy_file_range refuses a file opened to append: the offset is given instead.)
            at, left = os.fstat(sink.fileno()).st_size, os.fstat(src.fileno()).st_size
            while left > 0:
                copied = os.copy_file_range(src.fileno(), sink.fileno(), left, None, at)
                if not copied:
                    raise OSError(f"{second}: {left} bytes were not copied to {tmp}")
                at, left = at + copied, left - copied
        return rows + more
    finally:
        _SECOND = None
        second.unlink(missing_ok=True)


def write_verdicts(out_dir: Path, run: ScoredRun) -> None:
    with open(out_dir / "verdicts.jsonl", "w") as f:
        for r in run.score.rows:
            f.write(json.dumps(r.to_json()) + "\n")
    (out_dir / "score.json").write_text(json.dumps({
        **run.score.to_json(),
        "impact": {isp: {"observed": run.impact_observed[isp].to_json(), "expected": run.impact_expected[isp].to_json()}
                   for isp in run.impact_observed}}, indent=1))
