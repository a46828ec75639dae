"""harness score: re-score saved measurements; several folders (shards) merge into one run. Also
scores other detectors: foreign OONI measurements (--scenario/--measurements) and analysis
programs run over a run's measurements (--analysis); harness.calls."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from rich.console import Console

from harness.cli import verb_help
from harness.cli.common import EXIT_MISMATCH
from harness.report import print_report
from harness.results import ScoredRun, score_results
from netlab.errors import UsageError

EPILOG = """examples:
  harness score results/demo-20261129-101500
  harness score shard-1 shard-2 shard-3 --check
  harness score --scenario scenarios/demo.yaml --measurements ooniprobe.jsonl --check
  harness score --scenario scenarios/demo.yaml --measurements isp-a.jsonl --vantage isp-a
  harness score results/demo --analysis "python3 examples/analysis/my_detector.py"
  harness score results/demo --analysis "my-tool --input {}"     {} is the measurements.jsonl path

Each folder is scored for its own shard's targets; a (vantage, target) found in two folders is an
error. Foreign measurements (OONI web_connectivity, from any tool run inside the lab) are scored
through their blocking/accessible keys, each by its input and its vantage (--vantage, else the
vantage whose client address is its probe_ip). An analysis program reads the measurements (JSON
lines on stdin, or the path in place of {}) and writes one JSON line per measurement:
{"measurement_uid": ..., "verdict": "dns.nxdomain"} or {"measurement_uid": ..., "blocking": "dns",
"accessible": false}; OONI pairs are scored at OONI's granularity (docs/scoring-detectors.md).
Exit codes: 0 ok, 1 mismatches or nothing scored (--check), 2 bad input (also a missing, unknown or
malformed line of the analysis, named by measurement_uid), 3 the run ended in a lab fault, or the
analysis program crashed."""


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("score", help=verb_help("score"),
                       description="Analyse the measurements of one or more results folders (e.g. the "
                       "shards of one campaign) and score the verdicts against the scenario's oracle; or score "
                       "another detector's calls: foreign OONI measurements, or an analysis program's output.",
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("results", nargs="*", type=Path, help="results folder(s) written by `harness run`")
    p.add_argument("--check", action="store_true", help="exit 1 on any mismatch, or if nothing was scored "
                   "(an expected verdict without a measurement is a mismatch)")
    p.add_argument("--json", action="store_true", help="print the score as JSON")
    p.add_argument("--fingerprints", type=Path, action="append", help="extra blockpage fingerprint file")
    p.add_argument("--scenario", type=Path, help="with --measurements: the scenario of the lab they were made in")
    p.add_argument("--measurements", type=Path, metavar="FILE.jsonl",
                   help="OONI web_connectivity measurements made by any tool inside the lab (needs --scenario)")
    p.add_argument("--vantage", help="with --measurements: the vantage all of them were made from (default: "
                   "by each measurement's probe_ip)")
    p.add_argument("--analysis", metavar="CMD", help="score this program's calls on the folders' measurements "
                   "instead of the lab's own analysis")
    p.add_argument("--analysis-timeout", type=float, default=600.0, metavar="SECONDS",
                   help="give the analysis program this long (default 600)")
    p.set_defaults(func=run)


def scored_from_args(args: argparse.Namespace) -> ScoredRun:
    if args.measurements is not None or args.scenario is not None:
        if args.measurements is None or args.scenario is None or args.results or args.analysis:
            raise UsageError("--measurements and --scenario go together, without results folders or --analysis")
        from harness.calls import score_measurements

        return score_measurements(args.scenario, args.measurements, args.vantage)
    if args.vantage:
        raise UsageError("--vantage goes with --measurements")
    if not args.results:
        raise UsageError("give results folder(s), or --scenario and --measurements")
    if args.analysis is not None:
        from harness.calls import score_analysis

        return score_analysis(args.results, args.analysis, args.analysis_timeout)
    return score_results(args.results, args.fingerprints)


def run(args: argparse.Namespace, console: Console) -> int:
    scored = scored_from_args(args)
    if args.json:
        print(json.dumps({**scored.score.to_json(), "verdicts": [r.to_json() for r in scored.score.rows]},
                         indent=1))
    else:
        print_report(console, scored)
    return EXIT_MISMATCH if args.check and not scored.score.passed else 0
