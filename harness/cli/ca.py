"""harness ca: the path of a lab's CA certificate (what its sites' certificates chain to)."""

from __future__ import annotations

import argparse

from rich.console import Console

from harness import inlab
from harness.cli import verb_help
from harness.cli.common import lab_name


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("ca", help=verb_help("ca"),
                       description="Print the path of the running lab's CA certificate (PEM), for tools run "
                       "outside `harness exec`.",
                       epilog="example:\n  curl --cacert \"$(harness ca demo)\" ...   (inside the lab)",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("lab", type=lab_name, help="lab name (see `harness status`)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace, console: Console) -> int:
    print(inlab.ca_path(args.lab))  # plain print: the path alone, for $(...)
    return 0
