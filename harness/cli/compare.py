"""harness compare: two runs of one scenario side by side (two probe types, two versions of one):
each side's precision and recall per technique against the ground truth, every verdict that
differs, and exit 1 on a regression (B wrong where A was right)."""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from harness.cli import verb_help
from harness.cli.common import EXIT_MISMATCH
from harness.results import ScoredRun, score_results
from harness.score import VerdictRow
from netlab.errors import UsageError

EPILOG = """examples:
  harness run scenarios/demo.yaml --probe tcp --probe web --out results/ab
  harness compare results/ab/tcp results/ab/web
  harness compare results/web-v1 results/web-v2 --json

Each side is scored against the oracle for its own probe type (what that probe can see), so a dns
probe is not blamed for a TCP block. A row differs when the two sides' verdicts differ; it is a
regression when A matched its expectation and B does not (also when B has no measurement).
Exit codes: 0 no regression, 1 a regression, 2 bad input (not two runs of one scenario), 3 a side
ended in a lab fault."""


@dataclass(frozen=True)
class Difference:
    vantage: str
    url: str
    a: VerdictRow | None
    b: VerdictRow | None

    @property
    def regression(self) -> bool:
        return self.a is not None and self.a.matches and (self.b is None or not self.b.matches)

    def to_json(self) -> dict[str, Any]:
        return {"vantage": self.vantage, "url": self.url, "regression": self.regression,
                "a": self.a.to_json() if self.a else None, "b": self.b.to_json() if self.b else None}


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("compare", help=verb_help("compare"),
                       description="Score two results folders of the same scenario (e.g. two probe types, or "
                       "two versions of one) and show, per technique, each side's precision and recall, then "
                       "every (vantage, target) whose verdicts differ.",
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("a", type=Path, metavar="RESULTS_A", help="results folder of the baseline")
    p.add_argument("b", type=Path, metavar="RESULTS_B", help="results folder of the candidate")
    p.add_argument("--json", action="store_true", help="print the comparison as JSON")
    p.add_argument("--fingerprints", type=Path, action="append", help="extra blockpage fingerprint file")
    p.set_defaults(func=run)


def differences(a: ScoredRun, b: ScoredRun) -> list[Difference]:
    rows_a = {(r.vantage, r.url): r for r in a.score.rows}
    rows_b = {(r.vantage, r.url): r for r in b.score.rows}
    out = []
    for key in sorted(rows_a.keys() | rows_b.keys(), key=lambda k: (k[1], k[0])):
        ra, rb = rows_a.get(key), rows_b.get(key)
        if ra is None or rb is None or ra.label != rb.label or ra.matches != rb.matches:
            out.append(Difference(key[0], key[1], ra, rb))
    return out


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{x:.0%}"


def _cell(r: VerdictRow | None) -> str:
    if r is None:
        return "[dim]not expected[/]"
    exp = r.expected.verdict.value if r.expected else "?"
    return f"[green]{r.label}[/]" if r.matches else f"[bold red]✗ {r.label}[/] [dim]({exp})[/]"


def run(args: argparse.Namespace, console: Console) -> int:
    if args.a.resolve() == args.b.resolve():
        raise UsageError(f"compare two different results folders ({args.a} is given twice)")
    a, b = score_results([args.a], args.fingerprints), score_results([args.b], args.fingerprints)
    if a.scenario.name != b.scenario.name:
        raise UsageError(f"{args.a} is a run of {a.scenario.name}, {args.b} of {b.scenario.name}: compare two runs "
                         "of one scenario")
    diffs = differences(a, b)
    regressions = [d for d in diffs if d.regression]
    if args.json:
        print(json.dumps({"a": {"results": str(args.a), "probe": a.probe, **a.score.to_json()},
                          "b": {"results": str(args.b), "probe": b.probe, **b.score.to_json()},
                          "differences": [d.to_json() for d in diffs], "regressions": len(regressions)}, indent=1))
        return EXIT_MISMATCH if regressions else 0
    name_a, name_b = f"A ({a.probe}: {args.a})", f"B ({b.probe}: {args.b})"
    t = Table(title="Precision and recall per technique against the ground truth")
    for col in ("technique", "A precision", "A recall", "B precision", "B recall"):
        t.add_column(col, justify="left" if col == "technique" else "right")
    for tech in a.score.techniques:
        ta, tb = a.score.techniques[tech], b.score.techniques[tech]
        if ta.tp + ta.fp + ta.fn + tb.tp + tb.fp + tb.fn:
            t.add_row(tech, _pct(ta.precision), _pct(ta.recall), _pct(tb.precision), _pct(tb.recall))
    console.print(t)
    for label, s in ((name_a, a.score), (name_b, b.score)):
        console.print(f"{label}: {s.scored - len(s.mismatches)}/{s.scored} match ({s.accuracy:.1%})", highlight=False)
    if diffs:
        d = Table(title=f"{len(diffs)} verdict(s) differ (✗ = differs from that side's ground truth, expected in "
                  "brackets)")
        for col in ("vantage", "target", "A", "B", ""):
            d.add_column(col)
        for x in diffs:
            d.add_row(x.vantage, x.url, _cell(x.a), _cell(x.b), "[bold red]regression[/]" if x.regression else "")
        console.print(d)
    else:
        console.print("the two runs give the same verdicts")
    if regressions:
        console.print(f"[bold red]{len(regressions)} regression(s): B is wrong where A was right[/]")
        return EXIT_MISMATCH
    return 0
