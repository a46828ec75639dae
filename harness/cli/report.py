"""harness report: a self-contained HTML report of saved results."""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

from harness.cli import verb_help
from harness.cli.common import EXIT_MISMATCH, quiet_default
from harness.errors import ResultsError
from harness.html_report import write_report
from harness.results import read_run_infos
from harness.score import iter_measurements, measurement_files

EPILOG = """examples:
  harness report results/demo-20261129-101500 -o report.html
  harness report shard-1 shard-2 shard-3 -o campaign.html --check

The page has no external assets (one file to archive or attach to a CI run): the verdict matrix
coloured by verdict family, the confusion matrix and per-technique precision/recall, and every
measurement's timeline with its OONI JSON. Expected verdicts without a measurement (probe error,
timeout, missing) are mismatches. Exit codes: 0 ok, 1 mismatches or nothing scored (--check),
2 bad input, 3 the run ended in a lab fault."""


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("report", help=verb_help("report"),
                       description="Score one or more results folders of `harness run` (shards merge) and "
                       "write the verdicts, the score and every measurement's timeline as one HTML file.",
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("results", nargs="+", type=Path, help="results folder(s) written by `harness run`")
    p.add_argument("-o", "--output", type=Path, default=Path("report.html"), help="HTML file (default report.html)")
    p.add_argument("--title", help="page title")
    p.add_argument("--check", action="store_true", help="exit 1 if any verdict differs from the ground truth")
    p.add_argument("--fingerprints", type=Path, action="append", help="extra blockpage fingerprint file")
    p.add_argument("--quiet", action="store_true", default=quiet_default(),
                   help="no progress bar (default when CI=true)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace, console: Console) -> int:
    if args.output.is_dir():
        raise ResultsError(f"-o {args.output} is a directory; give the HTML file to write, e.g. "
                           f"{args.output / 'report.html'}")
    read_run_infos(args.results)  # a bad folder or a lab fault, before counting measurements
    if args.quiet:
        scored = write_report(args.results, args.output, args.fingerprints, args.title)
    else:
        total = sum(1 for _ in iter_measurements(measurement_files(args.results)))
        with Progress(TextColumn("report"), BarColumn(), MofNCompleteColumn(), console=console,
                      transient=True) as bar:
            task = bar.add_task("report", total=total)
            scored = write_report(args.results, args.output, args.fingerprints, args.title,
                                  progress=lambda: bar.advance(task))
    bad, unmeasured = len(scored.score.mismatches), sum(scored.score.unmeasured.values())
    console.print(f"wrote {args.output} ({args.output.stat().st_size // 1024} KiB): {len(scored.score.rows)} "
                  f"verdicts, {bad} mismatch(es)" + (f", {unmeasured} without a measurement" if unmeasured else ""))
    if not scored.score.scored:
        console.print("[bold red]nothing was scored: no expected verdict in these results[/]")
    return EXIT_MISMATCH if args.check and not scored.score.passed else 0
