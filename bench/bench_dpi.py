"""Benchmark of the DPI middlebox on unmatched traffic, against the same path without it.

    sudo python3 bench/bench_dpi.py [--rtts 500] [--tls 100] [--packets 100000] [--rounds 1]

Builds the client - router - server topology of tests/lab/dpi_topology.py (namespaces
``nldpi-*``, removed at the end) and measures, in one run and interleaved, the same traffic
through the same router in each setup (rules that never match: an sni rule, which also reads
QUIC on UDP 443, an http_host rule and a keyword rule, so every TCP and UDP packet inside the
inspected window is scanned):

- ``none``: no middlebox (the baseline);
- ``before``: the middlebox of commit ``--before-rev`` (its service source, run from that
  commit) with every rule in userspace, as compiled before UDP keywords moved to the kernel;
- ``1 worker``: this middlebox on one queue;
- ``N workers``: this middlebox as compiled for a lab (``DPI_WORKERS`` queues, fan-out).

Figures, each with the 1-minute load average while it was taken (the machine may be shared):

- added latency for unmatched traffic: round trips of fresh UDP flows (each one's first packet
  goes through the middlebox) and connect + TLS handshake times of fresh TCP flows (SYN, ACK,
  ClientHello, ... queued); "added" is the difference to ``none``, p50 and p99;
- packets/s inspected: floods of raw UDP datagrams from one sending process, 10 per flow so every
  one is inside the inspected window, to 64 server addresses (what the kernel's fan-out hashes
  on); delivered = packets the server's interface received / the time they took to arrive (a full
  queue drops: fail closed). Port 9: only the keyword rule applies (the kernel's string match,
  now); port 443: the middlebox's workers read every datagram (QUIC reader, then the keyword).
  The sender shares the machine's cores with the middlebox, as a lab's clients do;
- the middlebox's CPU time per packet of each flood (user + system of its processes, from
  /proc): what other load on the machine hardly changes, unlike packets/s (which also moves with
  how the forwarding work splits between the sender's core and the workers');
- ``--loop``: the CPU time per packet of a worker's loop alone (netlink parsing, judging,
  verdicts) on the 443 flood's datagrams fed from memory, this source against ``--before-rev``'s
  (no lab, no root; best of 5).

Each setup gets fresh flows (its own server addresses), so no conntrack entry carries over.
With ``--rounds N`` the setups are measured N times in turn, each round starting one setup later,
and each figure is the median.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import os
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests" / "lab")]

from dpi_topology import CLIENT_IP, DpiLab  # noqa: E402

from netlab.addressing import isp_addresses  # noqa: E402
from netlab.compile.dpi import CHAIN, compile_dpi, dpi_iptables_rules  # noqa: E402
from netlab.compile.router import DPI_WORKERS  # noqa: E402
from netlab.model import Isp, Match, Rule  # noqa: E402
from netlab.services import dpi as dpi_now  # noqa: E402
from netlab.services._parsers import build_udp  # noqa: E402

BEFORE_REV = "c943008"  # the middlebox before UDP keywords in the kernel and the leaner worker loop
ISP = Isp("bench", dpi_rules=(
    Rule(Match(sni="never.invalid"), "reset"),
    Rule(Match(http_host="never.invalid"), "blockpage"),
    Rule(Match(keyword="never-ever-matches"), "drop"),
))
FLOOD_PORTS = (9, 443)


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, round(p / 100 * (len(xs) - 1)))] if xs else float("nan")


def load() -> float:
    return os.getloadavg()[0]


def cpu_seconds(pid: int | None) -> float:
    """CPU time (user + system) a process and its children (the workers) have used so far: what
    preemption by other load does not inflate, unlike wall time spent judging."""
    if pid is None:
        return 0.0
    tick = os.sysconf("SC_CLK_TCK")
    pids = [pid, *map(int, Path(f"/proc/{pid}/task/{pid}/children").read_text().split())]
    return sum(sum(map(int, Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()[11:13])) / tick
               for p in pids)


def flood(lab: DpiLab, packets: int, net: str, port: int, box: int | None) -> dict:
    """Delivered packets/s of one flood, and the middlebox's CPU seconds meanwhile."""
    watch = lab.spawn("rxwatch", lab.server, lab.python("rxwatch"))
    time.sleep(0.3)
    cpu0, load0 = cpu_seconds(box), load()
    r = lab.client_cmd("flood", "--packets", str(packets), "--per-flow", "10", "--dsts", "64", "--net", net,
                       "--dport", str(port), timeout=900)
    time.sleep(1.0)  # let the queue drain
    cpu = cpu_seconds(box) - cpu0
    lab.stop("rxwatch")
    del watch
    samples = [(float(t), int(n)) for t, n in (line.split() for line in lab.log("rxwatch").splitlines())]
    before, last = samples[0][1], samples[-1][1]
    start = next(t for t, n in samples if n > before)
    end = next(t for t, n in samples if n == last)
    delivered = last - before
    return {"pps": delivered / max(end - start, 1e-3), "lost": r["sent"] - delivered, "sent": r["sent"],
            "cpu_us": cpu / max(delivered, 1) * 1e6, "load": (load0 + load()) / 2}


def measure(lab: DpiLab, args: argparse.Namespace, net: int, box: int | None = None) -> dict:
    out: dict = {"load_lat": load()}
    udp = lab.client_cmd("udp-rtt", "--count", str(args.rtts), timeout=600)
    names = [f"n{i}.allowed.test" for i in range(args.tls)]
    tls = lab.client_cmd("many", json.dumps(names), "--concurrency", "1", "--timeout", "5", timeout=600)
    ok = [t for r, t in zip(tls["results"], tls["seconds"], strict=True) if r == "ok"]
    out["load_lat"] = (out["load_lat"] + load()) / 2
    out |= {"rtt_p50": statistics.median(udp["rtts_us"]) / 1e3, "rtt_p99": pct(udp["rtts_us"], 99) / 1e3,
            "tls_p50": statistics.median(ok) * 1e3, "tls_p99": pct(ok, 99) * 1e3, "tls_fail": len(names) - len(ok)}
    for i, port in enumerate(FLOOD_PORTS):
        f = flood(lab, args.packets, f"198.18.{net + i}.0", port, box)
        out |= {f"{k}_{port}": v for k, v in f.items()}
    return out


def before_source(dest: Path, rev: str) -> Path | None:
    r = subprocess.run(["git", "-C", str(REPO), "show", f"{rev}:netlab/services/dpi.py"], capture_output=True,
                       text=True)
    if r.returncode:
        return None
    path = dest / "before_dpi.py"
    path.write_text(r.stdout)
    return path


def with_middlebox(lab: DpiLab, args: argparse.Namespace, setup: str, net: int) -> dict:
    """Measure with the middlebox of ``setup`` bound, then remove it (process and iptables rules)."""
    workers = 1 if setup == "1" else DPI_WORKERS
    add = compile_dpi(ISP, isp_addresses(1), {}, workers=workers)
    if setup == "before":
        svc = add.services[0]
        add.services = [dataclasses.replace(svc, argv=("python3", str(lab.labdir / "before_dpi.py"), *svc.argv[3:]))]
        add.files[f"{ISP.name}/dpi.rules"] = dpi_iptables_rules(ISP, workers, {}, kernel_keywords=False)
    lab.apply(add)
    out = measure(lab, args, net, lab.procs["dpi"].pid)
    out["alive"] = lab.procs["dpi"].poll() is None
    lab.stop("dpi", signal.SIGTERM)
    lab.exec(lab.router, ["iptables", "-D", "FORWARD", "-j", CHAIN])
    lab.exec(lab.router, ["iptables", "-F", CHAIN])
    lab.exec(lab.router, ["iptables", "-X", CHAIN])
    return out


# --- a worker's loop alone ----------------------------------------------------------------------


def _netlink_packet(mod: ModuleType, pid: int, payload: bytes) -> bytes:
    """One NFQUEUE packet message as the kernel sends it (header, in/out device, payload)."""
    attrs = (mod._attr(mod.NFQA_PACKET_HDR, struct.pack("!IHB", pid, 0x0800, 2)) + mod._attr(4, struct.pack("!I", 2))
             + mod._attr(5, struct.pack("!I", 3)) + mod._attr(mod.NFQA_PAYLOAD, payload))
    body = struct.pack("=BB", socket.AF_INET, 0) + struct.pack("!H", 100) + attrs
    return mod._NLMSG.pack(16 + len(body), mod._PACKET, 0, 0, 0) + body


class _MemorySocket:
    """The queue's socket, fed from memory: one message per read, as the kernel sends them, and
    'nothing waiting' every 8 reads (so verdicts go out in batches of about that size)."""

    def __init__(self, msgs: list[bytes]) -> None:
        self.msgs, self.i, self.gap = msgs, 0, False

    def recv_into(self, buf: bytearray, _n: int = 0, _flags: int = 0) -> int:
        if self.i >= len(self.msgs) or (self.gap and self.i % 8 == 0):
            self.gap = False
            raise BlockingIOError
        self.gap = True
        m = self.msgs[self.i]
        self.i += 1
        buf[: len(m)] = m
        return len(m)

    def send(self, _data: bytes) -> None:
        pass


def loop_cost(mod: ModuleType, packets: int, rounds: int = 5) -> float:
    """CPU microseconds per packet of ``mod``'s worker loop on the 443 flood's datagrams."""
    from netlab.compile.dpi import dpi_config

    # through the file, as the service reads it: the file format is what both revisions share
    with tempfile.TemporaryDirectory(prefix="bench-dpi-") as tmp:
        path = Path(tmp) / "dpi.json"
        path.write_text(dpi_config(ISP, isp_addresses(1), {}, workers=1).to_json())
        cfg = mod.load_config(str(path))
    flows = packets // 10
    datagrams = [build_udp(CLIENT_IP, f"198.18.2.{1 + f % 64}", 10000 + f // 64, 443, b"f" * 32)
                 for f in (i % flows for i in range(packets))]
    msgs = [_netlink_packet(mod, i + 1, d) for i, d in enumerate(datagrams)]
    best = float("inf")
    for _ in range(rounds):
        box = mod.Middlebox(cfg, 100)
        q = mod.NfQueue.__new__(mod.NfQueue)  # no kernel queue: the socket is the memory one
        q.num, q.seq, q.buf, q.sock = 100, 0, bytearray(256 * 1024), _MemorySocket(msgs)
        q.view = memoryview(q.buf)
        t0 = time.process_time()
        while q.sock.i < len(msgs):
            box.drain(q)
        best = min(best, time.process_time() - t0)
        box.raw.close()
    return best / packets * 1e6


def loop_figures(args: argparse.Namespace, tmp: Path) -> dict[str, float]:
    out = {"now": loop_cost(dpi_now, args.loop)}
    path = before_source(tmp, args.before_rev) if args.before_rev else None
    if path:
        spec = importlib.util.spec_from_file_location("before_dpi", path)
        mod = sys.modules["before_dpi"] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        out["before"] = loop_cost(mod, args.loop)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rtts", type=int, default=500)
    ap.add_argument("--tls", type=int, default=100)
    ap.add_argument("--packets", type=int, default=100000)
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--loop", type=int, default=50000, help="packets of the worker-loop measure (0: skip)")
    ap.add_argument("--no-lab", action="store_true", help="the worker-loop measure only")
    ap.add_argument("--before-rev", default=BEFORE_REV, help="commit of the middlebox to compare ('' to skip it)")
    args = ap.parse_args()
    fan = f"{DPI_WORKERS} workers"
    results: dict[str, list[dict]] = {}
    loops: list[dict[str, float]] = []
    if args.loop:
        with tempfile.TemporaryDirectory(prefix="bench-dpi-") as tmp:
            loops.append(loop_figures(args, Path(tmp)) | {"load": load()})
    if not args.no_lab:
        with DpiLab(suffix="bench") as lab:
            lab.start_server()
            setups = ["none", *(["before"] if args.before_rev and before_source(lab.labdir, args.before_rev) else []),
                      "1", fan]
            net = 2
            for r in range(args.rounds):
                for setup in setups[r % len(setups):] + setups[: r % len(setups)]:  # no setup always first
                    res = measure(lab, args, net) if setup == "none" else with_middlebox(lab, args, setup, net)
                    net += len(FLOOD_PORTS)
                    results.setdefault(setup, []).append(res)
    report(args, results, loops, fan)
    return 0


def report(args: argparse.Namespace, results: dict[str, list[dict]], loops: list[dict], fan: str) -> None:
    for lp in loops:
        before = f"; before ({args.before_rev}) {lp['before']:.2f} µs" if "before" in lp else ""
        print(f"worker loop alone, CPU per packet (443 flood datagrams, {args.loop} packets, best of 5): "
              f"now {lp['now']:.2f} µs{before}  [load {lp['load']:.1f}]")
    if not results:
        return

    def med(setup: str, key: str) -> float:
        return statistics.median(r[key] for r in results[setup])

    names = {"none": "no middlebox", "before": f"before ({args.before_rev})", "1": "1 worker", fan: fan}
    boxes = [s for s in results if s != "none"]
    width = max(len(n) for n in names.values()) + 2
    rows = [
        ("UDP RTT, fresh flow, p50 (ms)", "rtt_p50", "load_lat", True),
        ("UDP RTT, fresh flow, p99 (ms)", "rtt_p99", "load_lat", True),
        ("TCP connect + TLS, p50 (ms)", "tls_p50", "load_lat", True),
        ("TCP connect + TLS, p99 (ms)", "tls_p99", "load_lat", True),
        *((f"UDP flood to port {p}, delivered (packets/s)", f"pps_{p}", f"load_{p}", False) for p in FLOOD_PORTS),
        *((f"UDP flood to port {p}, lost (packets)", f"lost_{p}", f"load_{p}", False) for p in FLOOD_PORTS),
        *((f"middlebox CPU per packet, port {p} (µs)", f"cpu_us_{p}", f"load_{p}", False) for p in FLOOD_PORTS),
    ]
    print(f"{'metric':44}" + "".join(f"{names[s]:>{width}}" for s in results))
    for title, key, lkey, _ in rows:
        if key.startswith("cpu"):
            print(f"{title:44}{'':>{width}}" + "".join(f"{med(s, key):{width}.2f}" for s in boxes))
            continue
        print(f"{title:44}" + "".join(f"{med(s, key):{width}.2f}" for s in results))
        print(f"{'  (load average)':44}" + "".join(f"{med(s, lkey):{width}.1f}" for s in results))
    for title, key, _, added in rows:
        if added:
            print(f"{'added ' + title:44}{'':>{width}}" + "".join(
                f"{med(s, key) - med('none', key):{width}.2f}" for s in boxes))
    for s in boxes:
        print(f"{names[s]}: " + ", ".join(
            f"port {p} {med(s, f'pps_{p}'):.0f} packets/s = {med(s, f'pps_{p}') / med('none', f'pps_{p}'):.2f}x "
            f"the baseline's {med('none', f'pps_{p}'):.0f}" for p in FLOOD_PORTS)
            + f"; alive at the end: {all(r['alive'] for r in results[s])}; "
              f"TLS failures: {sum(r['tls_fail'] for r in results[s])}")
    for p in FLOOD_PORTS:  # the rounds one by one: how much other load moved them
        print(f"port {p} packets/s by round: " + "; ".join(
            f"{names[s]} " + " ".join(f"{r[f'pps_{p}'] / 1e3:.1f}k" for r in results[s]) for s in results))
    print(f"floods: {results['none'][0]['sent_9']} packets each, {args.rounds} round(s); "
          f"{args.rtts} UDP round trips, {args.tls} TLS handshakes per setup and round")


if __name__ == "__main__":
    sys.exit(main())
