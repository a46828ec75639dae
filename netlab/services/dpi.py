"""The DPI middlebox of an ISP router: an NFQUEUE program (``netfilterqueue``).

    python3 -m netlab.services.dpi --config LAB/<isp>/dpi.json

The kernel queues the first client->internet packets of each forwarded flow, and at placement
``border`` those of the router's own flows too (see ``netlab.compile.dpi``): there the "client" of
a flow is the router itself, the ISP resolver recursing among others. Per flow the program
reassembles the client's byte stream (so a TLS ClientHello split over several TCP segments is
still parsed; at most ``max_stream`` bytes of it, ``dpi.reassembly.bytes``: a name that ends past
them is never read) and checks the rules in order,
first match wins: TLS SNI, HTTP/1.x Host, DNS query name (dnspython), raw keyword, narrowed by
server address/port/protocol. Actions:

- ``reset``: forged RST+ACK to the client (seq = the client packet's ack) and to the server
  (seq = the client packet's seq); the packet is dropped and the flow blackholed;
- ``drop``: the packet gets the drop mark and is re-run through the chain, which saves the
  mark into the conntrack entry and drops it: the kernel drops the whole flow from then on;
- ``blockpage``: an HTTP/1.1 451 response with FIN is injected toward the client, a RST goes to
  the server, and the flow is blackholed;
- ``close``: a forged FIN+ACK goes to the client (seq = the client packet's ack), which reads an
  end of stream before the server can answer; the packet itself goes on to the server and the
  flow is otherwise left alone (ooni/netem's ``DPICloseConnectionFor*``);
- ``inject``: a forged DNS answer is sent to the client, then the query is let through, so the
  forged answer arrives first and the real one after it (a resolver's iterative query gets an
  authoritative answer, which the resolver caches);
- ``residual``: after a hit the client-server address pair gets the same action on the first
  payload packet of every later flow (every datagram for UDP) for that many seconds.

In ``shaper`` mode (config ``"mode": "shaper"``) the same program emulates delay and loss for
kernels without netem: it holds matching packets and drops a random share.

Every verdict is given even when a packet is malformed; the program never exits on bad input.

Processes: the service forks one worker per queue of its config (``queues``; the kernel spreads
packets over them by client-server address pair, see ``netlab.compile.dpi``) and writes its ready
file once every worker has bound its queue. Each worker reads the queue over netlink itself and
sends the verdicts of all the packets it read in one go in one message, the accepts as one batch
verdict. Residual blocks live in memory the workers share. A worker that dies takes the service
down (a lab fault): no part of the traffic is ever left uninspected. Logs go to stderr.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import ctypes
import dataclasses
import heapq
import json
import logging
import mmap
import os
import random
import select
import signal
import socket
import struct
import sys
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network
from pathlib import Path
from typing import Any

import dns.flags
import dns.message
import dns.rdataclass
import dns.rdatatype
import dns.rrset

from netlab.blockpage import DEFAULT as DEFAULT_BLOCKPAGE
from netlab.blockpage import MARKER
from netlab.dnsname import name_matches, wire_name
from netlab.model import QuicKnobs
from netlab.services._parsers import (
    DONE,
    NEED_MORE,
    TCP_ACK,
    TCP_FIN,
    TCP_PSH,
    TCP_RST,
    TCP_SYN,
    FlowKey,
    Packet,
    Parsed,
    build_tcp,
    build_udp,
    packet_destination,
    parse_client_hello,
    parse_http_host,
    parse_ipv4,
    parse_ipv6,
)
from netlab.services._quic import QuicCensor, QuicRule
from netlab.services.configs import (
    INSPECT_PACKETS,
    MAX_STREAM,
    DpiConfig,
    DpiRule,
    MiddleboxConfig,
    NameShapeRule,
    ShaperConfig,
    ShaperRule,
    middlebox_config_from_json,
)

log = logging.getLogger("netlab.dpi")

BLOCKPAGE_MARKER = MARKER  # the lab's own page (netlab.blockpage) carries it
FIRST_DATA_PACKET = 3  # after the SYN and the handshake's ACK
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
    settled: bool = False  # accept, and the flow's later packets need not come to the middlebox
    mark: int = 0  # mark bits to save into the flow's conntrack entry (a shaping rule's: settled only)


PASS = Decision()
SETTLED = Decision(settled=True)

@dataclass
class CRule:
    """A compiled rule."""

    index: int
    action: str
    sni: str | None = None
    http_host: str | None = None
    dns_query: str | None = None
    keyword: bytes | None = None
    servers: list[list[IPv4Network | IPv6Network]] = field(default_factory=list)  # family 4|6: 0.0.0.0/0 or ::/0
    port: int | None = None
    proto: str | None = None
    address: str | None = None
    residual: float | None = None
    page: bytes | None = None  # blockpage: the scenario's response (netlab.blockpage); None: the lab's own
    delay: float | None = None  # shaper mode, seconds
    loss: float | None = None
    describe: str = ""
    mark: int | None = None  # a shaping rule on names: the mark its flows get (netlab.compile.shaping)
    transport: str = "any"  # "tcp", "quic" or "any": which of TLS over TCP and QUIC an sni rule reads
    quic: QuicKnobs = field(default_factory=QuicKnobs)  # how it reads QUIC (netlab.services._quic)

    @classmethod
    def from_rule(cls, index: int, r: DpiRule) -> CRule:
        return cls(index=index, action=r.action, sni=r.sni, http_host=r.http_host, dns_query=r.dns_query,
                   keyword=r.keyword.encode("utf-8") if r.keyword is not None else None, servers=r.servers,
                   port=r.port, proto=r.proto, address=r.address, residual=r.residual, page=r.page or None,
                   describe=r.describe, transport=r.transport, quic=r.quic)

    @classmethod
    def from_shape(cls, index: int, r: NameShapeRule) -> CRule:
        """A shaping rule on names (dpi mode): its flows get the rule's mark."""
        return cls(index=index, action="shape", sni=r.sni, http_host=r.http_host, servers=r.servers, port=r.port,
                   proto=r.proto, describe=r.describe, mark=r.mark)

    @classmethod
    def from_shaper(cls, index: int, r: ShaperRule) -> CRule:
        """A shaping rule in shaper mode: delay and loss."""
        return cls(index=index, action="shape", servers=r.servers, port=r.port, proto=r.proto,
                   delay=r.delay_ms / 1000.0 if r.delay_ms else None, loss=r.loss, describe=r.describe, mark=r.mark)

    @property
    def reads_quic(self) -> bool:
        """An sni rule for QUIC too, or a QUIC shape rule (transport quic without a name)."""
        return self.transport == "quic" or (self.sni is not None and self.transport == "any")

    def server_ok(self, proto: int, addr: str, port: int) -> bool:
        if self.proto and {"tcp": 6, "udp": 17}[self.proto] != proto:
            return False
        if self.port is not None and port != self.port:
            return False
        if self.servers:  # an address is never in a network of the other family
            ip = IPv6Address(addr) if ":" in addr else IPv4Address(addr)
            return all(any(ip in n for n in grp) for grp in self.servers)
        return True


class Flow:
    """The client->server byte stream of one TCP flow, reassembled in sequence order."""

    __slots__ = ("base", "buf", "done", "last", "limit", "ooo", "packets", "shape")

    def __init__(self, base: int | None, now: float, limit: int = MAX_STREAM) -> None:
        self.limit = limit  # bytes of the stream kept: a name past them is never read
        self.packets = 1  # client packets of the flow so far, its SYN included
        self.shape: int | None = None  # the mark of the shaping rule its names matched (0: none)
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
        while self.ooo and len(self.buf) < self.limit:
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
                self.buf += tail[: self.limit - have]
        elif len(self.ooo) < MAX_OOO and off < self.limit:
            self.ooo[off] = data


def blockpage_response(rule: CRule | None = None) -> bytes:
    """The response a blockpage rule injects: the scenario's page, or the lab's own 451."""
    return rule.page if rule is not None and rule.page is not None else DEFAULT_BLOCKPAGE.response()


def forged_dns_answer(query: bytes, address: str) -> bytes | None:
    """A response to ``query`` carrying an A record with ``address``; None if not a query."""
    try:
        q = dns.message.from_wire(query)
        if q.flags & dns.flags.QR or len(q.question) != 1:
            return None
        r = dns.message.make_response(q)
        # A stub's query (RD) gets a recursive resolver's answer; a resolver's iterative query (a
        # border middlebox sees those) an authority's, which the resolver takes as final and caches.
        r.flags |= dns.flags.RA if q.flags & dns.flags.RD else dns.flags.AA
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
    return wire_name(q.question[0].name.to_text(omit_final_dot=True))


_V4_MAPPED = b"\0" * 10 + b"\xff\xff"


def _packed(addr: str) -> bytes:
    """An address as 16 bytes, an IPv4 one mapped into IPv6 (::ffff:a.b.c.d): one key for both families."""
    return socket.inet_pton(socket.AF_INET6, addr) if ":" in addr else _V4_MAPPED + socket.inet_aton(addr)


class ResidualTable:
    """Residual blocks keyed by (client, server), in memory shared by the workers of a middlebox.

    The kernel spreads packets over the workers by a hash of (addresses, protocol), so every flow of
    a pair and protocol meets the same worker, but the TCP and UDP flows of one pair may meet two,
    and a residual block covers both. So the table is an anonymous shared mapping made before the
    workers fork: each worker writes only its own segment (no lock between writers) and reads every
    segment. A worker records a block before it gives the verdict (or sends the forged packets) of
    the hit, so any flow that starts after the client saw that verdict finds it, on any worker.

    A segment is ``SLOTS`` slots, open addressing with ``PROBE`` probes; when all are taken by live
    blocks the one expiring first is overwritten. A slot is written between two stores of its
    sequence number (odd while writing), so a reader never acts on a half-written slot.
    """

    SLOT = struct.Struct("=I16s16sddi4x")  # seq, client, server (IPv6, IPv4-mapped), since, until, rule
    SLOTS = 4096
    PROBE = 8

    def __init__(self, segments: int = 1) -> None:
        self.segments = segments
        self.mem = mmap.mmap(-1, segments * self.SLOTS * self.SLOT.size)  # MAP_SHARED: survives fork
        self.own = 0  # the segment this process writes

    def writer(self, segment: int) -> ResidualTable:
        """The same shared table, writing in ``segment`` (a worker's own)."""
        view = copy.copy(self)  # shallow: the mapping is the same one
        view.own = segment
        return view

    def _slots(self, seg: int, key: bytes) -> range:
        first = zlib.crc32(key) % self.SLOTS
        base = seg * self.SLOTS
        return range(base + first, base + min(first + self.PROBE, self.SLOTS))

    def _read(self, slot: int) -> tuple[int, bytes, bytes, float, float, int] | None:
        off = slot * self.SLOT.size
        entry = self.SLOT.unpack_from(self.mem, off)
        if entry[0] & 1 or struct.unpack_from("=I", self.mem, off)[0] != entry[0]:
            return None  # being written right now: a concurrent hit, not a causally earlier one
        return entry

    def get(self, client: str, server: str, now: float) -> int | None:
        """The rule index of the latest live block of the pair, or None."""
        c, s = _packed(client), _packed(server)
        best: tuple[float, int] | None = None
        for seg in range(self.segments):
            for slot in self._slots(seg, c + s):
                e = self._read(slot)
                if e and e[1] == c and e[2] == s and e[3] <= now < e[4] and (best is None or e[3] > best[0]):
                    best = (e[3], e[5])
        return None if best is None else best[1]

    def put(self, client: str, server: str, since: float, until: float, rule: int) -> None:
        c, s = _packed(client), _packed(server)
        victim, victim_until = -1, float("inf")
        for slot in self._slots(self.own, c + s):
            e = self.SLOT.unpack_from(self.mem, slot * self.SLOT.size)  # own segment: no writer but us
            if e[1] == c and e[2] == s:
                victim = slot
                break
            if e[4] < victim_until:
                victim, victim_until = slot, e[4]
        off = victim * self.SLOT.size
        seq = struct.unpack_from("=I", self.mem, off)[0]
        struct.pack_into("=I", self.mem, off, seq + 1)
        self.SLOT.pack_into(self.mem, off, seq + 1, c, s, since, until, rule)
        struct.pack_into("=I", self.mem, off, seq + 2)


class Engine:
    """The decision logic, free of NFQUEUE and sockets (so the unit tests drive it directly)."""

    def __init__(self, cfg: MiddleboxConfig, rng: random.Random | None = None,
                 residual: ResidualTable | None = None) -> None:
        self.mode = cfg.mode
        if isinstance(cfg, DpiConfig):
            self.rules = [CRule.from_rule(i, r) for i, r in enumerate(cfg.rules)]
            # Shaping rules on names (the ones to mark flows for; the shaper reads the marks).
            self.shapes = [CRule.from_shape(i, s) for i, s in enumerate(cfg.shape)]
            self.mark_mask = 0
            self.max_stream, self.inspect_packets = cfg.max_stream, cfg.inspect_packets
        else:
            self.rules = [CRule.from_shaper(i, r) for i, r in enumerate(cfg.shaping)]
            self.shapes = []
            self.mark_mask = cfg.mark_mask
            self.max_stream, self.inspect_packets = MAX_STREAM, INSPECT_PACKETS
        self.flows: dict[FlowKey, Flow] = {}
        self.has_residual = any(r.residual for r in self.rules)
        # the workers of one middlebox share it (see ResidualTable); alone, an engine has its own
        self.residual = residual or ResidualTable()
        self.rng = rng or random.Random()
        self.has_keyword = any(r.keyword for r in self.rules)
        client = cfg.client_network
        self.client_net = IPv4Network(client) if client else None
        client6 = cfg.client_network6 if isinstance(cfg, ShaperConfig) else None  # dual stack: the access /64
        self.client_net6 = IPv6Network(client6) if client6 else None
        quic_rules = [QuicRule(r.index, r.sni, r.quic, r.residual) for r in self.rules if r.reads_quic]
        self.quic = QuicCensor(quic_rules, lambda i, *flow: self.rules[i].server_ok(*flow)) if quic_rules else None
        self.hits = 0
        self.packets = 0

    # --- housekeeping ------------------------------------------------------------------

    def expire(self, now: float) -> None:
        for k in [k for k, f in self.flows.items() if now - f.last > FLOW_IDLE]:
            del self.flows[k]
        if self.quic is not None:
            self.quic.expire(now)

    # --- entry point -------------------------------------------------------------------

    def process(self, raw: bytes, now: float | None = None, mark: int = 0) -> Decision:
        """The decision on one IP packet; ``mark``: its packet mark (the shaper reads it)."""
        now = time.monotonic() if now is None else now
        self.packets += 1
        pkt = parse_ipv4(raw) or parse_ipv6(raw)  # IPv6 only tried where IPv4's parse fails
        if pkt is None or pkt.proto not in (6, 17):
            return PASS
        if self.mode == "shaper":
            return self._shape(pkt, mark)
        if pkt.proto == 6:
            return self._tcp(pkt, now)
        return self._udp(pkt, now)

    # --- shaper --------------------------------------------------------------------------

    def _to_client(self, addr: str) -> bool:
        """Is ``addr`` one of the ISP's clients (a packet to it goes downstream)?"""
        if ":" in addr:
            return self.client_net6 is not None and IPv6Address(addr) in self.client_net6
        return self.client_net is not None and IPv4Address(addr) in self.client_net

    def _shape(self, pkt: Packet, mark: int = 0) -> Decision:
        for rule in self.rules:
            if rule.mark is not None:  # a rule on names: the DPI middlebox marked its flows
                if mark & self.mark_mask != rule.mark:
                    continue
                downstream = self._to_client(pkt.dst)
            elif rule.server_ok(pkt.proto, pkt.dst, pkt.dport):
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
        if not self.has_residual:  # the common case: no lookup at all
            return None
        index = self.residual.get(pkt.src, pkt.dst, now)
        return None if index is None else self.rules[index]

    def _hit(self, rule: CRule, pkt: Packet, now: float, why: str, start: float | None = None) -> None:
        """Count and log a hit; a residual block of the address pair begins at ``start`` (a QUIC
        rule's delay), by default now. Narrower QUIC blocks are the QUIC reader's own."""
        self.hits += 1
        if rule.residual and rule.quic.residual_on == "addresses":
            since = now if start is None else start
            self.residual.put(pkt.src, pkt.dst, since, since + rule.residual, rule.index)
        log.info(
            "hit rule %d (%s) %s: %s:%d -> %s:%d %s",
            rule.index, rule.describe, why, pkt.src, pkt.sport, pkt.dst, pkt.dport, rule.action,
        )

    def _tcp(self, pkt: Packet, now: float) -> Decision:
        key = (pkt.src, pkt.sport, pkt.dst, pkt.dport)
        if pkt.flags & TCP_SYN and not pkt.flags & TCP_ACK:
            self.flows[key] = Flow((pkt.seq + 1) & 0xFFFFFFFF, now, self.max_stream)
            return PASS
        flow = self.flows.get(key)
        if flow is not None:
            flow.packets += 1
            if flow.shape and not flow.done and flow.packets >= self.inspect_packets:
                return self._settle(flow)  # the window's last packet: the shaping mark goes on
        if not pkt.payload or pkt.flags & TCP_RST:
            return PASS
        res = self._residual(pkt, now)
        if res is not None:
            log.info("residual %s: %s:%d -> %s:%d", res.action, pkt.src, pkt.sport, pkt.dst, pkt.dport)
            self.flows.pop(key, None)
            return self._tcp_action(res, pkt)
        if flow is None:  # its SYN went by unseen: take this for the first data packet
            flow = self.flows[key] = Flow(None, now, self.max_stream)
            flow.packets = FIRST_DATA_PACKET
        flow.last = now
        if flow.done:
            return PASS
        # The kernel queues the first inspect_packets packets of a flow, but counts a segmentation
        # offload super-packet as one: the window is also kept here, segment by segment.
        if flow.packets <= self.inspect_packets:
            flow.add(pkt.seq, pkt.payload)
        data = bytes(flow.buf)
        # Once the kept bytes or packets are all it will read, a name still incomplete is never seen.
        full = len(data) >= self.max_stream or flow.packets >= self.inspect_packets
        parsed: dict[str, Parsed] = {}
        pending = False
        for rule in self.rules:
            if rule.dns_query or rule.transport == "quic" or not rule.server_ok(6, pkt.dst, pkt.dport):
                continue
            state, why = self._names(rule, data, full, parsed)
            if state == "pending":
                pending = True
                break  # an earlier rule may still match: later ones must wait
            if state == "hit":
                flow.done = True
                self._hit(rule, pkt, now, " ".join(why))
                return self._tcp_action(rule, pkt)
        if not pending and flow.shape is None:
            for rule in self.shapes:  # no DPI rule acts: the shaping rule the flow belongs to
                if not rule.server_ok(6, pkt.dst, pkt.dport):
                    continue
                state, why = self._names(rule, data, full, parsed)
                if state == "pending":
                    pending = True
                    break
                if state == "hit":
                    flow.shape = rule.mark or 0
                    log.info("shaping %s %s: %s:%d -> %s:%d", rule.describe, " ".join(why), pkt.src, pkt.sport,
                             pkt.dst, pkt.dport)
                    break
        if not pending and (not self.has_keyword or full):
            return self._settle(flow)
        return PASS

    def _settle(self, flow: Flow) -> Decision:
        """Nothing later in the flow can match: the kernel may keep the rest of it (with the mark of
        the shaping rule it belongs to), unless a residual block of the pair, recorded meanwhile,
        is still to act on it (a shaped flow is left to the kernel all the same)."""
        flow.done = True
        flow.buf = bytearray()
        flow.ooo.clear()
        if flow.shape:
            return Decision(settled=True, mark=flow.shape)
        return PASS if self.has_residual else SETTLED

    def _names(self, rule: CRule, data: bytes, full: bool, parsed: dict[str, Parsed]) -> tuple[str, list[str]]:
        """Whether ``rule``'s names and keyword are in the client's stream so far: "hit" (with what
        matched), "miss", or "pending" (a name is still incomplete and more will be read).
        ``parsed`` caches the stream's ClientHello and Host between the rules of one packet."""
        why: list[str] = []
        for key, want, parse in (("sni", rule.sni, parse_client_hello), ("host", rule.http_host, parse_http_host)):
            if want is None:
                continue
            got = parsed.get(key) or parsed.setdefault(key, parse(data))
            if got.status == NEED_MORE and not full:
                return "pending", why
            if got.status != DONE or not name_matches(got.value, want):
                return "miss", why
            why.append(f"{key}={got.value}")
        if rule.keyword is not None:
            if rule.keyword not in data:
                return "miss", why
            why.append(f"keyword={rule.keyword!r}")
        return "hit", why

    def _tcp_action(self, rule: CRule, pkt: Packet) -> Decision:
        end = (pkt.seq + len(pkt.payload)) & 0xFFFFFFFF
        to_server_rst = build_tcp(pkt.src, pkt.dst, pkt.sport, pkt.dport, pkt.seq, pkt.ack, TCP_RST | TCP_ACK)
        if rule.action == "reset":
            to_client = build_tcp(pkt.dst, pkt.src, pkt.dport, pkt.sport, pkt.ack, end, TCP_RST | TCP_ACK)
            return Decision(KILL, [to_client, to_server_rst], rule=rule.index)
        if rule.action == "blockpage":
            page = build_tcp(
                pkt.dst, pkt.src, pkt.dport, pkt.sport, pkt.ack, end, TCP_PSH | TCP_ACK | TCP_FIN,
                blockpage_response(rule),
            )
            return Decision(KILL, [page, to_server_rst], rule=rule.index)
        if rule.action == "close":
            # Sent before the packet goes on, so the client has its end of stream a round trip
            # ahead of the server's answer (which its kernel then refuses: data after a FIN).
            fin = build_tcp(pkt.dst, pkt.src, pkt.dport, pkt.sport, pkt.ack, end, TCP_FIN | TCP_ACK)
            return Decision(ACCEPT, [fin], rule=rule.index, settled=True)
        return Decision(KILL, rule=rule.index)  # drop (and inject, meaningless on TCP)

    def _udp(self, pkt: Packet, now: float) -> Decision:
        res = self._residual(pkt, now)
        if res is not None:
            log.info("residual %s: %s:%d -> %s:%d", res.action, pkt.src, pkt.sport, pkt.dst, pkt.dport)
            return self._udp_action(res, pkt)
        if self.quic is not None:
            index = self.quic.blocked(pkt, now)
            if index is not None:  # a residual block of one server port or one flow
                log.info("residual drop: %s:%d -> %s:%d", pkt.src, pkt.sport, pkt.dst, pkt.dport)
                return Decision(KILL, rule=index)
            quic = self.quic.inspect(pkt, now)
            if quic is not None:
                rule = self.rules[quic.rule]
                self._hit(rule, pkt, now, quic.why, start=quic.start)
                # The GFW lets the trigger through and blocks later (``delay``); the rest drop it.
                return Decision(KILL, rule=rule.index) if quic.drop else PASS
        qname: str | None = None
        parsed = False
        for rule in self.rules:
            if rule.sni or rule.http_host or rule.transport == "quic" or not rule.server_ok(17, pkt.dst, pkt.dport):
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
        return Decision(KILL, rule=rule.index)  # drop; reset/blockpage/close have no UDP form


# --- NFQUEUE over netlink --------------------------------------------------------------------
# The kernel's nfnetlink_queue protocol (linux/netfilter/nfnetlink_queue.h), spoken directly rather
# than through the netfilterqueue binding, which gives one verdict (one sendmsg) per packet: here the
# verdicts of everything read in one go leave in one sendmsg, the accepts as one batch verdict.
NETLINK_NETFILTER = 12
SOL_NETLINK = 270
NETLINK_NO_ENOBUFS = 5
NLMSG_ERROR = 2
NLM_F_REQUEST, NLM_F_ACK = 0x1, 0x4
NFNL_SUBSYS_QUEUE = 3
NFQNL_MSG_PACKET, NFQNL_MSG_VERDICT, NFQNL_MSG_CONFIG, NFQNL_MSG_VERDICT_BATCH = 0, 1, 2, 3
NFQA_PACKET_HDR, NFQA_VERDICT_HDR, NFQA_MARK, NFQA_PAYLOAD = 1, 2, 3, 10
NFQA_CFG_CMD, NFQA_CFG_PARAMS, NFQA_CFG_QUEUE_MAXLEN = 1, 2, 3
NFQNL_CFG_CMD_BIND = 1
NFQNL_COPY_PACKET = 2
NF_DROP, NF_ACCEPT, NF_REPEAT = 0, 1, 4
_NLMSG = struct.Struct("=IHHII")  # nlmsghdr, host byte order
_NLHEAD = struct.Struct("=IH")  # its length and type
_NLATTR = struct.Struct("=HH")  # nlattr: length, type
_BE32 = struct.Struct("!I")
_PACKET = (NFNL_SUBSYS_QUEUE << 8) | NFQNL_MSG_PACKET
BATCH = 64  # packets judged before their verdicts are sent (bounds the wait of the first)


def _attr(kind: int, data: bytes) -> bytes:
    n = 4 + len(data)
    return struct.pack("=HH", n, kind) + data + b"\0" * (-n % 4)


class NfQueue:
    """One bound NFQUEUE: read packets, send verdicts."""

    def __init__(self, num: int, maxlen: int = 8192, rcvbuf: int = 8 * 1024 * 1024) -> None:
        self.num = num
        self.seq = 0
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, 33, rcvbuf)  # SO_RCVBUFFORCE (root): past rmem_max
        except OSError:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        # an overflowing socket drops (or, fail open, accepts) in the kernel; don't fail our recv
        self.sock.setsockopt(SOL_NETLINK, NETLINK_NO_ENOBUFS, 1)
        self.sock.bind((0, 0))
        self.buf = bytearray(256 * 1024)
        self.view = memoryview(self.buf)
        self._config(_attr(NFQA_CFG_CMD, struct.pack("!BxH", NFQNL_CFG_CMD_BIND, socket.AF_INET)))
        self._config(_attr(NFQA_CFG_PARAMS, struct.pack("!IB", 0xFFFF, NFQNL_COPY_PACKET))
                     + _attr(NFQA_CFG_QUEUE_MAXLEN, struct.pack("!I", maxlen)))

    def fileno(self) -> int:
        return self.sock.fileno()

    def close(self) -> None:
        self.sock.close()  # the kernel unbinds the queue with the socket

    def _msg(self, kind: int, flags: int, attrs: bytes) -> bytes:
        self.seq += 1
        body = struct.pack("=BB", socket.AF_UNSPEC, 0) + struct.pack("!H", self.num) + attrs
        return _NLMSG.pack(16 + len(body), (NFNL_SUBSYS_QUEUE << 8) | kind, NLM_F_REQUEST | flags, self.seq, 0) + body

    def _config(self, attrs: bytes) -> None:
        self.sock.send(self._msg(NFQNL_MSG_CONFIG, NLM_F_ACK, attrs))
        n = self.sock.recv_into(self.buf)
        _, kind, _, _, _ = _NLMSG.unpack_from(self.buf)
        if n >= 20 and kind == NLMSG_ERROR:
            err = struct.unpack_from("=i", self.buf, 16)[0]
            if err:
                raise OSError(-err, f"NFQUEUE {self.num}: {os.strerror(-err)}")

    def verdict(self, packet_id: int, verdict: int, mark: int | None = None, batch: bool = False) -> bytes:
        """The message of a verdict on ``packet_id`` (batch: on every queued packet up to it)."""
        attrs = _attr(NFQA_VERDICT_HDR, struct.pack("!II", verdict, packet_id))
        if mark is not None:
            attrs += _attr(NFQA_MARK, struct.pack("!I", mark))
        return self._msg(NFQNL_MSG_VERDICT_BATCH if batch else NFQNL_MSG_VERDICT, 0, attrs)

    def send(self, msgs: list[bytes]) -> None:
        if msgs:
            self.sock.send(b"".join(msgs))

    def read(self) -> list[tuple[int, int, bytes]] | None:
        """The packets (id, mark, IP packet) of one datagram; None when none is waiting."""
        try:
            n = self.sock.recv_into(self.buf, 0, socket.MSG_DONTWAIT)
        except BlockingIOError:
            return None
        # Runs for every packet (the kernel sends one per datagram): locals, one copy of the payload.
        buf, view, out, off = self.buf, self.view, [], 0
        unpack_head, unpack_attr, unpack_be32 = _NLHEAD.unpack_from, _NLATTR.unpack_from, _BE32.unpack_from
        while off + 20 <= n:
            mlen, kind = unpack_head(buf, off)
            if mlen < 20 or off + mlen > n:
                break
            if kind == _PACKET:
                a, end = off + 20, off + mlen
                pid, mark, payload = -1, 0, b""
                while a + 4 <= end:
                    alen, atype = unpack_attr(buf, a)
                    if alen < 4:
                        break
                    atype &= 0x3FFF  # without the nested / byte-order flags
                    if atype == NFQA_PACKET_HDR:
                        pid = unpack_be32(buf, a + 4)[0]
                    elif atype == NFQA_MARK:
                        mark = unpack_be32(buf, a + 4)[0]
                    elif atype == NFQA_PAYLOAD:
                        payload = bytes(view[a + 4 : a + alen])
                    a += (alen + 3) & ~3
                if pid >= 0:
                    out.append((pid, mark, payload))
            off += (mlen + 3) & ~3
        return out


class Middlebox:
    """One worker: binds one queue and applies the engine's decisions."""

    def __init__(self, cfg: MiddleboxConfig, queue: int | None = None, residual: ResidualTable | None = None) -> None:
        self.cfg = cfg
        self.queue = cfg.queue if queue is None else queue
        self.engine = Engine(cfg, residual=residual)
        dpi = cfg if isinstance(cfg, DpiConfig) else DpiConfig()  # the shaper: the default marks
        self.drop_mark = dpi.drop_mark
        self.pass_mark = dpi.pass_mark  # 0: the rules have no pass mark (shaper)
        self.held: list[tuple[float, int]] = []  # (release time, packet id), shaper mode
        self.raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
        self.raw6: socket.socket | None = None  # opened for the first forged IPv6 packet (dual stack)
        self.stop = False
        self.errors = 0
        self.busy = 0.0  # seconds spent receiving and judging packets

    def judge(self, payload: bytes, mark: int = 0) -> Decision:
        try:
            dec = self.engine.process(payload, None, mark)
        except Exception:  # never let a packet kill the program
            self.errors += 1
            log.exception("engine error; packet accepted")
            return PASS
        if dec is PASS:
            return dec
        for out in dec.send:  # before the verdict, so the forged packets arrive first
            try:
                family, dst = packet_destination(out)
                self._raw(family).sendto(out, (dst, 0))
            except OSError as e:
                log.warning("sending a forged packet failed: %s", e)
        return dec

    def _raw(self, family: int) -> socket.socket:
        """The raw socket that sends a forged packet of ``family`` whole, its IP header included (an
        IPv6 raw socket of protocol IPPROTO_RAW takes the header from the packet, as IPv4's does)."""
        if family == socket.AF_INET:
            return self.raw
        if self.raw6 is None:
            self.raw6 = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_RAW)
        return self.raw6

    def drain(self, q: NfQueue) -> None:
        """Judge what is waiting; verdicts go out every BATCH packets and when the queue is empty."""
        msgs: list[bytes] = []
        accepted: list[int] = []
        judge = self.judge
        while True:
            pkts = q.read()
            if pkts is None:
                break
            for pid, mark, payload in pkts:
                dec = judge(payload, mark)
                if dec is PASS:  # most packets: nothing to send, accepted in the batch verdict
                    accepted.append(pid)
                elif dec.verdict == KILL:
                    msgs.append(q.verdict(pid, NF_REPEAT, (mark | self.drop_mark) & 0xFFFFFFFF))
                elif dec.verdict == DROP:
                    msgs.append(q.verdict(pid, NF_DROP))
                elif dec.verdict == HOLD:
                    heapq.heappush(self.held, (time.monotonic() + dec.delay, pid))
                elif dec.settled and self.pass_mark:  # re-run through the chain, which saves the mark
                    msgs.append(q.verdict(pid, NF_REPEAT, (mark | self.pass_mark | dec.mark) & 0xFFFFFFFF))
                else:
                    accepted.append(pid)
            if len(msgs) + len(accepted) >= BATCH:
                self.flush(q, msgs, accepted)
                msgs, accepted = [], []
        self.flush(q, msgs, accepted)

    def flush(self, q: NfQueue, msgs: list[bytes], accepted: list[int]) -> None:
        # A batch verdict covers every queued packet up to its id, so it goes after the other
        # verdicts, and only when no packet is held back (shaper delay) below it.
        if accepted and not self.held:
            msgs.append(q.verdict(accepted[-1], NF_ACCEPT, batch=True))
        else:
            msgs += [q.verdict(pid, NF_ACCEPT) for pid in accepted]
        try:
            q.send(msgs)
        except OSError:
            self.errors += 1
            log.exception("verdict failed")

    def release(self, q: NfQueue, now: float) -> None:
        due = []
        while self.held and self.held[0][0] <= now:
            due.append(heapq.heappop(self.held)[1])
        if due:
            try:
                q.send([q.verdict(pid, NF_ACCEPT) for pid in due])
            except OSError:
                log.exception("delayed verdict failed")

    def run(self, on_ready: Callable[[], None] | None = None) -> dict[str, Any]:
        q = NfQueue(self.queue)
        log.info("%s %s: bound to NFQUEUE %d, %d rules", self.cfg.isp, self.engine.mode, self.queue,
                 len(self.engine.rules))
        if on_ready:
            on_ready()
        poller = select.poll()
        poller.register(q.fileno(), select.POLLIN)
        next_gc = time.monotonic() + 5
        try:
            while not self.stop:
                timeout = 0.2
                if self.held:
                    timeout = max(0.0, min(timeout, self.held[0][0] - time.monotonic()))
                if poller.poll(timeout * 1000):
                    t0 = time.perf_counter()
                    self.drain(q)
                    self.busy += time.perf_counter() - t0
                now = time.monotonic()
                self.release(q, now)
                if now >= next_gc:
                    self.engine.expire(now)
                    next_gc = now + 5
        finally:
            self.release(q, float("inf"))
            q.close()
        stats = {"queue": self.queue, "packets": self.engine.packets, "hits": self.engine.hits,
                 "errors": self.errors, "busy": self.busy}
        log.info("worker %d stopped after %d packets, %d hits, %d errors; busy %.3f s", self.queue,
                 stats["packets"], stats["hits"], stats["errors"], self.busy)
        return stats


def _die_with_parent(parent: int) -> None:
    """A worker must not outlive the service: its queue would stay bound after a lab fault."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    if os.getppid() != parent:  # the parent died before the prctl
        os._exit(1)


class Service:
    """The ``dpi`` (or ``shaper``) service: one worker process per queue, forked and watched.

    Worker processes, not threads: the engine is Python, so threads would share one core. The
    service is ready (ready file) once every worker has bound its queue. If a worker exits while
    the service is not stopping, the service kills the other workers and exits 1: the lab records
    the dead critical service as a fault, and no queue is left half served."""

    def __init__(self, cfg: MiddleboxConfig) -> None:
        self.cfg = cfg
        self.queues = (cfg.queues if isinstance(cfg, DpiConfig) else []) or [cfg.queue]
        self.workers: dict[int, tuple[int, int]] = {}  # pid -> (queue, read end of its pipe)
        self.stopping = False

    def _fork(self, index: int, queue: int, residual: ResidualTable) -> None:
        r, w = os.pipe()
        parent = os.getpid()
        pid = os.fork()
        if pid:
            os.close(w)
            self.workers[pid] = (queue, r)
            return
        code = 1
        try:  # the worker: never returns into the service's code
            os.close(r)
            _die_with_parent(parent)
            box = Middlebox(self.cfg, queue, residual.writer(index))

            def _stop(*_a: object) -> None:
                box.stop = True

            signal.signal(signal.SIGTERM, _stop)
            signal.signal(signal.SIGINT, _stop)
            def _ready() -> None:
                os.write(w, b"ready\n")

            stats = box.run(on_ready=_ready)
            os.write(w, (json.dumps(stats) + "\n").encode())
            code = 0
        except BaseException:
            log.exception("worker %d failed", queue)
        finally:
            os._exit(code)

    def _read(self, fd: int) -> list[str]:
        data = b""
        while chunk := os.read(fd, 65536):
            data += chunk
        return data.decode().splitlines()

    def _kill_all(self, sig: int) -> None:
        for pid in self.workers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)

    def run(self) -> int:
        ready = self.cfg.ready_file
        if ready:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(ready)
        residual = ResidualTable(len(self.queues))
        for i, q in enumerate(self.queues):
            self._fork(i, q, residual)
        pending = {r: q for q, r in self.workers.values()}
        while pending:  # each worker writes a line once its queue is bound
            if self.stopping:
                break
            try:
                readable, _, _ = select.select(list(pending), [], [], 0.2)
            except InterruptedError:
                continue
            for fd in readable:
                if not os.read(fd, 6):
                    log.error("worker %d exited before binding its queue", pending[fd])
                    self._kill_all(signal.SIGKILL)
                    return 1
                del pending[fd]
        if ready and not self.stopping:
            os.makedirs(os.path.dirname(ready) or ".", exist_ok=True)
            tmp = ready + ".tmp"
            with open(tmp, "w") as f:
                f.write(f"{os.getpid()}\n")
            os.replace(tmp, ready)
            log.info("%d workers ready on queues %s", len(self.queues), self.queues)
        totals = {"packets": 0, "hits": 0, "errors": 0, "busy": 0.0}
        failed = False
        while self.workers:
            try:
                pid, status = os.waitpid(-1, 0)
            except ChildProcessError:
                break
            queue, fd = self.workers.pop(pid)
            code = os.waitstatus_to_exitcode(status)
            for line in self._read(fd):
                if line.startswith("{"):
                    for k in totals:
                        totals[k] += json.loads(line)[k]
            os.close(fd)
            if not self.stopping and not failed:
                log.error("worker for queue %d exited (%d): the middlebox stops", queue, code)
                failed = True
                self._kill_all(signal.SIGKILL)
        n, busy = totals["packets"], totals["busy"]
        log.info(
            "stopped after %d packets, %d hits, %d errors; busy %.3f s (%.0f packets/s of CPU)",
            n, totals["hits"], totals["errors"], busy, n / busy if busy else 0.0,
        )
        return 1 if failed else 0

    def stop(self, *_a: object) -> None:
        self.stopping = True
        self._kill_all(signal.SIGTERM)


def load_config(path: str) -> MiddleboxConfig:
    """dpi.json or shaper.json."""
    cfg = middlebox_config_from_json(Path(path).read_text())
    # a config the backend did not render: the lab folder is two levels above <isp>/dpi.json
    lab = os.path.dirname(os.path.dirname(os.path.abspath(path)))
    if cfg.ready_file is not None:
        cfg = dataclasses.replace(cfg, ready_file=cfg.ready_file.replace("@LAB@", lab))
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
    service = Service(load_config(args.config))
    signal.signal(signal.SIGTERM, service.stop)
    signal.signal(signal.SIGINT, service.stop)
    return service.run()


if __name__ == "__main__":
    sys.exit(main())
