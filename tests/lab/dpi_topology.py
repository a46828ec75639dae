"""A small client - router - server topology for the DPI lab tests and the DPI benchmark.

Three network namespaces named ``nldpi-{c,r,s}-<suffix>``, joined only to each other by veth
pairs created inside them (nothing is put in the host's namespace, no route leads out):

    client c0 10.1.0.2/24 ── down0 10.1.0.1/24 [router] up0 10.1.255.1/30 ── s0 10.1.255.2/30 server

The server owns 198.18.0.2 (DNS) and the site addresses 198.18.1.1.. on its loopback and runs
this file's ``serve`` command (TLS on 443, HTTP on 80, bulk data on 8080, DNS on UDP 53).
Clients are this file's other commands, run in the client namespace; each prints one JSON line.

Used as a library (``DpiLab``) and as a script (``python3 dpi_topology.py <command> ...``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import socket
import ssl
import struct
import subprocess
import sys
import time
import uuid
from pathlib import Path

from netlab.names import TOPOLOGY_PREFIX

REPO = Path(__file__).resolve().parents[2]
PREFIX = TOPOLOGY_PREFIX
CLIENT_IP = "10.1.0.2"
ROUTER_DOWN = "10.1.0.1"
ROUTER_UP = "10.1.255.1"
SERVER_UP = "10.1.255.2"
RESOLVER = "198.18.0.2"
SITES = [f"198.18.1.{i}" for i in range(1, 9)]


# ---------------------------------------------------------------------------------------
# The topology (library side)
# ---------------------------------------------------------------------------------------


def _run(argv: list[str], check: bool = True, **kw) -> subprocess.CompletedProcess:
    r = subprocess.run(argv, capture_output=True, text=True, **kw)
    if check and r.returncode:
        raise RuntimeError(f"{' '.join(argv)} failed ({r.returncode}): {r.stderr.strip()}")
    return r


def leftover_namespaces(prefix: str = PREFIX) -> list[str]:
    out = _run(["ip", "netns", "list"]).stdout
    return [line.split()[0] for line in out.splitlines() if line.startswith(prefix)]


class DpiLab:
    def __init__(self, suffix: str | None = None, workdir: str | os.PathLike | None = None) -> None:
        self.suffix = suffix or uuid.uuid4().hex[:6]
        self.client = f"{PREFIX}c-{self.suffix}"
        self.router = f"{PREFIX}r-{self.suffix}"
        self.server = f"{PREFIX}s-{self.suffix}"
        self.namespaces = [self.client, self.router, self.server]
        self.labdir = Path(workdir or f"/tmp/{PREFIX}{self.suffix}")
        self.procs: dict[str, subprocess.Popen] = {}
        self.env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))

    # --- lifecycle ---------------------------------------------------------------------

    def up(self) -> DpiLab:
        self.labdir.mkdir(parents=True, exist_ok=True)
        c, r, s = self.namespaces
        for ns in self.namespaces:
            _run(["ip", "netns", "add", ns])
            _run(["ip", "-n", ns, "link", "set", "lo", "up"])
        _run(["ip", "-n", r, "link", "add", "down0", "type", "veth", "peer", "name", "c0", "netns", c])
        _run(["ip", "-n", r, "link", "add", "up0", "type", "veth", "peer", "name", "s0", "netns", s])
        for ns, dev, addr in ((c, "c0", f"{CLIENT_IP}/24"), (r, "down0", f"{ROUTER_DOWN}/24"),
                              (r, "up0", f"{ROUTER_UP}/30"), (s, "s0", f"{SERVER_UP}/30")):
            _run(["ip", "-n", ns, "addr", "add", addr, "dev", dev])
            _run(["ip", "-n", ns, "link", "set", dev, "up"])
        for a in [RESOLVER, *SITES]:
            _run(["ip", "-n", s, "addr", "add", f"{a}/32", "dev", "lo"])
        _run(["ip", "-n", c, "route", "add", "198.18.0.0/15", "via", ROUTER_DOWN])
        _run(["ip", "-n", r, "route", "add", "198.18.0.0/15", "via", SERVER_UP])
        _run(["ip", "-n", s, "route", "add", "10.1.0.0/24", "via", ROUTER_UP])
        self.exec(r, ["sysctl", "-qw", "net.ipv4.ip_forward=1"])
        return self

    def down(self) -> None:
        for name in list(self.procs):
            self.stop(name)
        for ns in self.namespaces:
            _run(["ip", "netns", "del", ns], check=False)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if not [n for n in leftover_namespaces() if n in self.namespaces]:
                break
            time.sleep(0.02)
        _run(["rm", "-rf", str(self.labdir)], check=False)

    def __enter__(self) -> DpiLab:
        try:
            return self.up()
        except BaseException:
            self.down()
            raise

    def __exit__(self, *exc) -> None:
        self.down()

    # --- running things ----------------------------------------------------------------

    def exec(self, ns: str, argv: list[str], check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
        return _run(["ip", "netns", "exec", ns, *argv], check=check, timeout=timeout, env=self.env)

    def spawn(self, name: str, ns: str, argv: list[str], log: str | None = None) -> subprocess.Popen:
        out = open(self.labdir / (log or f"{name}.log"), "w")  # noqa: SIM115 - lives with the process
        p = subprocess.Popen(["ip", "netns", "exec", ns, *argv], stdout=out, stderr=subprocess.STDOUT,
                             env=self.env, start_new_session=True)
        self.procs[name] = p
        return p

    def stop(self, name: str, sig: int = 15) -> None:
        p = self.procs.pop(name, None)
        if p is None:
            return
        if p.poll() is None:
            p.send_signal(sig)
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)

    def log(self, name: str) -> str:
        try:
            return (self.labdir / f"{name}.log").read_text()
        except OSError:
            return ""

    def python(self, *args: str) -> list[str]:
        return [sys.executable, str(Path(__file__).resolve()), *args]

    def start_server(self, timeout: float = 10) -> None:
        import trustme

        ca = trustme.CA()
        cert = ca.issue_cert("*.test", "test", "*.example")
        cert.private_key_and_cert_chain_pem.write_to_path(str(self.labdir / "server.pem"))
        self.spawn("server", self.server, self.python("serve", "--cert", str(self.labdir / "server.pem"),
                                                      "--ready", str(self.labdir / "server.ready")))
        self.wait_file(self.labdir / "server.ready", timeout, proc="server")

    def wait_file(self, path: Path, timeout: float, proc: str | None = None) -> None:
        deadline = time.monotonic() + timeout
        while not path.exists():
            if proc and self.procs[proc].poll() is not None:
                raise RuntimeError(f"{proc} exited: {self.log(proc)}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"{path} did not appear; {proc} log: {self.log(proc) if proc else ''}")
            time.sleep(0.01)

    def apply(self, additions, timeout: float = 10) -> None:
        """Realise a netlab.compile RouterAdditions in the router, as the backend would."""
        from netlab.plan import LAB_DIR

        lab = str(self.labdir)
        for rel, content in additions.files.items():
            path = self.labdir / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(content.replace(LAB_DIR, lab))
        for argv in additions.setup:
            self.exec(self.router, [a.replace(LAB_DIR, lab) for a in argv])
        for svc in additions.services:
            argv = [sys.executable if a == "python3" else a.replace(LAB_DIR, lab) for a in svc.argv]
            self.spawn(svc.name, self.router, argv)
            if svc.ready and svc.ready.kind == "file":
                self.wait_file(self.labdir / svc.ready.path, timeout, proc=svc.name)

    def client_cmd(self, *args: str, timeout: float = 60) -> dict:
        r = self.exec(self.client, self.python(*args), timeout=timeout)
        return json.loads(r.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------------------------------
# Server and clients (script side)
# ---------------------------------------------------------------------------------------

PAGE = b"<html><head><title>origin</title></head><body>hello from the origin</body></html>\n"


async def _serve(args: argparse.Namespace) -> None:
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(lambda _l, _c: None)  # resets from the middlebox are expected
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(args.cert)

    async def http(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            sock = writer.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            while True:
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)
                if not head:
                    break
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: "
                             + str(len(PAGE)).encode() + b"\r\n\r\n" + PAGE)
                await writer.drain()
        except Exception:
            pass
        finally:
            writer.close()

    async def bulk(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line = await asyncio.wait_for(reader.readline(), 10)
            n = int(line.strip() or b"0")
            chunk = b"x" * 65536
            while n > 0:
                writer.write(chunk[: min(n, len(chunk))])
                n -= len(chunk)
                await writer.drain()
        except Exception:
            pass
        finally:
            writer.close()

    class Dns(asyncio.DatagramProtocol):
        def connection_made(self, transport):
            self.t = transport

        def datagram_received(self, data, addr):
            try:
                import dns.message
                import dns.rrset

                q = dns.message.from_wire(data)
                r = dns.message.make_response(q)
                r.answer.append(dns.rrset.from_text(q.question[0].name, 60, "IN", "A", SITES[0]))
                self.t.sendto(r.to_wire(), addr)
            except Exception:
                pass

    async def echo_udp_factory():
        class Echo(asyncio.DatagramProtocol):
            def connection_made(self, transport):
                self.t = transport

            def datagram_received(self, data, addr):
                self.t.sendto(data, addr)

        for site in SITES:  # on every site, so UDP can reach each client-server pair
            await loop.create_datagram_endpoint(Echo, local_addr=(site, 7))

    servers = [
        await asyncio.start_server(http, "0.0.0.0", 443, ssl=ctx, backlog=4096, ssl_handshake_timeout=10),
        await asyncio.start_server(http, "0.0.0.0", 80, backlog=4096),
        await asyncio.start_server(bulk, "0.0.0.0", 8080, backlog=128),
    ]
    await loop.create_datagram_endpoint(Dns, local_addr=(RESOLVER, 53))  # answers from its address
    await echo_udp_factory()
    Path(args.ready).write_text(str(os.getpid()))
    try:
        await asyncio.Event().wait()
    finally:
        for s in servers:
            s.close()


def _classify(e: BaseException) -> str:
    if isinstance(e, ConnectionResetError):
        return "connection_reset"
    if isinstance(e, ConnectionRefusedError):
        return "connection_refused"
    if isinstance(e, (TimeoutError, asyncio.TimeoutError, socket.timeout)):
        return "timeout"
    if isinstance(e, ssl.SSLError):
        return f"ssl_error:{e.reason}"
    if isinstance(e, EOFError):
        return "eof"
    return f"error:{type(e).__name__}:{e}"


def _client_ctx() -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


async def _tls_once(host: str | None, addr: str, port: int, timeout: float, ctx: ssl.SSLContext) -> str:
    writer = None
    try:
        async with asyncio.timeout(timeout):
            _reader, writer = await asyncio.open_connection(addr, port)
        try:
            async with asyncio.timeout(timeout):
                await writer.start_tls(ctx, server_hostname=host)
        except Exception as e:
            return "handshake:" + _classify(e)
        return "ok"
    except Exception as e:
        return "connect:" + _classify(e)
    finally:
        if writer is not None:
            writer.transport.abort()


def cmd_tls(args: argparse.Namespace) -> dict:
    ctx = _client_ctx()
    host = None if args.host == "-" else args.host
    t0 = time.monotonic()
    res = asyncio.run(_tls_once(host, args.addr, args.port, args.timeout, ctx))
    return {"result": res, "seconds": round(time.monotonic() - t0, 3)}


def cmd_many(args: argparse.Namespace) -> dict:
    """Concurrent TLS handshakes (connect + handshake), one per name of a JSON list."""
    names = json.loads(args.names)
    ctx = _client_ctx()

    async def main() -> list[str]:
        sem = asyncio.Semaphore(args.concurrency)

        async def one(i: int, name: str) -> tuple[str, float]:
            async with sem:
                t0 = time.perf_counter()
                res = await _tls_once(name, SITES[i % len(SITES)], 443, args.timeout, ctx)
                return res, time.perf_counter() - t0

        return await asyncio.gather(*(one(i, n) for i, n in enumerate(names)))

    out = asyncio.run(main())
    return {"results": [r for r, _ in out], "seconds": [t for _, t in out]}


def _raw_client(addr: str, port: int, parts: list[bytes], gap: float, timeout: float) -> str:
    s = socket.create_connection((addr, port), timeout=timeout)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        for i, part in enumerate(parts):
            if i:
                time.sleep(gap)
            s.sendall(part)
        data = s.recv(65536)
        return "data" if data else "eof"
    except Exception as e:
        return _classify(e)
    finally:
        s.close()


def cmd_split(args: argparse.Namespace) -> dict:
    sys.path.insert(0, str(REPO))
    from netlab.services._parsers import build_client_hello

    hello = build_client_hello(None if args.host == "-" else args.host, pad_to=args.pad)
    cut = [int(x) for x in args.cuts.split(",")] if args.cuts else []
    parts, prev = [], 0
    for c in [*cut, len(hello)]:
        parts.append(hello[prev:c])
        prev = c
    return {"result": _raw_client(args.addr, args.port, parts, 0.05, args.timeout), "parts": len(parts)}


def cmd_http(args: argparse.Namespace) -> dict:
    req = f"GET {args.path} HTTP/1.1\r\nHost: {args.host}\r\nUser-Agent: nldpi\r\nAccept: */*\r\n\r\n".encode()
    s = socket.create_connection((args.addr, 80), timeout=args.timeout)
    data = b""
    try:
        s.sendall(req)
        while True:
            chunk = s.recv(65536)
            if not chunk:
                end = "eof"
                break
            data += chunk
            if b"</html>" in data:
                end = "complete"
                break
    except Exception as e:
        end = _classify(e)
    finally:
        s.close()
    head, _, body = data.partition(b"\r\n\r\n")
    status = head.split(b"\r\n", 1)[0].decode("latin-1")
    return {"status": status, "body": body.decode("latin-1"), "end": end}


def cmd_dns(args: argparse.Namespace) -> dict:
    import dns.message

    q = dns.message.make_query(args.name, "A")
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.sendto(q.to_wire(), (args.server, 53))
    t0 = time.monotonic()
    out = []
    deadline = t0 + args.listen
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        s.settimeout(left)
        try:
            data, _ = s.recvfrom(4096)
        except TimeoutError:
            break
        try:
            r = dns.message.from_wire(data)
            ips = [rd.address for rr in r.answer for rd in rr if rr.rdtype == 1]
            out.append({"id_ok": r.id == q.id, "answers": ips, "ms": round((time.monotonic() - t0) * 1000, 3)})
        except Exception as e:
            out.append({"error": str(e)})
    return {"responses": out}


def cmd_bulk(args: argparse.Namespace) -> dict:
    s = socket.create_connection((args.addr, 8080), timeout=30)
    s.sendall(f"{args.size}\n".encode())
    n = 0
    t0 = time.monotonic()
    while True:
        chunk = s.recv(262144)
        if not chunk:
            break
        n += len(chunk)
    dt = time.monotonic() - t0
    s.close()
    return {"bytes": n, "seconds": dt, "bps": n * 8 / dt if dt else 0}


def cmd_garbage(args: argparse.Namespace) -> dict:
    """Malformed and truncated traffic at the middlebox: odd TCP payloads over real connections
    and hand-made raw packets (bad lengths, bad offsets, fragments, junk DNS)."""
    sys.path.insert(0, str(REPO))
    import random

    from netlab.services._parsers import build_client_hello, build_tcp, build_udp

    rng = random.Random(args.seed)
    hello = build_client_hello("ok.test")
    payloads = [
        b"\x16\x03\x01\xff\xff" + b"\x01" * 40,  # record claims 64 KiB
        b"\x16\x03\x01\x00\x30\x01\x00\xff\xff" + b"\x00" * 43,  # handshake longer than record
        hello[:20],  # truncated ClientHello, then close
        hello[:9] + b"\xff" * (len(hello) - 9),  # mangled lengths
        b"\x16\x03",  # 2 bytes only
        b"GET / HTTP/1.1\r\nHost: \xff\xfe\x00bad\r\n\r\n",
        b"GET http://[::1/ HTTP/1.1\r\n\r\n",
        b"GET " + b"A" * 9000,
        b"\x00" * 1400,
    ] + [bytes(rng.randrange(256) for _ in range(rng.randrange(1, 1400))) for _ in range(args.random)]
    conns = []
    for i, p in enumerate(payloads):
        try:
            s = socket.create_connection((SITES[i % len(SITES)], 443 if i % 2 else 80), timeout=2)
            s.sendall(p)
            conns.append(s)
        except OSError:
            pass
    time.sleep(0.2)  # let the server answer or reset; then close everything
    for s in conns:
        s.close()
    sent = len(conns)
    # raw packets: mid-stream segments conntrack picks up, junk DNS, a fragment, bad offsets
    raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
    pkts = []
    for _ in range(args.random):
        dst = rng.choice(SITES)
        junk = bytes(rng.randrange(256) for _ in range(rng.randrange(0, 600)))
        pkts.append(build_tcp(CLIENT_IP, dst, rng.randrange(1024, 65535), 443, rng.getrandbits(32),
                              rng.getrandbits(32), 0x18, junk))
        pkts.append(build_udp(CLIENT_IP, RESOLVER, rng.randrange(1024, 65535), 53,
                              bytes(rng.randrange(256) for _ in range(rng.randrange(0, 300)))))
    bad = bytearray(build_tcp(CLIENT_IP, SITES[0], 40000, 443, 1, 1, 0x18, hello))
    bad[32] = 0xF0  # data offset 60 > what is there? (fits: makes the payload start later)
    pkts.append(bytes(bad))
    bad2 = bytearray(build_tcp(CLIENT_IP, SITES[0], 40001, 443, 1, 1, 0x18, hello[:30]))
    bad2[32] = 0x10  # data offset 4 bytes (< 20): invalid
    pkts.append(bytes(bad2))
    frag = bytearray(build_udp(CLIENT_IP, RESOLVER, 40002, 53, b"\x12\x34" + b"\x00" * 40))
    frag[6:8] = struct.pack("!H", 0x2000)  # more fragments, offset 0
    pkts.append(bytes(frag))
    frag2 = bytearray(build_udp(CLIENT_IP, RESOLVER, 40003, 53, b"\x00" * 40))
    frag2[6:8] = struct.pack("!H", 0x0010)  # a later fragment
    pkts.append(bytes(frag2))
    for p in pkts:
        with contextlib.suppress(OSError):
            raw.sendto(p, (socket.inet_ntoa(p[16:20]), 0))
    return {"connections": sent, "raw": len(pkts)}


def cmd_udp_rtt(args: argparse.Namespace) -> dict:
    """Round trips to the echo port, each from a fresh socket (a new source port, so a new flow
    whose first packet the middlebox inspects)."""
    target = (args.addr, 7)
    rtts = []
    for _ in range(args.count):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.settimeout(args.timeout)
        t0 = time.perf_counter()
        s.sendto(args.payload.encode(), target)
        try:
            s.recvfrom(2048)
            rtts.append((time.perf_counter() - t0) * 1e6)
        except TimeoutError:
            pass
        s.close()
    return {"rtts_us": rtts}


def cmd_flood(args: argparse.Namespace) -> dict:
    """Raw UDP datagrams to the discard port (or ``--dport``), ``per_flow`` per flow, as fast as possible. Flows
    differ by source port and go to ``--dsts`` servers (SITES[0] alone, or that many addresses of
    ``--net``, which the router forwards to the server: several client-server pairs, as a client
    talking to many sites, so a fan-out by address pair has something to spread)."""
    sys.path.insert(0, str(REPO))
    from netlab.services._parsers import build_udp

    payload = b"f" * 32
    flows = max(1, args.packets // args.per_flow)
    net = args.net.rsplit(".", 1)[0]
    dsts = [f"{net}.{1 + i}" for i in range(args.dsts)] if args.dsts else [SITES[0]]
    pkts = []
    for i in range(args.packets):
        f = i % flows
        dst = dsts[f % len(dsts)]
        pkts.append((build_udp(CLIENT_IP, dst, 10000 + (f // len(dsts)) % 55000, args.dport, payload), (dst, 0)))
    raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
    # Every destination has the same next hop (the router) and the kernel sends a header-included
    # packet as it is: one connected socket, and sendmmsg, so that the sender spends its CPU in
    # the kernel's forwarding path rather than in Python (it shares the cores with the middlebox).
    raw.connect((SITES[0], 0))
    t0 = time.perf_counter()
    sent = _sendmmsg(raw, [p for p, _ in pkts])
    return {"sent": sent, "seconds": time.perf_counter() - t0}


def _sendmmsg(sock: socket.socket, pkts: list[bytes], batch: int = 256) -> int:
    import ctypes

    class Iovec(ctypes.Structure):
        _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]

    class Mmsghdr(ctypes.Structure):
        _fields_ = [("name", ctypes.c_void_p), ("namelen", ctypes.c_uint32), ("iov", ctypes.POINTER(Iovec)),
                    ("iovlen", ctypes.c_size_t), ("control", ctypes.c_void_p), ("controllen", ctypes.c_size_t),
                    ("flags", ctypes.c_int), ("len", ctypes.c_uint)]

    libc = ctypes.CDLL(None, use_errno=True)
    bufs = [ctypes.create_string_buffer(p, len(p)) for p in pkts]
    iovs = (Iovec * len(pkts))(*[Iovec(ctypes.addressof(b), len(p)) for b, p in zip(bufs, pkts, strict=True)])
    msgs = (Mmsghdr * len(pkts))()
    for i in range(len(pkts)):
        msgs[i].iov = ctypes.pointer(iovs[i])
        msgs[i].iovlen = 1
    size = ctypes.sizeof(Mmsghdr)
    sent = pos = 0
    while pos < len(pkts):
        n = libc.sendmmsg(sock.fileno(), ctypes.byref(msgs, pos * size), min(batch, len(pkts) - pos), 0)
        if n <= 0:  # a full transmit queue (ENOBUFS): that packet is lost, as a sendto would lose it
            pos += 1
            continue
        sent += n
        pos += n
    return sent


def cmd_rxwatch(args: argparse.Namespace) -> None:
    """Print ``monotonic-time packets`` of an interface's receive counter every ``--every`` s
    until killed (reads sysfs in the process's own namespace: far cheaper than running ``ip``)."""
    path = f"/sys/class/net/{args.dev}/statistics/rx_packets"
    with open(path) as f:
        while True:
            f.seek(0)
            print(f"{time.monotonic():.6f} {f.read().strip()}", flush=True)
            time.sleep(args.every)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("serve")
    p.add_argument("--cert", required=True)
    p.add_argument("--ready", required=True)
    p = sub.add_parser("tls")
    p.add_argument("host")
    p.add_argument("addr")
    p.add_argument("--port", type=int, default=443)
    p.add_argument("--timeout", type=float, default=3)
    p = sub.add_parser("many")
    p.add_argument("names")
    p.add_argument("--timeout", type=float, default=10)
    p.add_argument("--concurrency", type=int, default=1000)
    p = sub.add_parser("split")
    p.add_argument("host")
    p.add_argument("addr")
    p.add_argument("--port", type=int, default=443)
    p.add_argument("--cuts", default="")
    p.add_argument("--pad", type=int, default=0)
    p.add_argument("--timeout", type=float, default=3)
    p = sub.add_parser("http")
    p.add_argument("host")
    p.add_argument("addr")
    p.add_argument("--path", default="/")
    p.add_argument("--timeout", type=float, default=3)
    p = sub.add_parser("dns")
    p.add_argument("name")
    p.add_argument("--server", default=RESOLVER)
    p.add_argument("--listen", type=float, default=1.0)
    p = sub.add_parser("bulk")
    p.add_argument("addr")
    p.add_argument("--size", type=int, default=256 * 1024)
    p = sub.add_parser("garbage")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--random", type=int, default=50)
    p = sub.add_parser("udp-rtt")
    p.add_argument("--count", type=int, default=500)
    p.add_argument("--addr", default=SITES[0])
    p.add_argument("--payload", default="ping" * 8)
    p.add_argument("--timeout", type=float, default=2)
    p = sub.add_parser("flood")
    p.add_argument("--packets", type=int, default=50000)
    p.add_argument("--dport", type=int, default=9)  # discard; 443: a port the middlebox reads QUIC on
    p.add_argument("--per-flow", type=int, default=10)
    p.add_argument("--dsts", type=int, default=0)
    p.add_argument("--net", default="198.18.2.0")
    p = sub.add_parser("rxwatch")
    p.add_argument("--dev", default="s0")
    p.add_argument("--every", type=float, default=0.01)
    args = ap.parse_args(argv)
    if args.cmd == "serve":
        asyncio.run(_serve(args))
        return 0
    if args.cmd == "rxwatch":
        cmd_rxwatch(args)
        return 0
    fn = {"tls": cmd_tls, "many": cmd_many, "split": cmd_split, "http": cmd_http, "dns": cmd_dns,
          "bulk": cmd_bulk, "garbage": cmd_garbage, "udp-rtt": cmd_udp_rtt,
          "flood": cmd_flood}[args.cmd]
    print(json.dumps(fn(args)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
