"""The ``harness`` command. One module per verb; each has ``register(subparsers)`` and ``run(args)``.

Exit codes: 0 ok, 1 verdicts differ from the ground truth (with --check), 2 usage or
configuration error, 3 lab fault (a component failed: nothing can be concluded).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from harness.cli import common
from netlab import gc_policy, interrupts
from netlab.errors import LabError, NetlabError, ScenarioError, UsageError

#: Each verb: its module (``register(subparsers)``, ``run(args, console)``) and the line `harness
#: --help` lists. Only the module of the verb being run is imported (``build_parser``): `harness
#: exec` or `harness down` need not load what `harness run` needs, and a start of the command costs
#: a tenth of a second instead of half a second.
VERBS: dict[str, tuple[str, str]] = {
    "up": ("harness.cli.up", "bring a lab up and leave it running"),
    "down": ("harness.cli.down", "remove a lab (or --all)"),
    "status": ("harness.cli.status", "list running labs"),
    "run": ("harness.cli.run", "measure a scenario and score the verdicts"),
    "score": ("harness.cli.score", "score saved results (or another detector's calls) against the ground truth"),
    "compare": ("harness.cli.compare", "compare two runs of one scenario against the ground truth"),
    "explain": ("harness.cli.explain", "show expected verdicts and the compiled dataplane"),
    "report": ("harness.cli.report", "write a self-contained HTML report of saved results"),
    "probes": ("harness.cli.probes", "list the installed probe types"),
    "compose": ("harness.cli.compose", "write a docker-compose.yml for a scenario"),
    "image": ("harness.cli.image", "build the lab's container image (cached)"),
    "exec": ("harness.cli.exec", "run a program inside a lab, from a vantage or host"),
    "shell": ("harness.cli.shell", "an interactive shell inside a lab, at a vantage or host"),
    "ca": ("harness.cli.ca", "print the path of a lab's CA certificate"),
}


def verb_help(verb: str) -> str:
    """The one-line help of ``verb``, as `harness --help` lists it."""
    return VERBS[verb][1]


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


def _verb(argv: list[str]) -> str | None:
    """The verb a command line names: the harness has no options before its verb but -h, so it is
    the first word."""
    return next((a for a in argv if not a.startswith("-")), None)


def verb_help_first(argv: list[str]) -> list[str]:
    """``harness -h VERB`` asks for the verb's help, as ``harness VERB -h`` does (argparse would
    print the harness's own help for a -h before the verb)."""
    verb = _verb(argv)
    if verb in VERBS and any(a in ("-h", "--help") for a in argv[:argv.index(verb)]):
        return [verb, "--help"]
    return argv


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The parser of the command line ``argv`` (default sys.argv[1:]): the verb it names gets its
    full parser; every other verb a placeholder with its help line (enough to list and refuse)."""
    parser = argparse.ArgumentParser(
        prog="harness", description="A censorship measurement lab: bring up mock ISPs, measure, score.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="verb", metavar="COMMAND", required=True)
    chosen = _verb(sys.argv[1:] if argv is None else argv)
    for verb, (module, summary) in VERBS.items():
        if verb == chosen:
            importlib.import_module(module).register(sub)
        else:
            sub.add_parser(verb, help=summary)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = verb_help_first(sys.argv[1:] if argv is None else argv)
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    interrupts.install()
    gc_policy.tune()
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
