"""harness up: bring a lab up and keep it up (a supervisor process owns it) until `harness down`."""

from __future__ import annotations

import argparse
import subprocess
import sys
import time

from rich.console import Console

from harness.cli.common import EXIT_LAB, add_backend, add_name
from netlab.backends import get_backend
from netlab.loader import load_scenario

START_TIMEOUT = 60.0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("up", help="bring a lab up and leave it running",
                       description="Bring the scenario's lab up and leave it running; `harness run` "
                       "attaches to it, `harness down NAME` removes it.",
                       epilog="example: harness up scenarios/demo.yaml --name demo2",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("scenario", help="scenario file (YAML)")
    add_name(p)
    add_backend(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace, console: Console) -> int:
    scenario = load_scenario(args.scenario)  # validate before anything starts
    name = args.name or scenario.name
    backend = get_backend(args.backend)
    t0 = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "netlab.supervisor", args.scenario, "--lab", name,
                             "--backend", args.backend], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    assert proc.stdout is not None
    deadline = time.monotonic() + START_TIMEOUT
    for line in proc.stdout:
        line = line.strip()
        if line == "ready":
            console.print(f"[green]lab {name} is up[/] ({args.backend}, {time.monotonic() - t0:.2f}s); "
                          f"`harness run {args.scenario}{' --name ' + name if args.name else ''}` measures it, "
                          f"`harness down {name}` removes it")
            proc.stdout.close()
            return 0
        console.print(f"  {line}")
        if time.monotonic() > deadline:
            break
    proc.wait(timeout=10)
    err = proc.stderr.read() if proc.stderr else ""
    console.print(f"[bold red]lab fault:[/] the lab did not come up: {err.strip()}")
    backend.down(name)
    return EXIT_LAB
