"""Benchmark of the DPI middlebox on unmatched traffic, against the same path without it.

    sudo python bench/bench_dpi.py [--rtts 1000] [--tls 300] [--packets 200000] [--rounds 1]

Builds the client - router - server topology of tests/lab/dpi_topology.py (namespaces
``nldpi-*``, removed at the end) and measures, in one run, the same traffic through the same
router in each setup (rules that never match, one of them a keyword rule so every inspected TCP
and UDP packet is queued and scanned):

- ``none``: no middlebox;
- ``old``: the single-queue middlebox of commit ``--old-rev`` (the netfilterqueue binding, one
  verdict per packet), run from that commit's source;
- ``1 worker``: this middlebox on one queue;
- ``N workers``: this middlebox as compiled for a lab (``DPI_WORKERS`` queues, fan-out).

Figures:

- latency: round trips of fresh UDP flows (each one's first packet goes through the queue)
  and connect + TLS handshake times of fresh TCP flows (SYN, ACK, ClientHello, ... queued);
  "added" is the difference to ``none``;
- packets/s: a flood of raw UDP datagrams from one sending process, 10 per flow so every one is
  inside the inspected window, to 64 server addresses (64 client-server pairs, what the kernel's
  fan-out hashes on); delivered = packets the server's interface received / the time they took
  to arrive (the queue drops what overflows: fail closed). The sender shares the machine's cores
  with the middlebox, as a lab's clients do. Also the middlebox's CPU cost: packets judged / CPU
  seconds (user + system) its processes used over the whole setup.

Each setup gets fresh flows (its own server addresses), so no conntrack entry carries over.
With ``--rounds N`` the setups are measured N times in turn and each figure is the median.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests" / "lab")]

from dpi_topology import DpiLab  # noqa: E402

from netlab.addressing import isp_addresses  # noqa: E402
from netlab.compile.dpi import CHAIN, compile_dpi  # noqa: E402
from netlab.compile.router import DPI_WORKERS  # noqa: E402
from netlab.model import Isp, Match, Rule  # noqa: E402

OLD_REV = "a85b2cc"  # the last commit with the single-queue netfilterqueue middlebox
ISP = Isp("bench", dpi_rules=(
    Rule(Match(sni="never.invalid"), "reset"),
    Rule(Match(http_host="never.invalid"), "blockpage"),
    Rule(Match(keyword="never-ever-matches"), "drop"),
))


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, round(p / 100 * (len(xs) - 1)))] if xs else float("nan")


def flood(lab: DpiLab, packets: int, net: str) -> tuple[float, int, int]:
    """(delivered packets/s, sent, delivered)"""
    watch = lab.spawn("rxwatch", lab.server, lab.python("rxwatch"))
    time.sleep(0.3)
    r = lab.client_cmd("flood", "--packets", str(packets), "--per-flow", "10", "--dsts", "64", "--net", net,
                       timeout=600)
    time.sleep(1.0)  # let the queue drain
    lab.stop("rxwatch")
    del watch
    samples = [(float(t), int(n)) for t, n in (line.split() for line in lab.log("rxwatch").splitlines())]
    before, last = samples[0][1], samples[-1][1]
    start = next(t for t, n in samples if n > before)
    end = next(t for t, n in samples if n == last)
    delivered = last - before
    return delivered / max(end - start, 1e-3), r["sent"], delivered


def measure(lab: DpiLab, args: argparse.Namespace, net: str) -> dict:
    udp = lab.client_cmd("udp-rtt", "--count", str(args.rtts), timeout=300)
    names = [f"n{i}.allowed.test" for i in range(args.tls)]
    tls = lab.client_cmd("many", json.dumps(names), "--concurrency", "1", "--timeout", "5", timeout=300)
    ok = [t for r, t in zip(tls["results"], tls["seconds"], strict=True) if r == "ok"]
    pps, sent, delivered = flood(lab, args.packets, net)
    return {
        "rtt_med": statistics.median(udp["rtts_us"]),
        "rtt_p99": pct(udp["rtts_us"], 99),
        "tls_med": statistics.median(ok) * 1e3,
        "tls_p99": pct(ok, 99) * 1e3,
        "tls_fail": len(names) - len(ok),
        "pps": pps,
        "lost": sent - delivered,
        "sent": sent,
    }


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) a process and its children (the workers) have used so far: what
    preemption by other load does not inflate, unlike wall time spent judging."""
    tick = os.sysconf("SC_CLK_TCK")
    pids = [pid, *map(int, Path(f"/proc/{pid}/task/{pid}/children").read_text().split())]
    return sum(sum(map(int, Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()[11:13])) / tick
               for p in pids)


def old_source(lab: DpiLab, rev: str) -> Path | None:
    r = subprocess.run(["git", "-C", str(REPO), "show", f"{rev}:netlab/services/dpi.py"], capture_output=True,
                       text=True)
    if r.returncode:
        return None
    path = lab.labdir / "old_dpi.py"
    path.write_text(r.stdout)
    return path


def with_middlebox(lab: DpiLab, args: argparse.Namespace, setup: str, net: str) -> dict:
    """Measure with the middlebox of ``setup`` bound, then remove it (process and iptables rules)."""
    workers = 1 if setup in ("old", "1") else DPI_WORKERS
    add = compile_dpi(ISP, isp_addresses(1), {}, workers=workers)
    if setup == "old":
        svc = add.services[0]
        add.services = [dataclasses.replace(svc, argv=("python3", str(lab.labdir / "old_dpi.py"), *svc.argv[3:]))]
    lab.apply(add)
    out = measure(lab, args, net)
    out["alive"] = lab.procs["dpi"].poll() is None
    cpu = cpu_seconds(lab.procs["dpi"].pid)
    lab.stop("dpi", signal.SIGTERM)
    m = re.search(r"stopped after (\d+) packets", lab.log("dpi"))
    out["cpu_pps"] = int(m.group(1)) / cpu if m and cpu else float("nan")
    lab.exec(lab.router, ["iptables", "-D", "FORWARD", "-j", CHAIN])
    lab.exec(lab.router, ["iptables", "-F", CHAIN])
    lab.exec(lab.router, ["iptables", "-X", CHAIN])
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rtts", type=int, default=1000)
    ap.add_argument("--tls", type=int, default=300)
    ap.add_argument("--packets", type=int, default=200000)
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--old-rev", default=OLD_REV, help="commit of the single-queue middlebox ('' to skip it)")
    args = ap.parse_args()
    fan = f"{DPI_WORKERS} workers"
    results: dict[str, list[dict]] = {}
    with DpiLab(suffix="bench") as lab:
        lab.start_server()
        setups = ["none", *(["old"] if args.old_rev and old_source(lab, args.old_rev) else []), "1", fan]
        net = 2
        for _ in range(args.rounds):
            for setup in setups:
                subnet = f"198.18.{net}.0"
                net += 1
                res = measure(lab, args, subnet) if setup == "none" else with_middlebox(lab, args, setup, subnet)
                results.setdefault(setup, []).append(res)

    def med(setup: str, key: str) -> float:
        return statistics.median(r[key] for r in results[setup])

    names = {"none": "no middlebox", "old": f"old 1 queue ({args.old_rev})", "1": "1 worker", fan: fan}
    boxes = [s for s in results if s != "none"]
    rows: list[tuple[str, str, bool]] = [
        ("UDP RTT, fresh flow, median (µs)", "rtt_med", True),
        ("UDP RTT, fresh flow, p99 (µs)", "rtt_p99", True),
        ("TCP connect + TLS handshake, median (ms)", "tls_med", True),
        ("TCP connect + TLS handshake, p99 (ms)", "tls_p99", True),
        ("UDP flood delivered (packets/s)", "pps", False),
        ("UDP flood lost (packets)", "lost", False),
    ]
    width = max(len(n) for n in names.values()) + 2
    print(f"{'metric':42}" + "".join(f"{names[s]:>{width}}" for s in results))
    for title, key, _ in rows:
        print(f"{title:42}" + "".join(f"{med(s, key):{width}.1f}" for s in results))
    for title, key, added in rows:
        if added:
            print(f"{'added ' + title:42}{'':>{width}}" + "".join(
                f"{med(s, key) - med('none', key):{width}.1f}" for s in boxes))
    print(f"{'middlebox packets judged / its CPU s':42}{'':>{width}}"
          + "".join(f"{med(s, 'cpu_pps'):{width}.0f}" for s in boxes))
    base = med("none", "pps")
    for s in boxes:
        print(f"{names[s]}: {med(s, 'pps'):.0f} packets/s delivered = {med(s, 'pps') / base:.2f}x the path "
              f"without middlebox; alive at the end: {all(r['alive'] for r in results[s])}; "
              f"TLS failures: {sum(r['tls_fail'] for r in results[s])}")
    print(f"flood: {results['none'][0]['sent']} packets per setup and round, {args.rounds} round(s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
