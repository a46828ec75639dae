"""The test helper's endpoint step, run in the control vantage after a campaign.

OONI's probe sends its test helper the addresses it resolved, and the helper (oohelperd) connects
to each of them from its uncensored network: TCP to the URL's ports (an explicit port, else 80 and
443 for http, 443 for https) and a TLS handshake (SNI the URL's host) on 443 (oohelperd
ipinfo.go, tcptls.go). The lab's control vantage plays the helper; it learns the probes' addresses
only from their measurements, so ``harness.ooni.measure_th_endpoints`` runs this module in the
control vantage once the campaign is done.

Run as ``python -m probes.th``. stdin, one JSON object::

    {"context": {...ProbeContext...}, "jobs": [{"url": "http://a.test/", "addresses": ["198.18.1.1"]}]}

stdout, one line per job, in job order::

    {"url": "http://a.test/", "endpoints": {"198.18.1.1:443": {"tcp": {"status": true, "failure": null},
                                                                 "tls": {"server_name": "a.test", "status": true,
                                                                         "failure": null}}}}

Failures are the probes' OONI strings; harness.ooni_rules maps them to the helper's.
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any
from urllib.parse import urlsplit

from netlab.target import Target
from probes.context import ProbeContext
from probes.errors import TargetRefused
from probes.safety import ensure_target_allowed
from probes.streams import endpoint
from probes.tcp import connect_each
from probes.tls import handshake
from probes.trace import Trace

#: URLs measured at once (each opens a connection per address and port).
CONCURRENCY = 32


def helper_ports(url: str) -> list[int]:
    """oohelperd's ports for a URL: its explicit port, else 80 and 443 (http) or 443 (https)."""
    parts = urlsplit(url)
    if parts.port is not None:
        return [parts.port]
    return [80, 443] if parts.scheme.lower() == "http" else [443]


async def measure_endpoints(url: str, addresses: list[str], ctx: ProbeContext) -> dict[str, dict[str, Any]]:
    """TCP to every address on the helper's ports, TLS on 443: ``{"ip:port": {"tcp", "tls"}}``."""
    target = Target.parse(url)
    ensure_target_allowed(target, ctx)
    trace = Trace()
    out: dict[str, dict[str, Any]] = {}

    async def one_port(port: int) -> None:
        flows = await connect_each(addresses, port, ctx, trace, tags=[])
        try:
            shakes = await asyncio.gather(*(
                handshake(c.stream, target.host, ctx, trace, tags=[], transaction_id=c.transaction_id)
                for _, c in flows if c is not None and port == 443))
        finally:
            for _, c in flows:
                if c is not None:
                    await c.stream.close()
        by_address = {entry["address"]: entry for entry, _ in shakes}
        for entry, _ in flows:
            ep = endpoint(entry["ip"], port)
            failure = entry["status"]["failure"]
            tls = by_address.get(ep)
            out[ep] = {"tcp": {"status": failure is None, "failure": failure},
                       "tls": None if tls is None else {"server_name": tls["server_name"],
                                                        "status": tls["failure"] is None, "failure": tls["failure"]}}

    await asyncio.gather(*(one_port(port) for port in helper_ports(url)))
    return dict(sorted(out.items()))


async def amain(request: dict[str, Any]) -> list[dict[str, Any]]:
    ctx = ProbeContext.from_dict(request["context"])
    slots = asyncio.Semaphore(CONCURRENCY)

    async def job(j: dict[str, Any]) -> dict[str, Any]:
        async with slots:
            try:
                return {"url": j["url"], "endpoints": await measure_endpoints(j["url"], list(j["addresses"]), ctx)}
            except (TargetRefused, ValueError) as exc:
                return {"url": j["url"], "endpoints": {}, "error": str(exc)}

    return list(await asyncio.gather(*(job(j) for j in request.get("jobs") or [])))


def main() -> int:
    request = json.loads(sys.stdin.read() or "{}")
    for line in asyncio.run(amain(request)):
        sys.stdout.write(json.dumps(line) + "\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
