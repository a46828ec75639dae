"""harness up: bring a lab up and keep it up (a supervisor process owns it) until `harness down`."""

from __future__ import annotations

import argparse
import os
import selectors
import signal
import subprocess
import sys
import time

from rich.console import Console

from harness.cli import verb_help
from harness.cli.common import EXIT_CONFIG, EXIT_LAB, add_backend, add_name
from netlab.backends import get_backend
from netlab.backends.base import lab_dir, read_state
from netlab.errors import LabInUse
from netlab.interrupts import deferred
from netlab.loader import load_scenario

START_TIMEOUT = 120.0  # a compose lab may first build its image


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("up", help=verb_help("up"),
                       description="Bring the scenario's lab up and leave it running; `harness run` "
                       "attaches to it, `harness down NAME` removes it. A name already in use is refused "
                       "(exit 2) and the running lab is left as it is.",
                       epilog="example: harness up scenarios/demo.yaml --name demo2",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("scenario", help="scenario file (YAML)")
    add_name(p)
    add_backend(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace, console: Console) -> int:
    scenario = load_scenario(args.scenario)  # validate before anything starts
    name = args.name or scenario.name
    if lab_dir(name).exists():
        raise LabInUse(f"a lab named {name!r} already exists (see `harness status`); `harness down {name}` "
                       "first, or choose another name with --name")
    t0 = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "netlab.supervisor", args.scenario, "--lab", name,
                             "--backend", args.backend], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, start_new_session=True)
    try:
        ready = _wait_for_ready(proc, console, time.monotonic() + START_TIMEOUT)
    except BaseException:
        _stop(proc, name, args.backend)
        raise
    if ready:
        console.print(f"[green]lab {name} is up[/] ({args.backend}, {time.monotonic() - t0:.2f}s); "
                      f"`harness run {args.scenario}{' --name ' + name if args.name else ''}` measures it, "
                      f"`harness down {name}` removes it")
        return 0
    _stop(proc, name, args.backend)
    assert proc.stderr is not None
    err = proc.stderr.read().decode(errors="replace").strip()
    if proc.returncode == EXIT_CONFIG:  # refused before it started anything (e.g. the name was taken)
        console.print(f"[bold red]error:[/] {err.removeprefix('error: ')}", highlight=False)
        return EXIT_CONFIG
    console.print(f"[bold red]lab fault:[/] the lab did not come up: {err or 'no answer within the time limit'}",
                  highlight=False)
    return EXIT_LAB


def _wait_for_ready(proc: subprocess.Popen[bytes], console: Console, deadline: float) -> bool:
    """Relay the supervisor's progress until it says ``ready`` (True), exits or the deadline passes."""
    assert proc.stdout is not None
    buffered = b""
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        while time.monotonic() < deadline:
            if not sel.select(timeout=max(0.0, deadline - time.monotonic())):
                continue
            chunk = os.read(proc.stdout.fileno(), 65536)
            if not chunk:
                return False
            buffered += chunk
            while b"\n" in buffered:
                line, buffered = buffered.split(b"\n", 1)
                text = line.decode(errors="replace").strip()
                if text == "ready":
                    proc.stdout.close()
                    return True
                console.print(f"  {text}", highlight=False)
    return False


@deferred()
def _stop(proc: subprocess.Popen[bytes], name: str, backend: str) -> None:
    """Stop a supervisor that did not come up; it tears down what it built. Only a lab that this
    supervisor owned is removed after it: never one that another process brought up."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    state = read_state(name)
    if state is not None and state.owner_pid == proc.pid:
        get_backend(backend).down(name)
