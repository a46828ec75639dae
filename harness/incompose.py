"""The two jobs of a `docker compose up` run that live outside the lab hosts (harness.compose_file).

``python3 -m harness.incompose lab SCENARIO --lab NAME --lab-dir /lab/NAME --ready FILE``: compile
the scenario into the lab folder (configs, certificates, hosts.json, state.json: what the compose
backend writes for `harness run`), write FILE, then be the lab (netlab.services.hostd) until stopped.
``python3 -m harness.incompose campaign SCENARIO --lab-dir /lab/NAME --results /results``: once every
host is ready, measure and score exactly as `harness run` does (harness.runner.measure_and_score:
the scenario's probe settings, the campaign, OONI's keys, the verdicts), print the verdict table and
score, and exit 0, 1 on any mismatch, or 3 on a lab fault.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rich.console import Console

from harness.campaign import CampaignConfig
from harness.cli.common import console
from harness.report import print_report
from harness.runner import measure_and_score
from netlab.backends.base import STATE_FILE, LabState, wait_until, write_lab_files
from netlab.backends.compose import READY_TIMEOUT, ComposeLab, lab_state, wait_for_hosts
from netlab.backends.kernel import probe_host
from netlab.compile import compile_lab
from netlab.errors import LabError
from netlab.loader import load_scenario
from netlab.services import hostd

BACKEND = "compose-file"  # as run.json records it
EXIT_MISMATCH, EXIT_LAB = 1, 3
LAB_WAIT = 300.0  # the lab service compiles the scenario (certificates: seconds for big ones)


def lab(args: argparse.Namespace) -> int:
    scenario = load_scenario(args.scenario)
    plan = compile_lab(scenario, args.lab, host=probe_host())
    folder = Path(args.lab_dir)
    write_lab_files(plan, folder, str(folder))
    lab_state(plan, str(folder), args.scenario).save(folder / STATE_FILE)
    ready = Path(args.ready)
    ready.parent.mkdir(parents=True, exist_ok=True)
    ready.write_text("ok\n")
    return hostd.main(["--lab-dir", str(folder)])


def campaign(args: argparse.Namespace) -> int:
    scenario = load_scenario(args.scenario)
    folder, out = Path(args.lab_dir), Path(args.results)
    if not wait_until(lambda: (folder / STATE_FILE).exists(), LAB_WAIT):
        print(f"lab fault: no {folder / STATE_FILE} after {LAB_WAIT:.0f}s", flush=True)
        return EXIT_LAB
    state = LabState.load(folder / STATE_FILE)
    print(f"campaign: waiting for {', '.join(state.hosts)}", flush=True)
    try:
        wait_for_hosts(folder, state.hosts, READY_TIMEOUT)
    except LabError as exc:
        print(f"lab fault: {exc}", flush=True)
        return EXIT_LAB
    outcome = measure_and_score(ComposeLab(state), scenario, out, CampaignConfig(probe=args.probe), backend=BACKEND)
    if outcome.scored is None:
        print("lab fault: during the run:\n  " + "\n  ".join(outcome.campaign.lab_faults), flush=True)
        return EXIT_LAB
    print_report(console(), outcome.scored)
    with open(out / "verdicts.txt", "w") as f:
        print_report(Console(file=f, width=160, color_system=None), outcome.scored)
    for e in outcome.campaign.errors:
        print(f"probe error {e['vantage']} {e.get('url')}: {e.get('error')}", flush=True)
    return EXIT_MISMATCH if outcome.scored.score.mismatches else 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="job", required=True)
    p = sub.add_parser("lab")
    p.add_argument("scenario")
    p.add_argument("--lab", required=True)
    p.add_argument("--lab-dir", required=True)
    p.add_argument("--ready", required=True, help="file to write once the lab folder is written")
    p.set_defaults(func=lab)
    p = sub.add_parser("campaign")
    p.add_argument("scenario")
    p.add_argument("--lab-dir", required=True)
    p.add_argument("--results", default="/results")
    p.add_argument("--probe", default="web")
    p.set_defaults(func=campaign)
    args = ap.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
