"""Terminal output: the verdict table (targets x vantages), the score, and every mismatch."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from harness.calls import OoniCall
from harness.results import ScoredRun
from harness.score import NO_MEASUREMENT_REASONS, Score
from netlab.model import CONTROL
from netlab.verdict import Verdict

MAX_MISMATCHES_SHOWN = 200
MAX_TABLE_TARGETS = 500  # larger runs print the score and mismatches, not the whole matrix
FAMILY_STYLE = {"ok": "green", "dns": "magenta", "tcp": "red", "tls": "yellow", "http": "cyan",
                "quic": "bright_magenta", "throttled": "blue", "site_down": "dim", "control_failed": "bold red",
                "no_measurement": "bold red"}


def _style(v: Verdict | OoniCall) -> str:
    return FAMILY_STYLE.get(v.technique, "white")


def verdict_table(score: Score, vantages: list[str], collateral: set[tuple[str, str]] | None = None) -> Table:
    urls = list(dict.fromkeys(r.url for r in score.rows))
    cells = {(r.url, r.vantage): r for r in score.rows}
    collateral = collateral or set()
    title = "Verdicts (✗ = differs from ground truth, expected in brackets"
    title += "; † = collateral damage)" if collateral else ")"
    table = Table(title=title, show_lines=False)
    table.add_column("target", no_wrap=True)
    cols = [v for v in vantages if v != CONTROL] + [CONTROL]
    for v in cols:
        table.add_column(v, no_wrap=True)
    for url in urls:
        row = [url]
        for v in cols:
            r = cells.get((url, v))
            if r is None:
                row.append("[dim]-[/]")
            elif r.matches:
                mark = " †" if (v, url) in collateral else ""
                row.append(f"[{_style(r.observed)}]{r.observed.value}{mark}[/]")
            else:
                exp = r.expected.verdict.value if r.expected else "?"
                row.append(f"[bold red]✗ {r.label}[/] [dim]({exp})[/]")
        table.add_row(*row)
    return table


def score_tables(score: Score) -> list[Table]:
    tech = Table(title="Precision and recall per technique")
    for col in ("technique", "precision", "recall", "tp", "fp", "fn"):
        tech.add_column(col, justify="right" if col != "technique" else "left")
    for name, ts in score.techniques.items():
        if ts.tp + ts.fp + ts.fn == 0:
            continue
        tech.add_row(name, _pct(ts.precision), _pct(ts.recall), str(ts.tp), str(ts.fp), str(ts.fn))
    labels = sorted({e for e, _ in score.confusion} | {o for _, o in score.confusion})
    conf = Table(title="Confusion matrix (rows: expected, columns: observed)")
    conf.add_column("expected \\ observed")
    for lab in labels:
        conf.add_column(lab, justify="right")
    for e in labels:
        conf.add_row(e, *[_cell(score.confusion.get((e, o), 0), e == o) for o in labels])
    return [tech, conf]


def _cell(n: int, diagonal: bool) -> str:
    if not n:
        return "[dim]·[/]"
    return f"[green]{n}[/]" if diagonal else f"[bold red]{n}[/]"


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{x:.0%}"


def impact_table(run: ScoredRun) -> Table | None:
    services = sorted({s for i in run.impact_expected.values() for s in i.effectiveness})
    if not services and not any(i.collateral for i in run.impact_expected.values()):
        return None
    t = Table(title="Enforcement per ISP (measured, oracle in brackets)")
    t.add_column("ISP")
    t.add_column("blocked")
    t.add_column("collateral damage (blocked, but no rule meant it)")
    for s in services:
        t.add_column(f"{s}: effectiveness")
    for isp, obs in run.impact_observed.items():
        exp = run.impact_expected[isp]
        coll = f"{len(obs.collateral)} ({len(exp.collateral)})"
        if obs.collateral:
            coll += ": " + ", ".join(obs.collateral[:4]) + (" ..." if len(obs.collateral) > 4 else "")
        eff = [f"{obs.effectiveness.get(s, 0):.0%} ({exp.effectiveness.get(s, 0):.0%})" for s in services]
        t.add_row(isp, f"{len(obs.blocked)} ({len(exp.blocked)})", coll, *eff)
    return t


def print_report(console: Console, run: ScoredRun, *, verbose_score: bool = True) -> None:
    score = run.score
    collateral = {(isp, url) for isp, i in run.impact_observed.items() for url in i.collateral}
    targets = len({r.url for r in score.rows})
    if targets <= MAX_TABLE_TARGETS:
        console.print(verdict_table(score, run.vantages, collateral))
    else:  # nobody reads a matrix this long, and rendering it would cost more than the run
        console.print(f"{targets} targets: the verdict matrix is in verdicts.jsonl (and `harness report`); "
                      "mismatches are listed below")
    n, bad = score.scored, len(score.mismatches)
    colour = "green" if score.passed else "bold red"
    console.print(f"[{colour}]Score: {n - bad}/{n} verdicts match the ground truth "
                  f"({score.accuracy:.1%}), {bad} mismatch(es)[/]")
    if not n:
        console.print("[bold red]Nothing was scored: these results hold no expected verdict, so they pass "
                      "nothing[/]")
    unmeasured = score.unmeasured
    if unmeasured:
        console.print(f"[bold red]{sum(unmeasured.values())} expected verdict(s) have no measurement: "
                      + ", ".join(f"{k} {unmeasured[k]}" for k in NO_MEASUREMENT_REASONS if unmeasured[k])
                      + " (mismatches, listed below)[/]")
    if verbose_score:
        for t in score_tables(score):
            console.print(t)
    table = impact_table(run)
    if table is not None:
        console.print(table)
        if not run.impact_matches:
            console.print("[bold red]collateral damage or effectiveness differ from the oracle's[/]")
    for r in score.mismatches[:MAX_MISMATCHES_SHOWN]:
        exp = r.expected
        console.print(f"[bold red]mismatch[/] {r.vantage} {r.url}: observed [bold]{r.label}[/] "
                      f"({r.why}); expected [bold]{exp.verdict.value if exp else '?'}[/] "
                      f"({exp.reason if exp else ''}); measurement {r.measurement_uid or '-'}")
    if len(score.mismatches) > MAX_MISMATCHES_SHOWN:
        console.print(f"... and {len(score.mismatches) - MAX_MISMATCHES_SHOWN} more mismatches in verdicts.jsonl")
