"""The lab's benchmark: lifecycle, campaign throughput against a raw baseline, blocked-target cost,
and memory, each printed beside the baseline measured in the same run.

    python bench/run.py                 # quick: what a developer runs (a few minutes)
    python bench/run.py --full          # the figures of the targets: 1000 sites, 100,000 measurements
    python bench/run.py --only lifecycle,throughput --json out.json

Needs root (network namespaces). Every lab it brings up is removed at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pyroute2 import netns  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from harness.campaign import CampaignConfig, run_campaign  # noqa: E402
from netlab.backends import get_backend  # noqa: E402
from netlab.backends.netns import NetnsBackend, ns_name  # noqa: E402
from netlab.compile import compile_lab  # noqa: E402
from netlab.loader import parse_scenario  # noqa: E402

# Wide enough for the table in a CI log, where there is no terminal to ask.
console = Console(highlight=False, width=None if sys.stdout.isatty() else 160)
ROWS: list[dict[str, Any]] = []


def row(section: str, what: str, value: str, baseline: str = "", note: str = "") -> None:
    ROWS.append({"section": section, "what": what, "value": value, "baseline": baseline, "note": note})
    console.print(f"[dim]{section}[/] {what}: [bold]{value}[/] {('(baseline ' + baseline + ')') if baseline else ''} "
                  f"{note}")


def scenario_text(name: str, *, sites: int, isps: int = 1, blocked: float = 0.0, paths: int = 1,
                  rules: bool = True) -> str:
    """A generated scenario: `sites` sites, `isps` ISPs each with a few rules, a fraction of sites
    dropped by the first ISP's firewall, https and http targets (times `paths` paths)."""
    lines = ["version: 1", f"name: {name}", "internet:", "  sites:"]
    lines += [f"    - name: s{i:04d}.test" for i in range(sites)]
    lines.append("isps:")
    n_blocked = int(sites * blocked)
    for j in range(isps):
        lines.append(f"  - name: isp{j}")
        if rules and j > 0:
            lines += ["    resolver:", "      rules:", f"        - {{match: {{domain: s{j % sites:04d}.test}}, "
                      "action: nxdomain}"]
        if j == 0 and n_blocked:
            lines += ["    firewall:", "      rules:"]
            lines += [f"        - {{match: {{site: s{i:04d}.test}}, action: drop}}" for i in range(n_blocked)]
    if paths > 1:
        lines.append("targets:")
        lines += [f"  - {scheme}://s{i:04d}.test/p{p}" for i in range(sites) for p in range(paths)
                  for scheme in ("https", "http")]
    return "\n".join(lines) + "\n"


def load(text: str, tmp: Path, name: str):  # type: ignore[no-untyped-def]
    path = tmp / f"{name}.yaml"
    path.write_text(text)
    return parse_scenario(text, source=str(path))


# ------------------------------------------------------------------ lifecycle

def raw_topology(plan, lab: str) -> tuple[float, float]:  # type: ignore[no-untyped-def]
    """The floor: the same namespaces, veths, addresses and routes, no configs and no services."""
    from netlab.backends.base import LabState

    state = LabState(lab=lab, backend="netns", lab_dir="", scenario_source="", owner_pid=os.getpid(),
                     hosts={h: ns_name(lab, h) for h in plan.hosts})
    t0 = time.perf_counter()
    NetnsBackend()._topology(plan, state)
    up = time.perf_counter() - t0
    t0 = time.perf_counter()
    for ns in state.hosts.values():
        netns.remove(ns)
    return up, time.perf_counter() - t0


def bench_lifecycle(tmp: Path, full: bool, backends: list[str]) -> None:
    """Up and down against scenario size, per backend: the curve over ISPs, then over sites.
    The baseline is the bare netns topology (namespaces, veths, addresses, routes) of the same
    plan: what any lab of that shape costs before a single config or service."""
    sizes = [(1, 10), (5, 10), (20, 10), (1, 100), (1, 1000 if full else 300)]
    if "compose" in backends:
        from netlab.deploy.images import build_image

        build_image()  # a cache hit after the first build; never part of the up time below
    for isps, sites in sizes:
        name = f"bl{isps}x{sites}"
        scenario = load(scenario_text(name, sites=sites, isps=isps), tmp, name)
        t0 = time.perf_counter()
        plan = compile_lab(scenario, name)
        compile_s = time.perf_counter() - t0
        raw_up, raw_down = raw_topology(plan, name + "r")
        for backend in backends:
            t0 = time.perf_counter()
            lab = get_backend(backend).up(plan)
            up = time.perf_counter() - t0
            t0 = time.perf_counter()
            lab.down()
            down = time.perf_counter() - t0
            row("lifecycle", f"{backend} {isps} ISP(s), {sites} sites: compile / up / down",
                f"{compile_s:.2f}s / {up:.2f}s / {down:.2f}s", f"netns topology only {raw_up:.2f}s / {raw_down:.2f}s",
                f"{len(plan.hosts)} hosts")


# ------------------------------------------------------------------ campaigns

def campaign(lab, scenario, out: Path, **kw) -> tuple[int, float, list]:  # type: ignore[no-untyped-def]
    result = asyncio.run(run_campaign(lab, scenario, out, CampaignConfig(**kw)))
    return result.measurements, result.seconds, result.errors


def raw_baseline(lab, scenario, vantages: list[str], concurrency: int) -> tuple[int, float]:  # type: ignore[no-untyped-def]
    """The raw script in each vantage at once (as the harness runs a worker per vantage): the
    successes, and the longest in-script time (it starts after the script's imports)."""
    procs = []
    for name in vantages:
        v = lab.state.vantages[name]
        cmd = lab.command(v.host, ["python3", str(REPO / "bench" / "raw_baseline.py"), str(v.resolver),
                                   str(v.public_resolver), str(lab.inner_path(lab.state.ca_file)), str(concurrency),
                                      *[t.url for t in scenario.targets]])
        procs.append(subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True))
    done, seconds = 0, 0.0
    for proc in procs:
        out, _ = proc.communicate(timeout=600)
        result = json.loads(out.strip().splitlines()[-1])
        done, seconds = done + result["done"], max(seconds, result["seconds"])
    return done, seconds


def bench_throughput(tmp: Path, full: bool) -> None:
    sites, conc = 500, 64
    name = "bthru"
    scenario = load(scenario_text(name, sites=sites, isps=1), tmp, name)
    lab = NetnsBackend().up(compile_lab(scenario, name))
    try:
        n = len(scenario.targets)
        done, secs = raw_baseline(lab, scenario, ["isp0"], conc)
        raw_rate = done / secs
        row("throughput", f"raw baseline, {n} targets, one vantage", f"{raw_rate:.0f}/s",
            note=f"{done} ok in {secs:.2f}s (timed inside the script, after its imports)")
        m, s, err = campaign(lab, scenario, tmp / "t0", vantages=["isp0"], concurrency=conc,
                             context_overrides={"dns_window": 0.0})
        row("throughput", f"harness, {n} targets, one vantage, same work (dns_window 0)", f"{m / s:.0f}/s",
            f"{raw_rate:.0f}/s", f"ratio {raw_rate / (m / s):.2f}x; {len(err)} errors; includes starting the worker")
        m, s, err = campaign(lab, scenario, tmp / "t1", vantages=["isp0"], concurrency=conc)
        row("throughput", f"harness, {n} targets, one vantage, default (listens 0.3s for injected DNS)",
            f"{m / s:.0f}/s", f"{raw_rate:.0f}/s", f"{len(err)} errors")
        everywhere = list(lab.state.vantages)
        done, secs = raw_baseline(lab, scenario, everywhere, conc)
        raw_all = done / secs
        row("throughput", f"raw baseline, {n} targets, all {len(everywhere)} vantages at once", f"{raw_all:.0f}/s",
            note=f"{done} ok in {secs:.2f}s")
        m, s, err = campaign(lab, scenario, tmp / "t2", concurrency=conc, context_overrides={"dns_window": 0.0})
        row("throughput", f"harness, {n} targets, all {len(everywhere)} vantages, same work", f"{m / s:.0f}/s",
            f"{raw_all:.0f}/s", f"ratio {raw_all / (m / s):.2f}x; {m} measurements in {s:.1f}s, {len(err)} errors")
    finally:
        lab.down()


def bench_scaling(tmp: Path, full: bool) -> None:
    """Cost against work: the same campaign at growing sizes; linear means flat ms per target."""
    conc = 64
    sizes = (125, 250, 500, 1000) if full else (125, 250, 500)
    name = "bscale"
    scenario = load(scenario_text(name, sites=max(sizes), isps=1), tmp, name)
    lab = NetnsBackend().up(compile_lab(scenario, name))
    try:
        for sites in sizes:
            sub = dataclasses.replace(scenario, targets=scenario.targets[: sites * 2])
            m, s, _ = campaign(lab, sub, tmp / f"scale{sites}", vantages=["isp0"], concurrency=conc)
            row("scaling", f"{m} unblocked targets, one vantage", f"{s:.2f}s", note=f"{s / m * 1000:.2f} ms per target")
    finally:
        lab.down()


def bench_backends(tmp: Path, full: bool) -> None:
    """The demo on both backends, in one run: image (cached), up, campaign, down."""
    from netlab.deploy.images import build_image
    from netlab.loader import load_scenario

    t0 = time.perf_counter()
    info = build_image()
    row("backends", "lab image build (cached: second call)", f"{time.perf_counter() - t0:.2f}s",
        note=f"{info.tag}, {info.size / 2**20:.0f} MiB" if info.size else info.tag)
    scenario = load_scenario(REPO / "scenarios" / "demo.yaml")
    for backend in ("netns", "compose"):
        name = f"bk{backend[:3]}"
        t0 = time.perf_counter()
        lab = get_backend(backend).up(compile_lab(scenario, name))
        up = time.perf_counter() - t0
        try:
            m, s, _ = campaign(lab, scenario, tmp / name)
        finally:
            t0 = time.perf_counter()
            lab.down()
            down = time.perf_counter() - t0
        row("backends", f"demo on {backend}: up / campaign ({m} measurements) / down",
            f"{up:.2f}s / {s:.2f}s / {down:.2f}s")


def bench_blocked(tmp: Path, full: bool) -> None:
    conc = 64
    for sites in ((125, 250, 500) if full else (125, 250)):
        name = f"bblk{sites}"
        scenario = load(scenario_text(name, sites=sites, isps=1, blocked=0.3), tmp, name)
        lab = NetnsBackend().up(compile_lab(scenario, name))
        try:
            n = len(scenario.targets)
            _m, s, _ = campaign(lab, scenario, tmp / name, vantages=["isp0"], concurrency=conc)
            blocked = int(sites * 0.3) * 2
            bound = blocked * 2.0 / conc  # each dropped target waits out the 2 s connect timeout
            row("blocked", f"{n} targets, {blocked} dropped (30%), concurrency {conc}", f"{s:.1f}s",
                f"timeouts alone need >= {bound:.1f}s", f"{s / n * 1000:.1f} ms per target")
        finally:
            lab.down()


def peak_rss_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def bench_memory(tmp: Path, full: bool) -> None:
    sites, paths = (500, 50) if full else (250, 10)
    name = "bmem"
    path = tmp / f"{name}.yaml"
    path.write_text(scenario_text(name, sites=sites, isps=1, paths=paths, rules=False))
    expected = sites * paths * 2 * 2
    proc = subprocess.Popen([sys.executable, "-m", "harness", "run", str(path), "--quiet", "--concurrency", "64",
                             "--out", str(tmp / "mem")], cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            env={**os.environ, "CI": "true"})
    peak = 0
    stop = threading.Event()

    def poll() -> None:
        nonlocal peak
        while not stop.wait(0.5):
            peak = max(peak, peak_rss_kib(proc.pid))

    t = threading.Thread(target=poll, daemon=True)
    t.start()
    t0 = time.perf_counter()
    proc.wait()
    secs = time.perf_counter() - t0
    stop.set()
    t.join()
    with open(tmp / "mem" / "measurements.jsonl", "rb") as f:
        lines = sum(1 for _ in f)
    size = (tmp / "mem" / "measurements.jsonl").stat().st_size
    row("memory", f"peak RSS of `harness run`, {lines} measurements ({expected} planned)", f"{peak / 1024:.0f} MiB",
        note=f"{secs:.0f}s, results {size / 2**20:.0f} MiB on disk (streamed)")


SECTIONS = {"lifecycle": bench_lifecycle, "throughput": bench_throughput, "scaling": bench_scaling,
            "blocked": bench_blocked, "backends": bench_backends,
            "memory": bench_memory}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--full", action="store_true", help="the target sizes (slow: ~25 minutes)")
    ap.add_argument("--only", default=",".join(SECTIONS), help=f"comma list of: {', '.join(SECTIONS)}")
    ap.add_argument("--backends", default="netns,compose",
                    help="backends of the lifecycle section, comma-separated (default: both)")
    ap.add_argument("--json", type=Path, help="also write the figures here")
    args = ap.parse_args()
    console.print(f"cores: {os.cpu_count()}, python {sys.version.split()[0]}")
    with tempfile.TemporaryDirectory(prefix="fauxisp-bench-") as d:
        for name in args.only.split(","):
            if name == "lifecycle":
                bench_lifecycle(Path(d), args.full, [b.strip() for b in args.backends.split(",")])
            else:
                SECTIONS[name.strip()](Path(d), args.full)
    table = Table(title=f"fauxisp benchmark ({os.cpu_count()} cores)")
    for col in ("section", "what", "value", "baseline (same run)", "note"):
        table.add_column(col)
    for r in ROWS:
        table.add_row(r["section"], r["what"], r["value"], r["baseline"], r["note"])
    console.print(table)
    if args.json:
        args.json.write_text(json.dumps(ROWS, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
