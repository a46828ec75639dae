"""harness score: re-score saved measurements; several folders (shards) merge into one run."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from rich.console import Console

from harness.cli.common import EXIT_MISMATCH
from harness.report import print_report
from harness.results import score_results


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("score", help="score saved results against the ground truth",
                       description="Analyse the measurements of one or more results folders (e.g. the "
                       "shards of one campaign) and score the verdicts against the scenario's oracle.",
                       epilog="examples:\n  harness score results/demo-20261129-101500\n"
                       "  harness score shard-1 shard-2 shard-3 --check\n\n"
                       "Each folder is scored for its own shard's targets; a (vantage, target) found in two "
                       "folders is an error.\nExit codes: 0 ok, 1 mismatches or nothing scored (--check), "
                       "2 bad input, 3 the run ended in a lab fault.",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("results", nargs="+", type=Path, help="results folder(s) written by `harness run`")
    p.add_argument("--check", action="store_true", help="exit 1 on any mismatch, or if nothing was scored "
                   "(an expected verdict without a measurement is a mismatch)")
    p.add_argument("--json", action="store_true", help="print the score as JSON")
    p.add_argument("--fingerprints", type=Path, action="append", help="extra blockpage fingerprint file")
    p.set_defaults(func=run)


def run(args: argparse.Namespace, console: Console) -> int:
    scored = score_results(args.results, args.fingerprints)
    if args.json:
        print(json.dumps({**scored.score.to_json(), "verdicts": [r.to_json() for r in scored.score.rows]},
                         indent=1))
    else:
        print_report(console, scored)
    return EXIT_MISMATCH if args.check and not scored.score.passed else 0
