"""QUIC for the DPI middlebox: read the SNI of a client's Initial packets, and the QUIC rules'
per-flow state (which datagrams a censor reads, its filters, late and per-tuple residual blocks).

Anyone on the path can decrypt a client's Initial packets: their keys derive from the client's
Destination Connection ID and a public per-version salt (RFC 9001 section 5.2; QUIC v2, RFC 9369,
has its own salt and labels). aioquic does the header parsing, header-protection removal and AEAD
opening; this module walks the decrypted frames, collects the CRYPTO data and hands the
ClientHello to the middlebox's own lenient SNI parser (``_parsers.parse_client_hello``, after
wrapping it in the TLS record layer QUIC does without).

Censors differ in what they read (docs/scenario.md, "QUIC"): the GFW since 2024 reads only the first
datagram of a new flow, only QUIC v1, only when the source port is above the destination port, and
only a ClientHello whole in the first CRYPTO frame; Russia's TSPU in 2022 dropped by shape
(v1, port 443, 1001 bytes or more) without reading the SNI. ``netlab.model.QuicKnobs`` carries
these choices per rule; ``QuicCensor`` applies them. Nothing here raises on any input (fuzzed in
the unit tests).
"""

from __future__ import annotations

import functools
import struct
from collections.abc import Callable
from dataclasses import dataclass, field

from aioquic.buffer import Buffer, BufferReadError
from aioquic.quic.crypto import CryptoError, CryptoPair
from aioquic.quic.packet import QuicPacketType, pull_quic_header

from netlab.dnsname import name_matches
from netlab.model import QuicKnobs
from netlab.services._parsers import DONE, NEED_MORE, NOT_THIS, FlowKey, Packet, Parsed, parse_client_hello

#: What a block holds: one flow, or (client, server, port) for a residual block on the server's port.
BlockKey = FlowKey | tuple[str, str, int]

VERSION_1 = 0x00000001
VERSION_2 = 0x6B3343CF
KNOWN_VERSIONS = {1: VERSION_1, 2: VERSION_2}  # as a scenario names them -> wire value
MAX_DATAGRAMS = 4  # Initial datagrams kept per flow while a ClientHello is incomplete
MAX_CRYPTO = 16 * 1024  # CRYPTO bytes collected per flow
FLOW_STATE = 60.0  # seconds a censor remembers a flow (the GFW's, measured: GFWR section 3.3)
_RECORD = 1 << 14  # a TLS record carries at most this much

# Frames a client's Initial may carry (RFC 9000 section 17.2.2).
_PADDING, _PING, _ACK, _ACK_ECN, _CRYPTO, _CLOSE = 0x00, 0x01, 0x02, 0x03, 0x06, 0x1C

_NOT = Parsed(NOT_THIS)
_NEED = Parsed(NEED_MORE)


@dataclass(frozen=True)
class Initial:
    """One decrypted client Initial packet: its version and the CRYPTO frames it carries
    (offset, data) in packet order."""

    version: int
    dcid: bytes
    crypto: tuple[tuple[int, bytes], ...]


def is_long_header(datagram: bytes) -> bool:
    return len(datagram) >= 7 and datagram[0] & 0xC0 == 0xC0


def datagram_version(datagram: bytes) -> int | None:
    """The version field of a long-header packet (the bytes the TSPU looked at), else None."""
    return struct.unpack_from("!I", datagram, 1)[0] if is_long_header(datagram) else None


def read_initials(datagram: bytes, versions: frozenset[int] = frozenset(KNOWN_VERSIONS.values())) -> list[Initial]:
    """The client Initial packets of one UDP datagram that decrypt with ``versions``' keys.

    Coalesced packets are walked by their Length fields; the walk stops at the first byte without
    the fixed bit (aioquic pads its first datagram with zeros after the Initial) or at anything
    malformed. Never raises."""
    try:
        return _read_initials(datagram, versions)
    except Exception:  # belt and braces: aioquic's parsers are C code with their own errors
        return []


def _read_initials(datagram: bytes, versions: frozenset[int]) -> list[Initial]:
    out: list[Initial] = []
    buf = Buffer(data=datagram)
    while not buf.eof():
        start = buf.tell()
        if not datagram[start] & 0x40 or not datagram[start] & 0x80:
            break  # padding, junk, or a short-header packet: no more Initials in this datagram
        try:
            header = pull_quic_header(buf, host_cid_length=8)
        except (ValueError, BufferReadError):
            break
        end = start + header.packet_length
        if header.version not in versions or header.packet_type != QuicPacketType.INITIAL or end > len(datagram):
            if header.packet_length <= 0 or end > len(datagram):
                break
            buf.seek(end)
            continue
        try:
            pair = CryptoPair()
            pair.setup_initial(cid=header.destination_cid, is_client=False, version=header.version)
            _, payload, _ = pair.decrypt_packet(datagram[start:end], buf.tell() - start, 0)
        except (CryptoError, ValueError, BufferReadError, OverflowError):
            break
        out.append(Initial(header.version, header.destination_cid, _crypto_frames(payload)))
        buf.seek(end)
    return out


def _crypto_frames(payload: bytes) -> tuple[tuple[int, bytes], ...]:
    """The CRYPTO frames of a decrypted Initial payload; the walk stops at an unknown frame."""
    frames: list[tuple[int, bytes]] = []
    f = Buffer(data=payload)
    try:
        while not f.eof():
            kind = f.pull_uint_var()
            if kind in (_PADDING, _PING):
                continue
            if kind in (_ACK, _ACK_ECN):
                f.pull_uint_var()  # largest acknowledged
                f.pull_uint_var()  # delay
                ranges = f.pull_uint_var()
                f.pull_uint_var()  # first range
                for _ in range(min(ranges, 256) * 2):
                    f.pull_uint_var()
                if kind == _ACK_ECN:
                    for _ in range(3):
                        f.pull_uint_var()
            elif kind == _CRYPTO:
                offset = f.pull_uint_var()
                length = f.pull_uint_var()
                frames.append((offset, f.pull_bytes(length)))
            else:  # CONNECTION_CLOSE, or a frame an Initial may not carry
                break
    except (BufferReadError, ValueError, OverflowError):
        pass
    return tuple(frames)


def _as_records(handshake: bytes) -> bytes:
    """``handshake`` in TLS records: QUIC carries handshake messages without the record layer the
    middlebox's ClientHello parser expects."""
    out = bytearray()
    for i in range(0, max(len(handshake), 1), _RECORD):
        chunk = handshake[i:i + _RECORD]
        out += b"\x16\x03\x01" + struct.pack("!H", len(chunk)) + chunk
    return bytes(out)


def client_hello_sni(initials: list[Initial], reassemble: bool = True) -> Parsed:
    """The SNI of the ClientHello the Initials carry.

    ``reassemble``: stitch the CRYPTO stream from every frame of every Initial (what a client
    needs, and what the TLS parser of a careful censor does); otherwise only the first CRYPTO
    frame, at offset 0, counts (the GFW as measured in 2024-2025: a ClientHello split over frames
    or datagrams is not read). ``NEED_MORE`` while the stream is incomplete."""
    if not initials:
        return _NOT
    if not reassemble:
        first = next((frames[0] for frames in (i.crypto for i in initials) if frames), None)
        if first is None or first[0] != 0:
            return _NOT
        hello = parse_client_hello(_as_records(first[1]))
        return _NOT if hello.status == NEED_MORE else hello
    chunks: dict[int, bytes] = {}
    for initial in initials:
        for offset, data in initial.crypto:
            if offset < MAX_CRYPTO and len(data) > len(chunks.get(offset, b"")):
                chunks[offset] = data
    stream = bytearray()
    for offset in sorted(chunks):
        if offset > len(stream):
            break  # a gap: wait for the missing frame
        stream += chunks[offset][len(stream) - offset:]
    if not stream:
        return _NEED
    return parse_client_hello(_as_records(bytes(stream[:MAX_CRYPTO])))


# --- what a rule reads, and the censor's per-flow state ------------------------------------------

def wire_versions(knobs: QuicKnobs) -> frozenset[int]:
    """The version field values of the QUIC versions a rule reads."""
    return frozenset(KNOWN_VERSIONS[v] for v in knobs.versions)


@dataclass
class QuicRule:
    """A DPI rule as the QUIC reader sees it: ``sni`` None matches any QUIC Initial (a shape rule)."""

    index: int
    sni: str | None
    knobs: QuicKnobs
    residual: float | None = None

    @functools.cached_property
    def versions(self) -> frozenset[int]:
        return wire_versions(self.knobs)


@dataclass
class _Flow:
    datagrams: list[bytes] = field(default_factory=list)
    last: float = 0.0
    done: bool = False


@dataclass(frozen=True)
class QuicHit:
    """What the middlebox does with a datagram: ``rule`` fired (``trigger``: on this datagram;
    otherwise a residual block of it), ``drop`` it or let it pass."""

    rule: int
    drop: bool
    trigger: bool
    why: str = ""
    start: float = 0.0  # when the blocking that follows a trigger begins


class QuicCensor:
    """Per-worker QUIC state: flows (client 4-tuple) and residual blocks narrower than the
    address pair (server_port, flow), which only UDP of one pair can meet, so one worker's memory
    holds them (the kernel sends every UDP packet of a pair to the same worker)."""

    def __init__(self, rules: list[QuicRule], server_ok: Callable[[int, int, str, int], bool]) -> None:
        self.rules = rules
        self._server_ok = server_ok  # (rule index, proto, server address, port): the rule's address keys
        self.flows: dict[FlowKey, _Flow] = {}
        # key -> (since, until, rule, the triggering flows a late block spares)
        self.blocks: dict[BlockKey, tuple[float, float, int, frozenset[FlowKey]]] = {}

    def expire(self, now: float) -> None:
        for k in [k for k, f in self.flows.items() if now - f.last > FLOW_STATE]:
            del self.flows[k]
        for bk in [bk for bk, b in self.blocks.items() if b[1] <= now]:
            del self.blocks[bk]

    def blocked(self, pkt: Packet, now: float) -> int | None:
        """The rule of a live server_port or flow residual block covering this datagram."""
        if not self.blocks:
            return None
        flow = (pkt.src, pkt.sport, pkt.dst, pkt.dport)
        for key in ((pkt.src, pkt.dst, pkt.dport), flow):
            block = self.blocks.get(key)
            if block is not None and block[0] <= now < block[1] and flow not in block[3]:
                return block[2]
        return None

    def inspect(self, pkt: Packet, now: float) -> QuicHit | None:
        """Read a client datagram (UDP, client to server) as the QUIC rules say; a hit or None."""
        key = (pkt.src, pkt.sport, pkt.dst, pkt.dport)
        flow = self.flows.get(key)
        first = flow is None
        if flow is None:
            flow = self.flows[key] = _Flow()
        flow.last = now
        if flow.done:
            return None
        added = is_long_header(pkt.payload) and len(flow.datagrams) < MAX_DATAGRAMS
        if added:
            flow.datagrams.append(pkt.payload)
        elif not first:
            return None  # nothing new to read on this flow
        pending = waiting = False
        parsed: dict[tuple[int, frozenset[int], bool], Parsed] = {}  # (datagrams, versions, reassemble)
        version = datagram_version(pkt.payload)
        for rule in self.rules:
            k = rule.knobs
            if k.datagrams == "first" and not first:
                continue
            if not added:
                waiting = waiting or k.datagrams == "all"  # a careful censor reads on past junk
                continue
            if not self._server_ok(rule.index, 17, pkt.dst, pkt.dport):
                continue
            if k.sport_above_dport and not pkt.sport > pkt.dport:
                continue
            if k.min_size and len(pkt.payload) < k.min_size:
                continue
            if version not in rule.versions:
                continue
            if rule.sni is None:
                # A shape rule: a long-header packet of a listed version is enough (no decryption).
                flow.done = True
                return self._trigger(rule, pkt, now, f"quic version {version:#x}, {len(pkt.payload)} bytes")
            datagrams = flow.datagrams[:1] if k.datagrams == "first" else flow.datagrams
            memo = (len(datagrams), rule.versions, k.reassemble)
            if memo not in parsed:
                initials = [i for d in datagrams for i in read_initials(d, rule.versions)]
                parsed[memo] = client_hello_sni(initials, k.reassemble)
            hello = parsed[memo]
            if hello.status == NEED_MORE and k.datagrams == "all":
                pending = True
                break  # an earlier rule may still match once the hello is whole: later ones wait
            if hello.status == DONE and name_matches(hello.value, rule.sni):
                flow.done = True
                return self._trigger(rule, pkt, now, f"quic sni={hello.value}")
        if not pending and not waiting:
            flow.done = True
            flow.datagrams.clear()
        return None

    def _trigger(self, rule: QuicRule, pkt: Packet, now: float, why: str) -> QuicHit:
        k = rule.knobs
        start = now + (k.delay or 0.0)
        flow = (pkt.src, pkt.sport, pkt.dst, pkt.dport)
        # A late block (delay > 0) spares the triggering connection, which the lab's fetch ends before
        # the block starts (the oracle cannot race them); the connections after it meet the block.
        spared = frozenset({flow}) if k.delay else frozenset()
        if not spared:
            # The rest of the flow is blocked from `start` on. The kernel's conntrack mark cannot do it
            # for UDP: the entry of a flow whose first datagram is dropped dies with that datagram, so
            # a retransmitted Initial comes back here as a new flow.
            self._block(flow, start, start + FLOW_STATE, rule.index, now, spared)
        if rule.residual and k.residual_on != "addresses":
            key = (pkt.src, pkt.dst, pkt.dport) if k.residual_on == "server_port" else flow
            self._block(key, start, start + rule.residual, rule.index, now, spared)
        return QuicHit(rule.index, drop=k.delay is None, trigger=True, why=why, start=start)

    def _block(self, key: BlockKey, start: float, until: float, rule: int, now: float,
               spared: frozenset[FlowKey]) -> None:
        """Block ``key`` from ``start`` to ``until``, but not the ``spared`` flows; a live or pending
        block keeps its earlier start (a new trigger during the delay does not postpone it)."""
        old = self.blocks.get(key)
        if old is not None and old[1] > now:
            start, until, spared = min(start, old[0]), max(until, old[1]), spared | old[3]
        self.blocks[key] = (start, until, rule, spared)
