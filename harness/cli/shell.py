"""harness shell: an interactive shell inside a running lab, as a vantage (or any host) sees the network."""

from __future__ import annotations

import argparse

from rich.console import Console

from harness import inlab
from harness.cli import verb_help
from harness.cli.common import lab_name

# bash where the host has it (its prompt from PS1; Debian's bash.bashrc shows $debian_chroot), else sh.
SHELL = ["sh", "-c", 'if command -v bash >/dev/null 2>&1; then exec bash --norc -i; else exec sh -i; fi']


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("shell", help=verb_help("shell"),
                       description="Open an interactive shell in the running lab LAB, in the host of VANTAGE "
                       "(as `harness exec`: its resolver, the lab CA trusted). Leave it with `exit`.",
                       epilog="examples:\n  harness shell demo isp-a\n  harness shell demo isp-b.gw",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("lab", type=lab_name, help="lab name (see `harness status`)")
    p.add_argument("vantage", help="an ISP name, `control`, a host or a site of the lab")
    p.set_defaults(func=run)


def run(args: argparse.Namespace, console: Console) -> int:
    lab = inlab.attach(args.lab)
    host = inlab.host_of(lab, args.vantage)
    prompt = f"{lab.name}/{args.vantage}"
    return inlab.run(inlab.command(lab, host, SHELL, {"PS1": f"[{prompt}] \\w\\$ ", "debian_chroot": prompt}))
