"""harness down: remove a lab, or all of them, including leftovers of a crash."""

from __future__ import annotations

import argparse

from rich.console import Console

from harness.cli import verb_help
from harness.cli.common import EXIT_CONFIG, add_backend, lab_name
from netlab.backends import BACKENDS, get_backend
from netlab.backends.base import read_state
from netlab.errors import LabError, NoSuchLab


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("down", help=verb_help("down"),
                       description="Stop a lab's services and remove its namespaces or containers and "
                       "files. Works after a crash too: leftovers are found by the lab's exact name, and "
                       "nothing of another lab is touched. An unknown name is an error (exit 2).",
                       epilog="examples:\n  harness down demo\n  harness down --all",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("name", nargs="?", type=lab_name, help="lab name (see `harness status`)")
    p.add_argument("--all", action="store_true", help="remove every lab of every backend")
    add_backend(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace, console: Console) -> int:
    if not args.name and not args.all:
        console.print("[red]name a lab, or use --all[/] (see `harness status`)")
        return EXIT_CONFIG
    if args.all:
        removed = []
        for b in BACKENDS:
            try:
                backend = get_backend(b)
                for st in backend.list_labs():
                    backend.down(st.lab)
                    removed.append(f"{st.lab} ({b})")
            except LabError as exc:
                if b == args.backend:
                    raise
                console.print(f"[dim]{b}: {exc}[/]")
        console.print(f"removed: {', '.join(removed)}" if removed else "no labs to remove")
        return 0
    # The lab's own record says which backend built it; leftovers without one are looked for on
    # the backend named by --backend first, then on the others.
    state = read_state(args.name)
    order = [state.backend] if state is not None else [args.backend, *(b for b in BACKENDS if b != args.backend)]
    for b in order:
        try:
            backend = get_backend(b)
        except LabError:
            if b == args.backend or state is not None:
                raise
            continue
        try:
            if backend.down(args.name, progress=console.print):
                return 0
        except LabError as exc:
            if b == args.backend or state is not None:
                raise
            console.print(f"[dim]{b}: {exc}[/]")
    raise NoSuchLab(f"no lab named {args.name!r} on this machine (see `harness status`)")
