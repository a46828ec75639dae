"""The ``harness`` command. One module per verb; each has ``register(subparsers)`` and ``run(args)``.

Exit codes: 0 ok, 1 verdicts differ from the ground truth (with --check), 2 usage or
configuration error, 3 lab fault (a component failed: nothing can be concluded).
"""

from __future__ import annotations

import argparse
import os
import sys

from harness.cli import (
    ca,
    common,
    compare,
    compose,
    down,
    explain,
    image,
    probes,
    report,
    run,
    score,
    shell,
    status,
    up,
)
from harness.cli import exec as exec_verb
from netlab import interrupts
from netlab.errors import LabError, NetlabError, ScenarioError, UsageError

VERBS = (up, down, status, run, score, compare, explain, report, probes, compose, image, exec_verb, shell, ca)
EPILOG = """examples:
  harness run scenarios/demo.yaml            bring the demo lab up, measure, score, tear down
  harness run scenarios/demo.yaml --check    ... and exit 1 on any verdict that differs from the oracle
  harness up scenarios/demo.yaml             keep a lab up; later runs attach to it
  harness status                             list labs on this machine
  harness down --all                         remove every lab (also leftovers of a crash)
  harness score results/demo-*/              re-score saved measurements (several folders merge)
  harness score results/demo --analysis CMD  score your own analysis program's calls on a run
  harness compare results/ab/tcp results/ab/web   two runs side by side; exit 1 on a regression
  harness run scenarios/demo.yaml --targets list.csv   replay a Citizen Lab test list in the lab
  harness explain scenarios/demo.yaml        expected verdicts and each ISP's compiled dataplane (no lab)
  harness report results/demo-* -o report.html         self-contained HTML report
  harness probes list                        probe types installed (entry points harness.probes)
  harness exec demo isp-a -- curl https://news.test/   your own tool inside a lab, as a vantage sees it
  harness shell demo isp-a                   an interactive shell there
  harness run scenarios/demo.yaml --backend compose    the same lab as Docker containers
  harness compose scenarios/demo.yaml -o docker-compose.yml   ... as a file for `docker compose up`

exit codes: 0 ok, 1 mismatches (--check), 2 usage/config error, 3 lab fault"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="harness", description="A censorship measurement lab: bring up mock ISPs, measure, score.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="verb", metavar="COMMAND", required=True)
    for verb in VERBS:
        verb.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    interrupts.install()
    console = common.console()
    try:
        return int(args.func(args, console) or 0)
    except ScenarioError as exc:
        console.print(f"[bold red]scenario error:[/] {exc}", highlight=False)
        return common.EXIT_CONFIG
    except UsageError as exc:  # before LabError: a name in use is both, and nothing was started
        console.print(f"[bold red]error:[/] {exc}", highlight=False)
        return common.EXIT_CONFIG
    except LabError as exc:
        console.print(f"[bold red]lab fault:[/] {exc}", highlight=False)
        return common.EXIT_LAB
    except NetlabError as exc:
        console.print(f"[bold red]error:[/] {exc}", highlight=False)
        return common.EXIT_CONFIG
    except KeyboardInterrupt:
        console.print("[yellow]interrupted; the lab was torn down[/]")
        return 130
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
