"""The lab's benchmark: lifecycle, campaign throughput against a raw baseline, blocked-target cost,
and memory, each printed beside the baseline measured in the same run.

    python bench/run.py                 # quick: what a developer runs (a few minutes)
    python bench/run.py --full          # the figures of the targets: 1000 sites, 100,000 measurements
    python bench/run.py --issue16 --full   # the web probe vs the raw Python and curl baselines, and
                                           # 100,000 measurements end to end (--measurements N: fewer)
    python bench/run.py --only lifecycle,throughput --json out.json

Needs root (network namespaces). Every lab it brings up is removed at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import shutil
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


def bench_lifecycle(tmp: Path, opts: argparse.Namespace) -> None:
    """Up and down against scenario size, per backend: the curve over ISPs, then over sites.
    The baseline is the bare netns topology (namespaces, veths, addresses, routes) of the same
    plan: what any lab of that shape costs before a single config or service."""
    backends = [b.strip() for b in opts.backends.split(",")]
    sizes = [(1, 10), (5, 10), (20, 10), (1, 100), (1, 1000 if opts.full else 300)]
    if "compose" in backends:
        from netlab.deploy.images import build_image

        build_image()  # a cache hit after the first build; never part of the up time below
    for isps, sites in sizes:
        name = f"{opts.prefix}l{isps}x{sites}"
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


def load_average() -> float:
    """The 1-minute load average: the machine is shared, so every figure says how busy it was."""
    return float(Path("/proc/loadavg").read_text().split()[0])


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
    t0 = time.perf_counter()
    done, seconds = 0, 0.0
    for proc in procs:
        out, _ = proc.communicate(timeout=600)
        result = json.loads(out.strip().splitlines()[-1])
        done, seconds = done + result["done"], max(seconds, result["seconds"])
    RAW_WALL.append(time.perf_counter() - t0)
    return done, seconds


#: The raw scripts' wall times, start-up and imports included (as the harness's figures include
#: starting its workers): bench_throughput reports the ratio against those too.
RAW_WALL: list[float] = []


def native_baseline(lab, scenario, vantage: str, concurrency: int, tmp: Path) -> tuple[int, float]:  # type: ignore[no-untyped-def]
    """The same targets fetched by curl (compiled C, libcurl + OpenSSL) in the vantage, ``concurrency``
    transfers at once: name lookup through the vantage's resolver, TCP, TLS with the lab CA, HTTP/1.1
    GET. The successes (status 200) and the wall time of the curl process."""
    config = tmp / f"curl-{vantage}.conf"
    config.write_text("".join(f'url = "{t.url}"\noutput = "/dev/null"\n' for t in scenario.targets))
    cmd = lab.command(lab.state.vantages[vantage].host, [
        "curl", "-q", "--parallel", "--parallel-immediate", "--parallel-max", str(concurrency), "--silent",
        "--ipv4", "--http1.1", "--cacert", str(lab.inner_path(lab.state.ca_file)), "--connect-timeout", "2",
        "--max-time", "10", "--write-out", "%{http_code}\n", "--config", str(config)])
    t0 = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False).stdout
    seconds = time.perf_counter() - t0
    return sum(1 for line in out.split() if line == "200"), seconds


def median(values: list[float]) -> float:
    return sorted(values)[len(values) // 2]


def bench_throughput(tmp: Path, opts: argparse.Namespace) -> None:
    """The web probe against what the machine can do (issue 16 items 3 and 6), in one lab: the raw
    asyncio script doing the same DNS/TCP/TLS/HTTP steps, curl --parallel over the same targets, and
    the harness (default settings: the 0.3 s DNS injection window included; and the window off).
    Interleaved: every round measures each of them once, after a warm-up round that fills the
    resolvers' caches; the figure is the median round, with the load average beside it."""
    conc = 64
    sites = (opts.targets or 1000) // 2
    rounds = opts.rounds or (5 if opts.full else 3)
    name = f"{opts.prefix}thru"
    scenario = load(scenario_text(name, sites=sites, isps=1), tmp, name)
    lab = NetnsBackend().up(compile_lab(scenario, name))
    everywhere = list(lab.state.vantages)
    n = len(scenario.targets)
    kinds = {
        "raw": lambda k: raw_baseline(lab, scenario, ["isp0"], conc),
        "curl": lambda k: native_baseline(lab, scenario, "isp0", conc, tmp),
        "harness": lambda k: campaign(lab, scenario, tmp / "h", vantages=["isp0"], concurrency=conc)[:2],
        "harness_w0": lambda k: campaign(lab, scenario, tmp / "w", vantages=["isp0"], concurrency=conc,
                                         context_overrides={"dns_window": 0.0})[:2],
        "raw_all": lambda k: raw_baseline(lab, scenario, everywhere, conc),
        "harness_all": lambda k: campaign(lab, scenario, tmp / "a", concurrency=conc)[:2],
    }
    rates: dict[str, list[float]] = {k: [] for k in kinds}
    started_too: list[float] = []  # the one-vantage raw script's rate, its start-up included
    loads: list[float] = []
    try:
        raw_baseline(lab, scenario, everywhere, conc)  # warm-up: the resolvers' caches
        for k in range(rounds):
            for kind, measure in kinds.items():
                done, secs = measure(k)
                rates[kind].append(done / secs)
                if kind == "raw":
                    started_too.append(done / RAW_WALL[-1])
                loads.append(load_average())
    finally:
        lab.down()
    med = {k: median(v) for k, v in rates.items()}
    busy = f"load avg {min(loads):.1f}-{max(loads):.1f}"

    def each(kind: str) -> str:
        return "rounds " + " / ".join(f"{r:.0f}" for r in rates[kind])

    def paired(base: str, kind: str) -> str:
        """The median of the rounds' own ratios: each pair ran back to back, under the same load."""
        return f"per-round ratio median {median([b / k for b, k in zip(rates[base], rates[kind], strict=True)]):.2f}x"

    row("throughput", f"raw Python baseline, {n} targets, one vantage", f"{med['raw']:.0f}/s",
        note=f"{each('raw')}; timed inside the script, after its imports ({median(started_too):.0f}/s with its "
             f"start-up and imports, as the harness's figures include starting the worker); {busy}")
    row("throughput", f"native baseline: curl --parallel-max {conc}, same {n} targets, one vantage",
        f"{med['curl']:.0f}/s", f"raw Python {med['raw']:.0f}/s",
        f"raw Python is {med['curl'] / med['raw']:.2f}x slower; {each('curl')}; curl's own DNS cache answers the "
        f"second scheme of a site; {busy}")
    row("throughput", f"harness, {n} targets, one vantage, default (0.3 s DNS injection window)",
        f"{med['harness']:.0f}/s", f"raw {med['raw']:.0f}/s; curl {med['curl']:.0f}/s",
        f"{med['raw'] / med['harness']:.2f}x the raw baseline ({paired('raw', 'harness')}), "
        f"{med['curl'] / med['harness']:.2f}x curl, {median(started_too) / med['harness']:.2f}x the raw script "
        f"with its start-up; {each('harness')}; includes starting the worker; {busy}")
    row("throughput", f"harness, {n} targets, one vantage, DNS window off", f"{med['harness_w0']:.0f}/s",
        f"raw {med['raw']:.0f}/s", f"{med['raw'] / med['harness_w0']:.2f}x ({paired('raw', 'harness_w0')}); "
        f"{each('harness_w0')}; {busy}")
    row("throughput", f"harness, {n} targets, all {len(everywhere)} vantages, default", f"{med['harness_all']:.0f}/s",
        f"raw scripts {med['raw_all']:.0f}/s", f"{med['raw_all'] / med['harness_all']:.2f}x "
        f"({paired('raw_all', 'harness_all')}); "
        f"{each('harness_all')} vs {each('raw_all')}; {busy}")


def bench_scaling(tmp: Path, opts: argparse.Namespace) -> None:
    """Cost against work: the same campaign at growing sizes; linear means flat ms per target."""
    conc = 64
    sizes = (125, 250, 500, 1000) if opts.full else (125, 250, 500)
    name = f"{opts.prefix}scale"
    scenario = load(scenario_text(name, sites=max(sizes), isps=1), tmp, name)
    lab = NetnsBackend().up(compile_lab(scenario, name))
    try:
        for sites in sizes:
            sub = dataclasses.replace(scenario, targets=scenario.targets[: sites * 2])
            m, s, _ = campaign(lab, sub, tmp / f"scale{sites}", vantages=["isp0"], concurrency=conc)
            row("scaling", f"{m} unblocked targets, one vantage", f"{s:.2f}s", note=f"{s / m * 1000:.2f} ms per target")
    finally:
        lab.down()


def bench_backends(tmp: Path, opts: argparse.Namespace) -> None:
    """The demo on both backends, in one run: image (cached), up, campaign, down."""
    from netlab.deploy.images import build_image
    from netlab.loader import load_scenario

    t0 = time.perf_counter()
    info = build_image()
    row("backends", "lab image build (cached: second call)", f"{time.perf_counter() - t0:.2f}s",
        note=f"{info.tag}, {info.size / 2**20:.0f} MiB" if info.size else info.tag)
    scenario = load_scenario(REPO / "scenarios" / "demo.yaml")
    for backend in ("netns", "compose"):
        name = f"{opts.prefix}k{backend[:3]}"
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


def bench_blocked(tmp: Path, opts: argparse.Namespace) -> None:
    conc = 64
    for sites in ((125, 250, 500) if opts.full else (125, 250)):
        name = f"{opts.prefix}blk{sites}"
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


def bench_memory(tmp: Path, opts: argparse.Namespace) -> None:
    """`harness run` end to end (issue 16 item 4): lab up, campaign, scoring with OONI's keys, down,
    with the peak RSS of the harness process. Beside it, first, this machine's floor: the raw
    scripts (bench/raw_baseline.py) doing the same network work in the same lab, from both vantages
    at once as the harness's workers do, over the first RAW_SAMPLE targets; their rate says how
    long the whole run would take them. Then what one plain read of the results costs (every line
    read and parsed once): the floor of any pass over them."""
    n = opts.measurements or (100_000 if opts.full else 10_000)
    sites = 500 if n >= 20_000 else 250
    paths = max(1, n // (sites * 4))  # https and http, two vantages
    name = f"{opts.prefix}mem"
    path = tmp / f"{name}.yaml"
    scenario = load(scenario_text(name, sites=sites, isps=1, paths=paths, rules=False), tmp, name)
    expected = sites * paths * 2 * 2
    sample = dataclasses.replace(scenario, targets=scenario.targets[:RAW_SAMPLE])
    lab = NetnsBackend().up(compile_lab(sample, f"{name}raw"))
    try:
        raw_done, raw_secs = raw_baseline(lab, sample, list(lab.state.vantages), 64)
    finally:
        lab.down()
    raw_rate = raw_done / raw_secs
    out = tmp / "mem"
    load_before = load_average()
    proc = subprocess.Popen([sys.executable, "-m", "harness", "run", str(path), "--quiet", "--concurrency", "64",
                             "--out", str(out)], cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            env={**os.environ, "CI": "true"})
    peak = 0
    loads: list[float] = [load_before]
    stop = threading.Event()

    def poll() -> None:
        nonlocal peak
        while not stop.wait(0.5):
            peak = max(peak, peak_rss_kib(proc.pid))
            if len(loads) < 10_000:
                loads.append(load_average())

    t = threading.Thread(target=poll, daemon=True)
    t.start()
    t0 = time.perf_counter()
    proc.wait()
    secs = time.perf_counter() - t0
    stop.set()
    t.join()
    info = json.loads((out / "run.json").read_text())
    results = out / "measurements.jsonl"
    # run.json is written when the campaign is over, score.json when scoring (and OONI's keys) is.
    after = max((out / "score.json").stat().st_mtime, results.stat().st_mtime) - (out / "run.json").stat().st_mtime
    size = results.stat().st_size
    from netlab import jsonl

    t0 = time.perf_counter()
    with open(results, "rb") as f:
        lines = sum(1 for line in f if jsonl.loads(line))
    parse_once = time.perf_counter() - t0
    busy = f"load avg {min(loads):.1f}-{max(loads):.1f}"
    rate = lines / info["campaign_seconds"]
    row("end to end", f"`harness run`, {lines} measurements ({expected} planned): time / peak RSS",
        f"{secs:.0f} s / {peak / 1024:.0f} MiB",
        f"raw scripts {raw_rate:.0f}/s ({raw_done} measurements), so {expected / raw_rate:.0f} s for "
        f"{expected}; one read+parse of the results {parse_once:.0f} s",
        f"end to end {secs * raw_rate / expected:.2f}x the raw scripts' time; up {info.get('up_seconds', 0):.1f} s, "
        f"campaign {info['campaign_seconds']:.0f} s ({rate:.0f}/s, {raw_rate / rate:.2f}x the raw rate), then "
        f"scoring + OONI keys {after:.0f} s; results {size / 2**30:.1f} GiB; {busy}")
    shutil.rmtree(out, ignore_errors=True)


#: Targets the raw scripts measure (from each vantage) to give the end-to-end run its floor.
RAW_SAMPLE = 5000

SECTIONS = {"lifecycle": bench_lifecycle, "throughput": bench_throughput, "scaling": bench_scaling,
            "blocked": bench_blocked, "backends": bench_backends,
            "memory": bench_memory}
#: `--issue16`: the figures of issue 16 items 3, 4 and 6, each beside its baseline.
ISSUE16 = "throughput,memory"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--full", action="store_true", help="the target sizes (slow: ~25 minutes)")
    ap.add_argument("--only", default=",".join(SECTIONS), help=f"comma list of: {', '.join(SECTIONS)}")
    ap.add_argument("--backends", default="netns,compose",
                    help="backends of the lifecycle section, comma-separated (default: both)")
    ap.add_argument("--json", type=Path, help="also write the figures here")
    ap.add_argument("--issue16", action="store_true",
                    help=f"only the web probe against its baselines and the end-to-end run (--only {ISSUE16})")
    ap.add_argument("--targets", type=int, default=0,
                    help="throughput: targets per round (default 1000)")
    ap.add_argument("--rounds", type=int, default=0, help="throughput: interleaved rounds (default 3; 5 with --full)")
    ap.add_argument("--measurements", type=int, default=0,
                    help="memory: measurements of the end-to-end run (default 10,000; 100,000 with --full)")
    ap.add_argument("--prefix", default="b", help="start of the names of the labs the benchmark brings up")
    args = ap.parse_args()
    if args.issue16:
        args.only = ISSUE16
    console.print(f"cores: {os.cpu_count()}, python {sys.version.split()[0]}, load avg {load_average():.1f}")
    with tempfile.TemporaryDirectory(prefix="fauxisp-bench-") as d:
        for name in args.only.split(","):
            SECTIONS[name.strip()](Path(d), args)
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
