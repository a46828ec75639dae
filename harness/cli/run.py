"""harness run: measure every target from every vantage, print verdicts and the score."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from harness.analysis import load_fingerprints
from harness.campaign import DEFAULT_CONCURRENCY, CampaignConfig, shard_targets
from harness.cli import verb_help
from harness.cli.common import (
    EXIT_LAB,
    EXIT_MISMATCH,
    add_backend,
    add_name,
    quiet_default,
    stderr_console,
)
from harness.report import print_report
from harness.runner import RunOutcome, measure_and_score
from harness.testlist import Skipped, read_test_list, scenario_with_targets, select_targets
from netlab.backends import get_backend
from netlab.backends.base import RunningLab, read_state
from netlab.capabilities import capabilities_of
from netlab.compile import compile_lab
from netlab.errors import LabFault, NetlabError, UsageError
from netlab.interrupts import raise_if_interrupted, run_to_end
from netlab.loader import load_scenario
from netlab.model import Scenario
from probes.base import load_probe

# A web measurement holds up to four sockets at once (two resolvers, TCP, TLS): 256 in flight stay
# under the common soft limit of 1024 open files per process.
MAX_CONCURRENCY = 256


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "run", help=verb_help("run"),
        description="Measure every target of the scenario from every ISP vantage and the control "
        "vantage, write measurements (OONI JSON, one per line), print the verdict table and the score "
        "against the scenario's ground truth. Uses a lab brought up by `harness up` if one of that "
        "name runs; otherwise brings one up and tears it down afterwards.",
        epilog="examples:\n  harness run scenarios/demo.yaml\n  harness run scenarios/demo.yaml --check "
        "--out results/demo\n  harness run big.yaml --shard 2/4 --concurrency 64\n"
        "  harness run scenarios/demo.yaml --targets lists/zz.csv   replay a Citizen Lab test list\n"
        "  harness run scenarios/demo.yaml --json > run.json          machine-readable summary\n"
        "  harness run scenarios/demo.yaml --probe dns --probe web --out results/ab   both probe types on one lab:\n"
        "      results/ab/dns and results/ab/web, one complete results folder each (`harness compare` them)",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("scenario", help="scenario file (YAML)")
    add_name(p)
    add_backend(p)
    p.add_argument("--probe", action="append", dest="probes", metavar="PROBE",
                   help="probe type to run (default: web); repeat it to run several on the same lab, one after "
                   "another: each writes its own results folder, OUT/<probe>")
    p.add_argument("--concurrency", type=int, default=DEFAULT_CONCURRENCY,
                   help=f"measurements in flight per vantage (default {DEFAULT_CONCURRENCY})")
    p.add_argument("--out", type=Path, help="results folder (default: results/<lab>-<time>)")
    p.add_argument("--check", action="store_true", help="exit 1 if any verdict differs from the oracle "
                   "or the scenario's expect")
    p.add_argument("--shard", default="1/1", help="measure only slice I of N of the targets (e.g. 2/4)")
    p.add_argument("--fingerprints", type=Path, action="append", help="extra blockpage fingerprint file")
    p.add_argument("--targets", type=Path, metavar="FILE", help="measure the URLs of a Citizen Lab test list "
                   "(CSV: url,category_code,...) instead of the scenario's targets; URLs whose host is not a "
                   "site of the scenario are reported as skipped, never measured")
    p.add_argument("--json", action="store_true", help="print a JSON summary (score, verdicts, skipped "
                   "targets) on stdout; progress goes to stderr")
    p.add_argument("--quiet", action="store_true", default=quiet_default(),
                   help="no progress bar (default when CI=true)")
    p.set_defaults(func=run)


def parse_shard(text: str) -> tuple[int, int]:
    m = re.fullmatch(r"(\d+)/(\d+)", text.strip())
    if not m or not 1 <= int(m.group(1)) <= int(m.group(2)):
        raise NetlabError(f"--shard {text!r}: expected I/N with 1 <= I <= N, e.g. 2/4")
    return int(m.group(1)), int(m.group(2))


def run(args: argparse.Namespace, console: Console) -> int:
    # Everything that can be refused is checked before a lab starts: scenario, probe, options, --out.
    scenario = load_scenario(args.scenario)
    args.probes = list(dict.fromkeys(args.probes or ["web"]))
    for probe in args.probes:
        check_probe(probe)
    load_fingerprints(args.fingerprints)  # a bad --fingerprints file is refused now, not after the campaign
    shard = parse_shard(args.shard)
    if not 1 <= args.concurrency <= MAX_CONCURRENCY:
        raise UsageError(f"--concurrency {args.concurrency}: must be from 1 to {MAX_CONCURRENCY} "
                         "(measurements in flight per vantage)")
    name = args.name or scenario.name
    out = args.out or Path("results") / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"
    check_out_dir(out)
    if args.json:
        console = stderr_console()
    skipped: list[Skipped] = []
    if args.targets:
        scenario, skipped = _from_test_list(scenario, args.targets)
        for s in skipped:
            console.print(f"[dim]skipped[/] {s.url} (line {s.line}): {s.reason}", highlight=False)
    owned: list[RunningLab] = []
    try:
        return _run(args, console, scenario, skipped, name, out, shard, owned)
    except KeyboardInterrupt:
        # One signal landing in the few steps between _run's `finally:` and its teardown's deferral
        # skips that teardown (seen: a whole lab left running): what is still owned goes down here.
        run_to_end(lambda: _down_owned(owned, name, args, console))
        raise


def check_probe(name: str) -> None:
    """An unknown probe type, or one that declares no capabilities (the oracle could not tell what
    it can see), is a usage error before any lab starts."""
    try:
        capabilities_of(load_probe(name))
    except KeyError as exc:
        raise UsageError(f"--probe: {exc.args[0]} (see `harness probes list`)") from None


def check_out_dir(out: Path) -> None:
    """--out must be a folder this run can write: refused before the lab starts, not after."""
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out}: exists and is not a folder")
    parent = next((p for p in [out, *out.parents] if p.exists()), Path("."))
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise UsageError(f"--out {out}: cannot create it ({parent} is not a writable folder)")


def _from_test_list(scenario: Scenario, path: Path) -> tuple[Scenario, list[Skipped]]:
    targets, skipped = select_targets(read_test_list(path), scenario)
    if not targets:
        raise NetlabError(f"{path}: no URL of the test list is a site of scenario {scenario.name} "
                          f"({len(skipped)} skipped); the lab only measures names it serves")
    return scenario_with_targets(scenario, [t.url for t in targets]), skipped


def attach_or_up(args: argparse.Namespace, console: Console, scenario: Scenario, name: str,
                 owned: list[RunningLab]) -> RunningLab:
    """The running lab of that name if it was built from this scenario by this backend (else
    LabMismatch, exit 2), or a new lab, appended to ``owned`` the moment it exists so the caller's
    `finally` tears it down whenever an interrupt lands. A faulty running lab is a lab fault."""
    state = read_state(name)
    if state is not None:
        state.check_same_lab(args.scenario, args.backend)
    backend = get_backend(args.backend)
    if state is None:
        plan = compile_lab(scenario, name, host=backend.host_capabilities())
        owned.append(backend.up(plan, progress=None if args.quiet else lambda m: console.print(f"  {m}")))
        return owned[-1]
    lab = backend.attach(name)
    dead = lab.dead_services()
    if dead:
        raise LabFault(f"the running lab {name} is faulty: " + "; ".join(map(str, dead))
                       + f"\n`harness down {name}` removes it")
    console.print(f"using the running lab {name}")
    return lab


def _run(args: argparse.Namespace, console: Console, scenario: Scenario, skipped: list[Skipped], name: str,
         out: Path, shard: tuple[int, int], owned: list[RunningLab]) -> int:
    t0 = time.monotonic()
    # One probe type writes to OUT; several share the lab, one after another, each into OUT/<probe>.
    outs = {p: out if len(args.probes) == 1 else out / p for p in args.probes}
    outcomes: dict[str, RunOutcome] = {}
    try:
        lab = attach_or_up(args, console, scenario, name, owned)
        up_seconds = time.monotonic() - t0
        total = len(shard_targets(scenario.targets, *shard)) * len(lab.state.vantages)
        for probe in args.probes:
            config = CampaignConfig(probe=probe, concurrency=args.concurrency, shard=shard)
            raise_if_interrupted()
            with _progress(console, total, args.quiet) as advance:
                outcomes[probe] = measure_and_score(lab, scenario, outs[probe], config, backend=args.backend,
                                                    fingerprints=args.fingerprints,
                                                    on_result=advance, record_targets=bool(args.targets),
                                                    up_seconds=up_seconds)
            if outcomes[probe].scored is None:
                break  # a lab fault: the lab cannot be trusted for the next probe either
    finally:
        run_to_end(lambda: _down_owned(owned, name, args, console))
    raise_if_interrupted()
    if args.json:
        summaries = {p: json_summary(o, skipped) for p, o in outcomes.items()}
        print(json.dumps(summaries[args.probes[0]] if len(args.probes) == 1 else {"probes": summaries}, indent=1))
    if args.targets:
        (out / "skipped-targets.json").write_text(json.dumps([s.to_json() for s in skipped], indent=1))
    codes = [_report_outcome(args, console, p, o, len(args.probes) > 1) for p, o in outcomes.items()]
    return max(codes)


def _down_owned(owned: list[RunningLab], name: str, args: argparse.Namespace, console: Console) -> None:
    """Tear down the labs this run brought up, each forgotten once it is down (so a retry skips it)."""
    while owned:
        t1 = time.monotonic()
        owned[0].down()
        owned.pop(0)
        if not args.quiet:
            console.print(f"  lab {name} down in {time.monotonic() - t1:.2f}s")


def _report_outcome(args: argparse.Namespace, console: Console, probe: str, outcome: RunOutcome,
                    several: bool) -> int:
    """Print one probe type's outcome; its exit code."""
    result, out = outcome.campaign, outcome.out_dir
    if several and not args.json:
        console.rule(f"probe {probe}")
    if outcome.scored is None:
        console.print("[bold red]lab fault:[/] during the run:\n  " + "\n  ".join(result.lab_faults)
                      + f"\nthe measurements in {out} cannot be trusted and were not scored", highlight=False)
        return EXIT_LAB
    scored = outcome.scored
    if not args.json:
        print_report(console, scored)
    for e in result.errors:
        console.print(f"[red]probe error[/] {e['vantage']} {e.get('url')}: {e.get('error')}")
    console.print(f"{result.measurements} measurements in {result.seconds:.2f}s "
                  f"({result.measurements / max(result.seconds, 1e-9):.1f}/s) -> {out}")
    if args.check and not scored.score.passed:
        return EXIT_MISMATCH
    return 0


def json_summary(outcome: RunOutcome, skipped: list[Skipped]) -> dict[str, Any]:
    result = outcome.campaign
    summary: dict[str, Any] = {"out": str(outcome.out_dir), "measurements": result.measurements,
                     "seconds": round(result.seconds, 3), "errors": result.errors, "lab_faults": result.lab_faults,
                     "skipped_targets": [s.to_json() for s in skipped], "score": None, "verdicts": []}
    if outcome.scored is not None:
        summary["score"] = outcome.scored.score.to_json()
        summary["verdicts"] = [r.to_json() for r in outcome.scored.score.rows]
    return summary


@contextlib.contextmanager
def _progress(console: Console, total: int, quiet: bool) -> Iterator[Callable[[str, dict[str, Any]], None]]:
    if quiet:
        yield lambda _v, _l: None
        return
    with Progress(TextColumn("measuring"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console, transient=True) as bar:
        task = bar.add_task("measure", total=total)
        yield lambda _v, _l: bar.advance(task)
