"""Benchmark of the DPI middlebox on unmatched traffic, against the same path without it.

    sudo python bench/bench_dpi.py [--rtts 1000] [--tls 300] [--packets 60000]

Builds the client - router - server topology of tests/lab/dpi_topology.py (namespaces
``nldpi-*``, removed at the end) and measures twice in one run, first with no middlebox, then
with it bound (rules that never match, one of them a keyword rule so every inspected TCP and
UDP packet is queued and scanned):

- latency: round trips of fresh UDP flows (each one's first packet goes through the queue)
  and connect + TLS handshake times of fresh TCP flows (SYN, ACK, ClientHello, ... queued);
- packets/s: a flood of raw UDP datagrams, 10 per flow so every one is inside the inspected
  window; delivered = packets the server's interface received / the time they took to arrive
  (the queue drops what overflows: fail closed). Also the middlebox's own CPU capacity:
  packets judged / seconds it spent receiving and judging them.
"""

from __future__ import annotations

import argparse
import json
import re
import signal
import statistics
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests" / "lab")]

from dpi_topology import DpiLab  # noqa: E402

from netlab.addressing import isp_addresses  # noqa: E402
from netlab.compile.dpi import compile_dpi  # noqa: E402
from netlab.model import Isp, Match, Rule  # noqa: E402


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, round(p / 100 * (len(xs) - 1)))] if xs else float("nan")


def rx_packets(lab: DpiLab) -> int:
    out = lab.exec(lab.server, ["ip", "-s", "-j", "link", "show", "s0"]).stdout
    return int(json.loads(out)[0]["stats64"]["rx"]["packets"])


def flood(lab: DpiLab, packets: int) -> tuple[float, int, int]:
    """(delivered packets/s, sent, delivered)"""
    samples: list[tuple[float, int]] = []
    stop = threading.Event()

    def poll() -> None:
        while not stop.is_set():
            samples.append((time.monotonic(), rx_packets(lab)))
            time.sleep(0.005)

    before = rx_packets(lab)
    th = threading.Thread(target=poll)
    th.start()
    r = lab.client_cmd("flood", "--packets", str(packets), "--per-flow", "10", timeout=300)
    time.sleep(1.0)  # let the queue drain
    stop.set()
    th.join()
    last = samples[-1][1]
    start = next(t for t, n in samples if n > before)
    end = next(t for t, n in samples if n == last)
    delivered = last - before
    return delivered / max(end - start, 1e-3), r["sent"], delivered


def measure(lab: DpiLab, args: argparse.Namespace) -> dict:
    udp = lab.client_cmd("udp-rtt", "--count", str(args.rtts), timeout=300)
    names = [f"n{i}.allowed.test" for i in range(args.tls)]
    tls = lab.client_cmd("many", json.dumps(names), "--concurrency", "1", "--timeout", "5", timeout=300)
    ok = [t for r, t in zip(tls["results"], tls["seconds"], strict=True) if r == "ok"]
    pps, sent, delivered = flood(lab, args.packets)
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


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rtts", type=int, default=1000)
    ap.add_argument("--tls", type=int, default=300)
    ap.add_argument("--packets", type=int, default=60000)
    args = ap.parse_args()
    isp = Isp("bench", dpi_rules=(
        Rule(Match(sni="never.invalid"), "reset"),
        Rule(Match(http_host="never.invalid"), "blockpage"),
        Rule(Match(keyword="never-ever-matches"), "drop"),
    ))
    with DpiLab(suffix="bench") as lab:
        lab.start_server()
        base = measure(lab, args)
        lab.apply(compile_dpi(isp, isp_addresses(1), {}))
        dpi = measure(lab, args)
        alive = lab.procs["dpi"].poll() is None
        lab.stop("dpi", signal.SIGTERM)
        m = re.search(r"stopped after (\d+) packets.*busy ([\d.]+) s \((\d+) packets/s", lab.log("dpi"))
    rows = [
        ("UDP RTT, fresh flow, median (µs)", base["rtt_med"], dpi["rtt_med"]),
        ("UDP RTT, fresh flow, p99 (µs)", base["rtt_p99"], dpi["rtt_p99"]),
        ("TCP connect + TLS handshake, median (ms)", base["tls_med"], dpi["tls_med"]),
        ("TCP connect + TLS handshake, p99 (ms)", base["tls_p99"], dpi["tls_p99"]),
        ("UDP flood delivered (packets/s)", base["pps"], dpi["pps"]),
        (f"UDP flood lost (of {dpi['sent']} sent)", max(0, base["lost"]), max(0, dpi["lost"])),
    ]
    print(f"{'metric':44} {'no middlebox':>14} {'middlebox':>12} {'added':>10}")
    for name, a, b in rows:
        print(f"{name:44} {a:14.1f} {b:12.1f} {b - a:10.1f}")
    if m:
        print(f"middlebox: {m.group(1)} packets judged in {m.group(2)} s of CPU = {m.group(3)} packets/s capacity")
    print(f"middlebox alive at the end: {alive}; TLS failures: {base['tls_fail']} / {dpi['tls_fail']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
