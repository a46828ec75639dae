"""The DPI middlebox of an ISP router: an NFQUEUE program (``netfilterqueue``).

    python3 -m netlab.services.dpi --config LAB/<isp>/dpi.json

The kernel queues the first client->internet packets of each forwarded flow (see
``netlab.compile.dpi``). Per flow the program reassembles the client's byte stream (so a TLS
ClientHello split over several TCP segments is still parsed) and checks the rules in order,
first match wins: TLS SNI, HTTP/1.x Host, DNS query name (dnspython), raw keyword, narrowed by
server address/port/protocol. Actions:

- ``reset``: forged RST+ACK to the client (seq = the client packet's ack) and to the server
  (seq = the client packet's seq); the packet is dropped and the flow blackholed;
- ``drop``: the packet gets the drop mark and is re-run through the chain, which saves the
  mark into the conntrack entry and drops it: the kernel drops the whole flow from then on;
- ``blockpage``: an HTTP/1.1 451 response with FIN is injected toward the client, a RST goes to
  the server, and the flow is blackholed;
- ``inject``: a forged DNS answer is sent to the client, then the query is let through, so the
  forged answer arrives first and the real one after it;
- ``residual``: after a hit the client-server address pair gets the same action on the first
  payload packet of every later flow (every datagram for UDP) for that many seconds.

In ``shaper`` mode (config ``"mode": "shaper"``) the same program emulates delay and loss for
kernels without netem: it holds matching packets and drops a random share.

Every verdict is given even when a packet is malformed; the program never exits on bad input.
It writes its ready file once its queue is bound and logs to stderr.
"""

from __future__ import annotations

import argparse
import contextlib
import heapq
import json
import logging
import os
import random
import select
import signal
import socket
import sys
import time
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network

import dns.flags
import dns.message
import dns.rdataclass
import dns.rdatatype
import dns.rrset

from netlab.services._parsers import (
    DONE,
    NEED_MORE,
    TCP_ACK,
    TCP_FIN,
    TCP_PSH,
    TCP_RST,
    TCP_SYN,
    Packet,
    build_tcp,
    build_udp,
    name_matches,
    normalize_name,
    parse_client_hello,
    parse_http_host,
    parse_ipv4,
)

log = logging.getLogger("netlab.dpi")

BLOCKPAGE_MARKER = "netlab-blockpage"
BLOCKPAGE_BODY = (
    "<!DOCTYPE html>\n<html><head><title>Blocked</title></head>\n"
    f"<body><h1>Access denied</h1><p>This site is blocked by your ISP ({BLOCKPAGE_MARKER}).</p>"
    "</body></html>\n"
)
MAX_STREAM = 16 * 1024  # client bytes kept per flow
FLOW_IDLE = 30.0  # seconds of silence after which a flow is forgotten
MAX_OOO = 16  # out-of-order segments kept per flow

ACCEPT = "accept"
KILL = "kill"  # drop and blackhole the flow (conntrack mark)
DROP = "drop"  # drop this packet only
HOLD = "hold"  # accept after ``delay`` seconds


@dataclass
class Decision:
    verdict: str = ACCEPT
    send: list[bytes] = field(default_factory=list)  # forged packets, sent before the verdict
    delay: float = 0.0
    rule: int | None = None  # index of the rule that hit


PASS = Decision()


@dataclass
class CRule:
    """A compiled rule."""

    index: int
    action: str
    sni: str | None = None
    http_host: str | None = None
    dns_query: str | None = None
    keyword: bytes | None = None
    servers: list[list[IPv4Network]] = field(default_factory=list)
    port: int | None = None
    proto: str | None = None
    address: str | None = None
    residual: float | None = None
    delay: float | None = None  # shaper mode, seconds
    loss: float | None = None
    describe: str = ""

    @classmethod
    def from_json(cls, index: int, d: dict) -> CRule:
        kw = d.get("keyword")
        delay = d.get("delay_ms")
        return cls(
            index=index,
            action=d.get("action", "shape"),
            sni=d.get("sni"),
            http_host=d.get("http_host"),
            dns_query=d.get("dns_query"),
            keyword=kw.encode("utf-8") if isinstance(kw, str) else None,
            servers=[[IPv4Network(n) for n in grp] for grp in d.get("servers") or []],
            port=d.get("port"),
            proto=d.get("proto"),
            address=d.get("address"),
            residual=d.get("residual"),
            delay=delay / 1000.0 if delay else None,
            loss=d.get("loss"),
            describe=d.get("describe", ""),
        )

    def server_ok(self, proto: int, addr: str, port: int) -> bool:
        if self.proto and {"tcp": 6, "udp": 17}[self.proto] != proto:
            return False
        if self.port is not None and port != self.port:
            return False
        if self.servers:
            ip = IPv4Address(addr)
            return all(any(ip in n for n in grp) for grp in self.servers)
        return True


class Flow:
    """The client->server byte stream of one TCP flow, reassembled in sequence order."""

    __slots__ = ("base", "buf", "done", "last", "ooo")

    def __init__(self, base: int | None, now: float) -> None:
        self.base = base
        self.buf = bytearray()
        self.ooo: dict[int, bytes] = {}
        self.done = False
        self.last = now

    def add(self, seq: int, data: bytes) -> None:
        if self.base is None:
            self.base = seq
        off = (seq - self.base) & 0xFFFFFFFF
        if off > 1 << 31:  # before the start (e.g. a segment preceding the first seen)
            return
        self._put(off, data)
        while self.ooo and len(self.buf) < MAX_STREAM:
            progressed = False
            for o in sorted(self.ooo):
                if o <= len(self.buf):
                    self._put(o, self.ooo.pop(o))
                    progressed = True
                    break
            if not progressed:
                break

    def _put(self, off: int, data: bytes) -> None:
        have = len(self.buf)
        if off <= have:
            tail = data[have - off :]
            if tail:
                self.buf += tail[: MAX_STREAM - have]
        elif len(self.ooo) < MAX_OOO and off < MAX_STREAM:
            self.ooo[off] = data


def blockpage_response() -> bytes:
    body = BLOCKPAGE_BODY.encode()
    head = (
        "HTTP/1.1 451 Unavailable For Legal Reasons\r\n"
        "Content-Type: text/html; charset=utf-8\r\n"
        f"Content-Length: {len(body)}\r\n"
        "Connection: close\r\n"
        f"X-Netlab-Blockpage: {BLOCKPAGE_MARKER}\r\n\r\n"
    )
    return head.encode() + body


def forged_dns_answer(query: bytes, address: str) -> bytes | None:
    """A response to ``query`` carrying an A record with ``address``; None if not a query."""
    try:
        q = dns.message.from_wire(query)
        if q.flags & dns.flags.QR or len(q.question) != 1:
            return None
        r = dns.message.make_response(q)
        r.flags |= dns.flags.RA
        question = q.question[0]
        if question.rdtype in (dns.rdatatype.A, dns.rdatatype.ANY):
            r.answer.append(dns.rrset.from_text(question.name, 60, dns.rdataclass.IN, dns.rdatatype.A, address))
        return r.to_wire()
    except Exception:
        return None


def dns_query_name(payload: bytes) -> str | None:
    try:
        q = dns.message.from_wire(payload)
    except Exception:
        return None
    if q.flags & dns.flags.QR or len(q.question) != 1:
        return None
    return normalize_name(q.question[0].name.to_text(omit_final_dot=True))


class Engine:
    """The decision logic, free of NFQUEUE and sockets (so the unit tests drive it directly)."""

    def __init__(self, cfg: dict, rng: random.Random | None = None) -> None:
        self.mode = cfg.get("mode", "dpi")
        items = cfg.get("rules") if self.mode == "dpi" else cfg.get("shaping")
        self.rules = [CRule.from_json(i, d) for i, d in enumerate(items or [])]
        self.flows: dict[tuple, Flow] = {}
        self.residual: dict[tuple[str, str], tuple[float, CRule]] = {}
        self.rng = rng or random.Random()
        self.has_keyword = any(r.keyword for r in self.rules)
        self.hits = 0
        self.packets = 0

    # --- housekeeping ------------------------------------------------------------------

    def expire(self, now: float) -> None:
        for k in [k for k, f in self.flows.items() if now - f.last > FLOW_IDLE]:
            del self.flows[k]
        for k in [k for k, (t, _) in self.residual.items() if t <= now]:
            del self.residual[k]

    # --- entry point -------------------------------------------------------------------

    def process(self, raw: bytes, now: float | None = None) -> Decision:
        now = time.monotonic() if now is None else now
        self.packets += 1
        pkt = parse_ipv4(raw)
        if pkt is None or pkt.proto not in (6, 17):
            return PASS
        if self.mode == "shaper":
            return self._shape(pkt)
        if pkt.proto == 6:
            return self._tcp(pkt, now)
        return self._udp(pkt, now)

    # --- shaper --------------------------------------------------------------------------

    def _shape(self, pkt: Packet) -> Decision:
        for rule in self.rules:
            if rule.server_ok(pkt.proto, pkt.dst, pkt.dport):
                downstream = False
            elif rule.server_ok(pkt.proto, pkt.src, pkt.sport):
                downstream = True
            else:
                continue
            if rule.loss and self.rng.random() < rule.loss:
                return Decision(DROP)
            if rule.delay and downstream:
                return Decision(HOLD, delay=rule.delay)
            return PASS
        return PASS

    # --- DPI -----------------------------------------------------------------------------

    def _residual(self, pkt: Packet, now: float) -> CRule | None:
        hit = self.residual.get((pkt.src, pkt.dst))
        if hit is None:
            return None
        if hit[0] <= now:
            del self.residual[(pkt.src, pkt.dst)]
            return None
        return hit[1]

    def _hit(self, rule: CRule, pkt: Packet, now: float, why: str) -> None:
        self.hits += 1
        if rule.residual:
            self.residual[(pkt.src, pkt.dst)] = (now + rule.residual, rule)
        log.info(
            "hit rule %d (%s) %s: %s:%d -> %s:%d %s",
            rule.index, rule.describe, why, pkt.src, pkt.sport, pkt.dst, pkt.dport, rule.action,
        )

    def _tcp(self, pkt: Packet, now: float) -> Decision:
        key = (pkt.src, pkt.sport, pkt.dst, pkt.dport)
        if pkt.flags & TCP_SYN and not pkt.flags & TCP_ACK:
            self.flows[key] = Flow((pkt.seq + 1) & 0xFFFFFFFF, now)
            return PASS
        if not pkt.payload or pkt.flags & TCP_RST:
            return PASS
        res = self._residual(pkt, now)
        if res is not None:
            log.info("residual %s: %s:%d -> %s:%d", res.action, pkt.src, pkt.sport, pkt.dst, pkt.dport)
            self.flows.pop(key, None)
            return self._tcp_action(res, pkt)
        flow = self.flows.get(key)
        if flow is None:
            flow = self.flows[key] = Flow(None, now)
        flow.last = now
        if flow.done:
            return PASS
        flow.add(pkt.seq, pkt.payload)
        data = bytes(flow.buf)
        hello = host = None
        pending = False
        for rule in self.rules:
            if rule.dns_query or not rule.server_ok(6, pkt.dst, pkt.dport):
                continue
            state = "hit"
            why = []
            if rule.sni is not None:
                hello = hello or parse_client_hello(data)
                if hello.status == NEED_MORE:
                    state = "pending"
                elif hello.status != DONE or not name_matches(hello.value, rule.sni):
                    state = "miss"
                else:
                    why.append(f"sni={hello.value}")
            if state == "hit" and rule.http_host is not None:
                host = host or parse_http_host(data)
                if host.status == NEED_MORE:
                    state = "pending"
                elif host.status != DONE or not name_matches(host.value, rule.http_host):
                    state = "miss"
                else:
                    why.append(f"host={host.value}")
            if state == "hit" and rule.keyword is not None:
                if rule.keyword in data:
                    why.append(f"keyword={rule.keyword!r}")
                else:
                    state = "miss"
            if state == "pending":
                pending = True
                break  # an earlier rule may still match: later ones must wait
            if state == "hit":
                flow.done = True
                self._hit(rule, pkt, now, " ".join(why))
                return self._tcp_action(rule, pkt)
        if not pending and (not self.has_keyword or len(flow.buf) >= MAX_STREAM):
            flow.done = True
            flow.buf = bytearray()
            flow.ooo.clear()
        return PASS

    def _tcp_action(self, rule: CRule, pkt: Packet) -> Decision:
        end = (pkt.seq + len(pkt.payload)) & 0xFFFFFFFF
        to_server_rst = build_tcp(pkt.src, pkt.dst, pkt.sport, pkt.dport, pkt.seq, pkt.ack, TCP_RST | TCP_ACK)
        if rule.action == "reset":
            to_client = build_tcp(pkt.dst, pkt.src, pkt.dport, pkt.sport, pkt.ack, end, TCP_RST | TCP_ACK)
            return Decision(KILL, [to_client, to_server_rst], rule=rule.index)
        if rule.action == "blockpage":
            page = build_tcp(
                pkt.dst, pkt.src, pkt.dport, pkt.sport, pkt.ack, end, TCP_PSH | TCP_ACK | TCP_FIN,
                blockpage_response(),
            )
            return Decision(KILL, [page, to_server_rst], rule=rule.index)
        return Decision(KILL, rule=rule.index)  # drop (and inject, meaningless on TCP)

    def _udp(self, pkt: Packet, now: float) -> Decision:
        res = self._residual(pkt, now)
        if res is not None:
            log.info("residual %s: %s:%d -> %s:%d", res.action, pkt.src, pkt.sport, pkt.dst, pkt.dport)
            return self._udp_action(res, pkt)
        qname: str | None = None
        parsed = False
        for rule in self.rules:
            if rule.sni or rule.http_host or not rule.server_ok(17, pkt.dst, pkt.dport):
                continue
            why = []
            if rule.dns_query is not None:
                if not parsed:
                    qname, parsed = dns_query_name(pkt.payload), True
                if not name_matches(qname, rule.dns_query):
                    continue
                why.append(f"dns_query={qname}")
            if rule.keyword is not None:
                if rule.keyword not in pkt.payload:
                    continue
                why.append(f"keyword={rule.keyword!r}")
            self._hit(rule, pkt, now, " ".join(why))
            return self._udp_action(rule, pkt)
        return PASS

    def _udp_action(self, rule: CRule, pkt: Packet) -> Decision:
        if rule.action == "inject" and rule.address:
            answer = forged_dns_answer(pkt.payload, rule.address)
            if answer is None:
                return PASS
            forged = build_udp(pkt.dst, pkt.src, pkt.dport, pkt.sport, answer)
            return Decision(ACCEPT, [forged], rule=rule.index)
        return Decision(KILL, rule=rule.index)  # drop; reset/blockpage have no UDP form


class Middlebox:
    """Binds the queue and applies the engine's decisions."""

    def __init__(self, cfg: dict) -> None:
        self.cfg = cfg
        self.engine = Engine(cfg)
        self.drop_mark = int(cfg.get("drop_mark", 0x40000000))
        self.held: list[tuple[float, int, object]] = []
        self.seq = 0
        self.raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
        self.stop = False
        self.errors = 0
        self.busy = 0.0  # seconds spent receiving and judging packets

    def callback(self, p) -> None:  # p: netfilterqueue.Packet
        try:
            dec = self.engine.process(p.get_payload())
        except Exception:  # never let a packet kill the program
            self.errors += 1
            log.exception("engine error; packet accepted")
            dec = PASS
        for out in dec.send:
            try:
                self.raw.sendto(out, (socket.inet_ntoa(out[16:20]), 0))
            except OSError as e:
                log.warning("sending a forged packet failed: %s", e)
        try:
            if dec.verdict == KILL:
                p.set_mark((p.get_mark() | self.drop_mark) & 0xFFFFFFFF)
                p.repeat()
            elif dec.verdict == DROP:
                p.drop()
            elif dec.verdict == HOLD:
                self.seq += 1
                heapq.heappush(self.held, (time.monotonic() + dec.delay, self.seq, p))
            else:
                p.accept()
        except Exception:
            self.errors += 1
            log.exception("verdict failed")

    def release(self, now: float) -> None:
        while self.held and self.held[0][0] <= now:
            _, _, p = heapq.heappop(self.held)
            try:
                p.accept()  # type: ignore[attr-defined]
            except Exception:
                log.exception("delayed verdict failed")

    def run(self) -> int:
        from netfilterqueue import NetfilterQueue

        ready = self.cfg.get("ready_file")
        if ready:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(ready)
        nfq = NetfilterQueue()
        nfq.bind(int(self.cfg["queue"]), self.callback, max_len=int(self.cfg.get("queue_len", 8192)),
                 sock_len=8 * 1024 * 1024)
        fd = nfq.get_fd()
        log.info(
            "%s %s: bound to NFQUEUE %s, %d rules", self.cfg.get("isp"), self.engine.mode,
            self.cfg["queue"], len(self.engine.rules),
        )
        if ready:
            os.makedirs(os.path.dirname(ready) or ".", exist_ok=True)
            tmp = ready + ".tmp"
            with open(tmp, "w") as f:
                f.write(f"{os.getpid()}\n")
            os.replace(tmp, ready)
        next_gc = time.monotonic() + 5
        try:
            while not self.stop:
                now = time.monotonic()
                timeout = 0.2
                if self.held:
                    timeout = max(0.0, min(timeout, self.held[0][0] - now))
                try:
                    r, _, _ = select.select([fd], [], [], timeout)
                except InterruptedError:
                    continue
                if r:
                    t0 = time.perf_counter()
                    try:
                        nfq.run(block=False)
                    except OSError as e:
                        log.warning("queue receive error: %s", e)
                    self.busy += time.perf_counter() - t0
                now = time.monotonic()
                self.release(now)
                if now >= next_gc:
                    self.engine.expire(now)
                    next_gc = now + 5
        finally:
            self.release(float("inf"))
            nfq.unbind()
        n = self.engine.packets
        log.info(
            "stopped after %d packets, %d hits, %d errors; busy %.3f s (%.0f packets/s of CPU)",
            n, self.engine.hits, self.errors, self.busy, n / self.busy if self.busy else 0.0,
        )
        return 0


def load_config(path: str) -> dict:
    with open(path) as f:
        cfg = json.load(f)
    # a config the backend did not render: the lab folder is two levels above <isp>/dpi.json
    lab = os.path.dirname(os.path.dirname(os.path.abspath(path)))
    for k in ("ready_file",):
        if isinstance(cfg.get(k), str):
            cfg[k] = cfg[k].replace("@LAB@", lab)
    return cfg


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="netlab.services.dpi", description=__doc__.split("\n")[0])
    ap.add_argument("--config", required=True)
    ap.add_argument("-v", "--verbose", action="store_true")
    args = ap.parse_args(argv)
    logging.basicConfig(
        stream=sys.stderr, level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s dpi %(levelname)s %(message)s",
    )
    box = Middlebox(load_config(args.config))

    def _stop(*_a) -> None:
        box.stop = True

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    return box.run()


if __name__ == "__main__":
    sys.exit(main())
