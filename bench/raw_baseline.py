"""The raw baseline: the same four steps as the web probe (DNS, TCP, TLS, HTTP GET) with the same
libraries (dnspython, asyncio + ssl, httpcore) and nothing else: no harness, no worker protocol,
no OONI bookkeeping. Like the probe, it asks the vantage's resolver and the public resolver at
once (the probe needs both to see injected answers) and connects to the first one's answer; for
an ``http://`` URL it also connects to 443 and completes a TLS handshake beside the fetch, as the
web probe does for OONI's web_connectivity 0.5 (probes.http._side_flows).
Run inside a vantage: ``python raw_baseline.py RESOLVER PUBLIC CA CONCURRENCY URL...``
Prints one JSON line: {"done": n, "seconds": s}."""

from __future__ import annotations

import asyncio
import json
import ssl
import sys
import time
from urllib.parse import urlsplit

import dns.asyncquery
import dns.message
import httpcore


async def fetch(url: str, resolver: str, public: str, ctx: ssl.SSLContext) -> int:
    parts = urlsplit(url)
    host = parts.hostname or ""
    answer, _ = await asyncio.gather(dns.asyncquery.udp(dns.message.make_query(host, "A"), resolver, timeout=2),
                                     dns.asyncquery.udp(dns.message.make_query(host, "A"), public, timeout=2))
    ip = next(r.address for rr in answer.answer for r in rr if hasattr(r, "address"))
    if parts.scheme == "https":
        return await _get(ip, 443, host, True, ctx)
    size, _ = await asyncio.gather(_get(ip, 80, host, False, ctx), _handshake(ip, host, ctx))
    return size


async def _handshake(ip: str, host: str, ctx: ssl.SSLContext) -> None:
    _, writer = await asyncio.wait_for(asyncio.open_connection(ip, 443), 2)
    try:
        await asyncio.wait_for(writer.start_tls(ctx, server_hostname=host), 3)
    finally:
        writer.close()


async def _get(ip: str, port: int, host: str, tls: bool, ctx: ssl.SSLContext) -> int:
    reader, writer = await asyncio.wait_for(asyncio.open_connection(ip, port), 2)
    if tls:
        await asyncio.wait_for(writer.start_tls(ctx, server_hostname=host), 3)
    stream = _Stream(reader, writer)
    conn = httpcore.AsyncHTTP11Connection(origin=httpcore.Origin(b"https" if tls else b"http", host.encode(), port),
                                          stream=stream)
    async with conn:
        resp = await conn.request("GET", f"{'https' if tls else 'http'}://{host}/", headers={"Host": host})
        return len(resp.content)


class _Stream(httpcore.AsyncNetworkStream):
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return await asyncio.wait_for(self.reader.read(max_bytes), timeout)

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self.writer.write(buffer)
        await asyncio.wait_for(self.writer.drain(), timeout)

    async def aclose(self) -> None:
        self.writer.close()


async def main(resolver: str, public: str, ca: str, concurrency: int, urls: list[str]) -> None:
    ctx = ssl.create_default_context(cafile=ca)
    slots = asyncio.Semaphore(concurrency)
    done = 0

    async def one(url: str) -> None:
        nonlocal done
        async with slots:
            try:
                await fetch(url, resolver, public, ctx)
                done += 1
            except Exception as exc:  # a baseline counts successes only
                print(f"{url}: {exc!r}", file=sys.stderr)

    t0 = time.perf_counter()
    await asyncio.gather(*(one(u) for u in urls))
    print(json.dumps({"done": done, "seconds": time.perf_counter() - t0}))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5:]))
