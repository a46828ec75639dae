"""Benchmark of QUIC through the DPI middlebox against the same path without it.

    sudo python bench/bench_quic.py [--handshakes 200] [--concurrency 16] [--flood 2000] [--rounds 1]

Builds the client - router - server topology of tests/lab/dpi_topology.py (namespaces
``nldpi-*``, removed at the end); the server runs the lab's HTTP/3 origin (netlab.services.h3,
aioquic) on UDP 443 of the site addresses, and the client the quic probe's handshake
(probes.quic.measure_address: QUIC handshake and an HTTP/3 GET of a small page). In one run, the
same traffic through the same router in each setup:

- ``none``: no middlebox;
- ``quic``: the middlebox as compiled for a lab (DPI_WORKERS queues) with a QUIC SNI rule that
  never matches, so every Initial is queued, decrypted (RFC 9001 initial keys) and its
  ClientHello parsed.

Figures: latency of one handshake + GET at a time (median and p99; "added" is the difference to
``none``); handshakes per second with ``--concurrency`` in flight (each on a fresh client port,
so each flow's first datagrams go through the queue); the middlebox's CPU cost as packets judged
(the first 10 client packets of each flow: the Initial and the handshake after it) per CPU second
of its processes. Each setup gets its own server addresses, so no conntrack
entry carries over. With ``--rounds N`` the setups alternate N times and each figure is the median.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import signal
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests" / "lab")]

from bench_dpi import cpu_seconds, pct  # noqa: E402
from dpi_topology import SITES, DpiLab  # noqa: E402

from netlab.addressing import isp_addresses  # noqa: E402
from netlab.compile.dpi import CHAIN, compile_dpi  # noqa: E402
from netlab.model import Isp, Match, Rule  # noqa: E402

ISP = Isp("bench", dpi_rules=(Rule(Match(sni="never.invalid"), "drop", transport="quic"),))
SETUPS = ("none", "quic")
BODY = 1024


async def _serve(args: argparse.Namespace) -> None:
    from netlab.services import h3
    from netlab.services.origin import SiteConfig, SiteHandler

    handler = SiteHandler(SiteConfig(name="bench.test", pem=args.cert, body_size=BODY, addresses=SITES))
    servers = [await h3.serve_site(a, [(["bench.test"], args.cert)], lambda _host: handler) for a in SITES]
    Path(args.ready).write_text("ready\n")
    await asyncio.Event().wait()
    for s in servers:
        s.close()


async def _handshakes(args: argparse.Namespace) -> dict:
    from netlab.target import Target
    from probes.context import ProbeContext
    from probes.quic import measure_address
    from probes.trace import Trace

    ctx = ProbeContext(vantage="bench", resolver="198.18.0.2", public_resolver=None, ca_file=args.ca,
                       quic_timeout=5.0)
    target = Target.parse("https://bench.test/")
    sem = asyncio.Semaphore(args.concurrency)
    seconds: list[float] = []
    failures: list[str] = []

    async def one(i: int) -> None:
        async with sem:
            t = time.perf_counter()
            _, _, facts = await measure_address(target, args.server, ctx, Trace())
            if facts["failure"] is None:
                seconds.append(time.perf_counter() - t)
            else:
                failures.append(facts["failure"])

    t0 = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(args.count)))
    return {"seconds": seconds, "failures": failures, "wall": time.perf_counter() - t0}


def run_client(lab: DpiLab, server: str, count: int, concurrency: int) -> dict:
    r = lab.exec(lab.client, [sys.executable, str(Path(__file__).resolve()), "client", "--server", server,
                              "--ca", str(lab.labdir / "ca.pem"), "--count", str(count),
                              "--concurrency", str(concurrency)], timeout=900)
    return json.loads(r.stdout.strip().splitlines()[-1])


def measure(lab: DpiLab, args: argparse.Namespace, server: str) -> dict:
    serial = run_client(lab, server, args.handshakes, 1)
    burst = run_client(lab, server, args.flood, args.concurrency)
    ok = serial["seconds"]
    return {"lat_med": statistics.median(ok) * 1e3 if ok else float("nan"),
            "lat_p99": pct(ok, 99) * 1e3 if ok else float("nan"),
            "hps": len(burst["seconds"]) / burst["wall"], "fail": len(serial["failures"]) + len(burst["failures"])}


def with_middlebox(lab: DpiLab, args: argparse.Namespace, server: str) -> dict:
    lab.apply(compile_dpi(ISP, isp_addresses(1), {}))
    out = measure(lab, args, server)
    cpu = cpu_seconds(lab.procs["dpi"].pid)
    lab.stop("dpi", signal.SIGTERM)
    m = re.search(r"INFO stopped after (\d+) packets", lab.log("dpi"))  # the service total, not a worker
    out["cpu_pps"] = int(m.group(1)) / cpu if m and cpu else float("nan")
    for argv in (["-D", "FORWARD", "-j", CHAIN], ["-F", CHAIN], ["-X", CHAIN]):
        lab.exec(lab.router, ["iptables", *argv])
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd")
    s = sub.add_parser("serve")
    s.add_argument("--cert", required=True)
    s.add_argument("--ready", required=True)
    c = sub.add_parser("client")
    c.add_argument("--server", required=True)
    c.add_argument("--ca", required=True)
    c.add_argument("--count", type=int, default=100)
    c.add_argument("--concurrency", type=int, default=1)
    ap.add_argument("--handshakes", type=int, default=200, help="one at a time, for latency")
    ap.add_argument("--flood", type=int, default=2000, help="handshakes with --concurrency in flight")
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=1)
    args = ap.parse_args()
    if args.cmd == "serve":
        asyncio.run(_serve(args))
        return 0
    if args.cmd == "client":
        print(json.dumps(asyncio.run(_handshakes(args))))
        return 0

    import trustme

    results: dict[str, list[dict]] = {k: [] for k in SETUPS}
    with DpiLab() as lab:
        ca = trustme.CA()
        ca.cert_pem.write_to_path(str(lab.labdir / "ca.pem"))
        pem = lab.labdir / "site.pem"
        leaf = ca.issue_cert("bench.test")
        pem.write_bytes(b"".join(b.bytes() for b in leaf.cert_chain_pems) + leaf.private_key_pem.bytes())
        lab.spawn("h3", lab.server, [sys.executable, str(Path(__file__).resolve()), "serve", "--cert", str(pem),
                                     "--ready", str(lab.labdir / "h3.ready")])
        lab.wait_file(lab.labdir / "h3.ready", 30, proc="h3")
        for rnd in range(args.rounds):
            for i, setup in enumerate(SETUPS):
                server = SITES[(rnd * len(SETUPS) + i) % len(SITES)]  # fresh flows for each setup
                results[setup].append(measure(lab, args, server) if setup == "none" else
                                      with_middlebox(lab, args, server))
    med = {k: {f: statistics.median(r[f] for r in rs) for f in rs[0]} for k, rs in results.items()}
    base = med["none"]
    print(f"QUIC handshake + HTTP/3 GET of {BODY} bytes; {args.handshakes} one at a time, {args.flood} with "
          f"{args.concurrency} in flight; median of {args.rounds} round(s)")
    print(f"{'setup':8} {'lat med ms':>11} {'added':>7} {'lat p99 ms':>11} {'handshakes/s':>13} {'fail':>5} "
          f"{'packets/CPU s':>15}")
    for k, m in med.items():
        added = m["lat_med"] - base["lat_med"]
        cpu = f"{m['cpu_pps']:15.0f}" if "cpu_pps" in m else f"{'-':>15}"
        print(f"{k:8} {m['lat_med']:11.2f} {added:+7.2f} {m['lat_p99']:11.2f} {m['hps']:13.1f} {m['fail']:5.0f} {cpu}")
    print(json.dumps({"median": med, "rounds": results}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
