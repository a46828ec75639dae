"""The whole job in code: bring a lab up (or use a running one), measure, score, tear down.

Used by `harness run`, the tests and the pytest plugin; the CLI adds only progress and output.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from harness import ooni
from harness.analysis import load_fingerprints
from harness.campaign import CampaignConfig, CampaignResult, campaign_vantages, probe_context, run_campaign
from harness.results import ScoredRun, run_oracle, write_run_info, write_verdicts
from harness.streaming import LiveScorer
from netlab.backends import get_backend
from netlab.backends.base import Progress, RunningLab
from netlab.blockpage import declared_fingerprints
from netlab.compile import compile_lab
from netlab.errors import NetlabError
from netlab.interrupts import run_async, run_to_end
from netlab.loader import load_scenario
from netlab.model import CONTROL, Scenario


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
                      up_seconds: float = 0.0, record_targets: bool = False) -> RunOutcome:
    """Measure and score ``scenario`` in ``lab`` into ``out``. ``record_targets``: the scenario's
    targets are not its file's (a test list's, Scenario.with_targets): run.json records them, and
    rescoring the folder (harness.results.run_oracle) measures against them."""
    config = with_scenario_probe_settings(config, scenario)
    # Each measurement is scored, given OONI's keys and written as it arrives; what waits for the
    # test helper's pass (or for a control that never came) is written by finish().
    out.mkdir(parents=True, exist_ok=True)
    live = LiveScorer(out, load_fingerprints(fingerprints, declared_fingerprints(scenario)),
                      control=CONTROL in campaign_vantages(lab, config))
    try:
        result = run_async(run_campaign(lab, scenario, out, config, on_result=on_result, write=live.add))
        if not result.lab_faults and CONTROL in result.vantages:
            # OONI's test helper also connects to the probes' addresses: the control does, lab still up.
            control = probe_context(lab, scenario, CONTROL, config.context_overrides)
            run_async(ooni.measure_th_endpoints(lab, control.to_dict(), out, live.digest))
    except BaseException:
        live.close()
        raise
    live.digest.forget_addresses()
    write_run_info(out, scenario, {
        "lab": lab.name, "backend": backend, "scenario_name": scenario.name, "probe": config.probe,
        "shard": list(config.shard), "vantages": list(lab.state.vantages), "campaign_vantages": result.vantages,
        "site_addresses": lab.state.site_addresses, "measurements": result.measurements,
        "errors": result.errors, "lab_faults": result.lab_faults,
        "campaign_seconds": round(result.seconds, 3), "up_seconds": round(up_seconds, 3),
        **({"targets": [t.url for t in scenario.targets]} if record_targets else {})})
    copy_scenario_files(scenario, out)
    if result.lab_faults:
        live.finish({}, scored=False)  # OONI's keys need no verdicts; x_verdict stays unset
        return RunOutcome(out, result, None, up_seconds)
    oracle = run_oracle([out], scenario)
    scored = oracle.scored(live.finish(oracle.expectations))
    write_verdicts(out, scored)
    return RunOutcome(out, result, scored, up_seconds)


def with_scenario_probe_settings(config: CampaignConfig, scenario: Scenario) -> CampaignConfig:
    """The probe settings the scenario asks for (``probe:``, e.g. its test helper), under the
    caller's explicit overrides; and OONI's rule never to connect to loopback answers."""
    overrides = {"skip_loopback": True, **scenario.probe, **config.context_overrides}
    return replace(config, context_overrides=overrides)


def copy_scenario_files(scenario: Scenario, out: Path) -> None:
    """The files a scenario refers to (response bodies), beside a copy of it in ``out`` (a results
    folder, which then scores on its own with `harness score`; a test list's scenario)."""
    base = Path(scenario.source).parent
    root = out.resolve()
    for site in scenario.sites:
        if site.body_file:
            dst = out / site.body_file
            # The loader keeps body_file inside the scenario's folder; a Scenario built another way
            # must still never make a run write outside its results folder.
            if not dst.resolve().is_relative_to(root):
                raise NetlabError(f"site {site.name}: body_file {site.body_file!r} would be copied to "
                                  f"{dst.resolve()}, outside the results folder {root}")
            if dst.resolve() == (base / site.body_file).resolve():
                continue  # already there: the copy of the scenario is in its own folder
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(base / site.body_file, dst)


def run_scenario(path: str | Path, *, out: Path, name: str | None = None, backend: str = "netns",
                 config: CampaignConfig | None = None, progress: Progress | None = None,
                 fingerprints: list[Path] | None = None,
                 on_result: Callable[[str, dict[str, Any]], None] | None = None) -> RunOutcome:
    """Measure a scenario in a lab of its own: up, campaign, score, and always down."""
    scenario = load_scenario(path)
    t0 = time.monotonic()
    lab_backend = get_backend(backend)
    lab = lab_backend.up(compile_lab(scenario, name or scenario.name, host=lab_backend.host_capabilities()),
                         progress=progress)
    up = time.monotonic() - t0
    try:
        outcome = measure_and_score(lab, scenario, out, config or CampaignConfig(), backend=backend,
                                    fingerprints=fingerprints, on_result=on_result, up_seconds=up)
    finally:
        t1 = time.monotonic()
        run_to_end(lab.down)
        down = time.monotonic() - t1
    outcome.down_seconds = down
    return outcome
