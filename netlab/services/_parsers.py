"""Wire parsers for the DPI middlebox: IPv4/IPv6, TCP and UDP headers, the TLS ClientHello's SNI and the
HTTP/1.x Host header (DNS goes through dnspython). Hand-written because no maintained library
parses a *partial* ClientHello incrementally; every function here takes arbitrary bytes and
never raises (the unit tests fuzz them with hypothesis).

Parsers of stream data return a ``Parsed`` with ``status``:

- ``NEED_MORE``: the bytes so far are a valid prefix; wait for more segments;
- ``NOT_THIS``: the stream is not this protocol (or is malformed): stop looking;
- ``DONE``: parsed; ``value`` is the name found (lower-case, no trailing dot) or None.
"""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass

from netlab.dnsname import wire_name
from netlab.first_flight import MAX_HELLO, MAX_HTTP_HEAD  # what the middlebox waits for at most

NEED_MORE = "need_more"
NOT_THIS = "not_this"
DONE = "done"

TCP_FIN = 0x01
TCP_SYN = 0x02
TCP_RST = 0x04
TCP_PSH = 0x08
TCP_ACK = 0x10


@dataclass(frozen=True)
class Parsed:
    status: str
    value: str | None = None


_NEED = Parsed(NEED_MORE)
_NOT = Parsed(NOT_THIS)


# --- TLS ---------------------------------------------------------------------------------


def _handshake_bytes(data: bytes) -> tuple[bytes, bool] | None:
    """Concatenate the fragments of consecutive TLS handshake records.

    Returns (handshake bytes so far, complete_records_only) or None when ``data`` is not TLS."""
    out = bytearray()
    pos = 0
    while pos < len(data):
        if len(data) - pos < 5:
            # a record header cut by the segment boundary: check what we have of it
            head = data[pos:]
            if head[0] != 0x16 or (len(head) >= 2 and head[1] != 0x03):
                return None if not out else (bytes(out), True)
            return bytes(out), False
        ctype, major, _minor, length = struct.unpack_from("!BBBH", data, pos)
        if ctype != 0x16 or major != 0x03 or length == 0 or length > (1 << 14) + 2048:
            if not out:
                return None
            return bytes(out), True
        body = data[pos + 5 : pos + 5 + length]
        out += body
        if len(body) < length:
            return bytes(out), False
        pos += 5 + length
    return bytes(out), True


def parse_client_hello(data: bytes) -> Parsed:
    """Find the server_name of a TLS ClientHello at the start of a client's byte stream."""
    try:
        return _parse_client_hello(bytes(data))
    except Exception:  # defensive: the parser below is bounds-checked, this is belt and braces
        return _NOT


def _parse_client_hello(data: bytes) -> Parsed:
    if not data:
        return _NEED
    hs = _handshake_bytes(data[: MAX_HELLO + 5 * 8])
    if hs is None:
        return _NOT
    msg, _ = hs
    if len(msg) < 4:
        return _NEED if len(data) < MAX_HELLO else _NOT
    if msg[0] != 0x01:  # not a ClientHello
        return _NOT
    hlen = int.from_bytes(msg[1:4], "big")
    if hlen > MAX_HELLO:
        return _NOT
    if len(msg) < 4 + hlen:
        return _NEED if len(data) < MAX_HELLO + 5 * 8 else _NOT
    body = msg[4 : 4 + hlen]
    p = 0

    def need(n: int) -> bool:
        return p + n <= len(body)

    # legacy_version, random
    if not need(2 + 32):
        return _NOT
    p += 34
    # session id
    if not need(1):
        return _NOT
    sid = body[p]
    p += 1
    if sid > 32 or not need(sid):
        return _NOT
    p += sid
    # cipher suites
    if not need(2):
        return _NOT
    cs = int.from_bytes(body[p : p + 2], "big")
    p += 2
    if cs % 2 or not need(cs):
        return _NOT
    p += cs
    # compression methods
    if not need(1):
        return _NOT
    cm = body[p]
    p += 1
    if not need(cm):
        return _NOT
    p += cm
    if p == len(body):
        return Parsed(DONE, None)  # no extensions at all
    if not need(2):
        return _NOT
    ext_total = int.from_bytes(body[p : p + 2], "big")
    p += 2
    if not need(ext_total):
        return _NOT
    end = p + ext_total
    while p + 4 <= end:
        etype, elen = struct.unpack_from("!HH", body, p)
        p += 4
        if p + elen > end:
            return _NOT
        if etype == 0:  # server_name
            ext = body[p : p + elen]
            if len(ext) < 2:
                return _NOT
            list_len = int.from_bytes(ext[:2], "big")
            q = 2
            stop = min(len(ext), 2 + list_len)
            while q + 3 <= stop:
                ntype = ext[q]
                nlen = int.from_bytes(ext[q + 1 : q + 3], "big")
                q += 3
                if q + nlen > stop:
                    return _NOT
                if ntype == 0:
                    name = wire_name(ext[q : q + nlen])
                    return Parsed(DONE, name) if name else _NOT
                q += nlen
            return Parsed(DONE, None)
        p += elen
    return Parsed(DONE, None)


def build_client_hello(sni: str | None, *, pad_to: int = 0) -> bytes:
    """A syntactically valid TLS 1.2-style ClientHello record (for tests and benchmarks)."""
    exts = b""
    if sni is not None:
        name = sni.encode("ascii")
        entry = b"\x00" + struct.pack("!H", len(name)) + name
        sn = struct.pack("!H", len(entry)) + entry
        exts += struct.pack("!HH", 0, len(sn)) + sn
    exts += struct.pack("!HH", 0x000A, 4) + b"\x00\x02\x00\x1d"  # supported_groups: x25519
    if pad_to:
        fill = max(0, pad_to - len(exts) - 60)
        exts += struct.pack("!HH", 0x0015, fill) + b"\x00" * fill  # padding extension
    body = (
        b"\x03\x03"
        + bytes(range(32))
        + b"\x00"
        + struct.pack("!H", 4)
        + b"\x13\x01\xc0\x2f"
        + b"\x01\x00"
        + struct.pack("!H", len(exts))
        + exts
    )
    hs = b"\x01" + len(body).to_bytes(3, "big") + body
    return b"\x16\x03\x01" + struct.pack("!H", len(hs)) + hs


# --- HTTP --------------------------------------------------------------------------------

_METHODS = (b"GET", b"POST", b"HEAD", b"PUT", b"DELETE", b"OPTIONS", b"PATCH", b"CONNECT", b"TRACE")


def parse_http_host(data: bytes) -> Parsed:
    """The Host of an HTTP/1.x request at the start of a client's byte stream (the host of an
    absolute-form request target wins, as RFC 9112 says)."""
    try:
        return _parse_http_host(bytes(data))
    except Exception:
        return _NOT


def _parse_http_host(data: bytes) -> Parsed:
    if not data:
        return _NEED
    sp = data.find(b" ", 0, 16)
    if sp < 0:
        if len(data) >= 16 or not any(m.startswith(data) for m in _METHODS):
            return _NOT
        return _NEED
    if data[:sp] not in _METHODS:
        return _NOT
    head = data[:MAX_HTTP_HEAD]
    first_end = head.find(b"\n")
    if first_end < 0:
        return _NEED if len(data) < MAX_HTTP_HEAD else _NOT
    parts = head[:first_end].rstrip(b"\r").split(b" ")
    if len(parts) != 3 or not parts[2].startswith(b"HTTP/1."):
        return _NOT
    target = parts[1]
    if target[:7].lower() == b"http://" or target[:8].lower() == b"https://":
        authority = target.split(b"//", 1)[1].split(b"/", 1)[0].split(b"?", 1)[0]
        host = _strip_port(authority.rsplit(b"@", 1)[-1])
        name = wire_name(host)
        if name:
            return Parsed(DONE, name)
    pos = first_end + 1
    while True:
        end = head.find(b"\n", pos)
        if end < 0:
            return _NEED if len(data) < MAX_HTTP_HEAD else Parsed(DONE, None)
        line = head[pos:end].rstrip(b"\r")
        if not line:
            return Parsed(DONE, None)  # end of the header block, no Host
        key, colon, value = line.partition(b":")
        if colon and key.strip().lower() == b"host":
            name = wire_name(_strip_port(value.strip()))
            return Parsed(DONE, name)
        pos = end + 1


def _strip_port(host: bytes) -> bytes:
    if host.startswith(b"["):
        return host.split(b"]", 1)[0] + b"]"
    return host.split(b":", 1)[0]


# --- IPv4 / IPv6 / TCP / UDP ---------------------------------------------------------------


#: A flow as the middlebox keys it: (source address, source port, destination address, destination port).
FlowKey = tuple[str, int, str, int]


@dataclass(slots=True)  # built for every queued packet: slots make that and its reads cheaper
class Packet:
    src: str
    dst: str
    proto: int  # 6 tcp, 17 udp, other
    sport: int = 0
    dport: int = 0
    seq: int = 0
    ack: int = 0
    flags: int = 0
    payload: bytes = b""


_IPV4 = struct.Struct("!BxHxxHxB2x4s4s")


def parse_ipv4(raw: bytes) -> Packet | None:
    """Headers of an IPv4 packet as the kernel hands it to NFQUEUE; None if malformed or a
    non-first fragment. Never raises."""
    try:
        if len(raw) < 20:
            return None
        vihl, total, frag, proto, a, b = _IPV4.unpack_from(raw)  # one call: this runs for every packet
        ihl = (vihl & 0x0F) * 4
        if vihl >> 4 != 4 or ihl < 20 or total < ihl or total > len(raw):
            return None
        src = socket.inet_ntoa(a)
        dst = socket.inet_ntoa(b)
        if frag & 0x1FFF:  # a later fragment: no transport header
            return Packet(src, dst, -1)
        seg = raw[ihl:total]
        if proto == 6:
            if len(seg) < 20:
                return None
            sport, dport, seq, ack, off = struct.unpack_from("!HHIIB", seg)
            doff = (off >> 4) * 4
            if doff < 20 or doff > len(seg):
                return None
            return Packet(src, dst, 6, sport, dport, seq, ack, seg[13], seg[doff:])
        if proto == 17:
            if len(seg) < 8:
                return None
            sport, dport, ulen = struct.unpack_from("!HHH", seg)
            end = ulen if 8 <= ulen <= len(seg) else len(seg)
            return Packet(src, dst, 17, sport, dport, payload=seg[8:end])
        return Packet(src, dst, proto)
    except Exception:
        return None


_IPV6_EXTENSIONS = (0, 43, 60)  # hop-by-hop, routing, destination options: skipped to the transport
_IPV6_FRAGMENT = 44


def parse_ipv6(raw: bytes) -> Packet | None:
    """Headers of an IPv6 packet as the kernel hands it to NFQUEUE (extension headers skipped);
    None if malformed; a non-first fragment has no transport header (proto -1). Never raises.
    Called only for what parse_ipv4 refuses, so IPv4 traffic pays nothing for it."""
    try:
        if len(raw) < 40 or raw[0] >> 4 != 6:
            return None
        end = 40 + int.from_bytes(raw[4:6], "big")
        if end > len(raw):
            return None
        src = socket.inet_ntop(socket.AF_INET6, raw[8:24])
        dst = socket.inet_ntop(socket.AF_INET6, raw[24:40])
        proto, pos = raw[6], 40
        while proto in _IPV6_EXTENSIONS or proto == _IPV6_FRAGMENT:
            if pos + 8 > end:
                return None
            if proto == _IPV6_FRAGMENT:
                if int.from_bytes(raw[pos + 2 : pos + 4], "big") & 0xFFF8:  # a later fragment
                    return Packet(src, dst, -1)
                proto, pos = raw[pos], pos + 8
            else:
                proto, pos = raw[pos], pos + (raw[pos + 1] + 1) * 8
        seg = raw[pos:end]
        # The transport part repeats parse_ipv4's on purpose: there it is inline, since a shared
        # helper would add a call to every IPv4 packet the middlebox reads (its packets/s figure).
        if proto == 6:
            if len(seg) < 20:
                return None
            sport, dport, seq, ack, off = struct.unpack_from("!HHIIB", seg)
            doff = (off >> 4) * 4
            if doff < 20 or doff > len(seg):
                return None
            return Packet(src, dst, 6, sport, dport, seq, ack, seg[13], seg[doff:])
        if proto == 17:
            if len(seg) < 8:
                return None
            sport, dport, ulen = struct.unpack_from("!HHH", seg)
            stop = ulen if 8 <= ulen <= len(seg) else len(seg)
            return Packet(src, dst, 17, sport, dport, payload=seg[8:stop])
        return Packet(src, dst, proto)
    except Exception:
        return None


def parse_ip(raw: bytes) -> Packet | None:
    """An IPv4 or IPv6 packet's headers (parse_ipv4, else parse_ipv6)."""
    return parse_ipv4(raw) or parse_ipv6(raw)


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\x00"
    s: int = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def _ip_header(src: str, dst: str, proto: int, length: int, ttl: int = 64) -> bytes:
    hdr = struct.pack(
        "!BBHHHBBH4s4s", 0x45, 0, 20 + length, 0, 0x4000, ttl, proto, 0,
        socket.inet_aton(src), socket.inet_aton(dst),
    )
    return hdr[:10] + struct.pack("!H", _checksum(hdr)) + hdr[12:]


def _ip6_header(src: str, dst: str, proto: int, length: int, hop_limit: int = 64) -> bytes:
    return (struct.pack("!IHBB", 6 << 28, length, proto, hop_limit)
            + socket.inet_pton(socket.AF_INET6, src) + socket.inet_pton(socket.AF_INET6, dst))


def _pseudo_header(src: str, dst: str, proto: int, length: int) -> bytes:
    """The checksum's pseudo-header (RFC 793 for IPv4, RFC 8200 section 8.1 for IPv6)."""
    if ":" in src:
        return (socket.inet_pton(socket.AF_INET6, src) + socket.inet_pton(socket.AF_INET6, dst)
                + struct.pack("!IxxxB", length, proto))
    return socket.inet_aton(src) + socket.inet_aton(dst) + struct.pack("!BBH", 0, proto, length)


def _ip_packet(src: str, dst: str, proto: int, segment: bytes) -> bytes:
    """``segment`` behind an IPv4 or IPv6 header, the family of ``src``'s."""
    if ":" in src:
        return _ip6_header(src, dst, proto, len(segment)) + segment
    return _ip_header(src, dst, proto, len(segment)) + segment


def build_tcp(src: str, dst: str, sport: int, dport: int, seq: int, ack: int, flags: int,
              payload: bytes = b"", window: int = 65535) -> bytes:
    """A TCP segment in an IPv4 or IPv6 packet (the family of the addresses)."""
    tcp = struct.pack("!HHIIBBHHH", sport, dport, seq & 0xFFFFFFFF, ack & 0xFFFFFFFF, 5 << 4,
                      flags, window, 0, 0) + payload
    csum = _checksum(_pseudo_header(src, dst, 6, len(tcp)) + tcp)
    tcp = tcp[:16] + struct.pack("!H", csum) + tcp[18:]
    return _ip_packet(src, dst, 6, tcp)


def build_udp(src: str, dst: str, sport: int, dport: int, payload: bytes) -> bytes:
    """A UDP datagram in an IPv4 or IPv6 packet (the family of the addresses)."""
    udp = struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload
    csum = _checksum(_pseudo_header(src, dst, 17, len(udp)) + udp) or 0xFFFF
    udp = udp[:6] + struct.pack("!H", csum) + udp[8:]
    return _ip_packet(src, dst, 17, udp)


def packet_destination(raw: bytes) -> tuple[int, str]:
    """The address family and destination of a built IP packet (where a raw socket sends it)."""
    if raw[0] >> 4 == 6:
        return socket.AF_INET6, socket.inet_ntop(socket.AF_INET6, raw[24:40])
    return socket.AF_INET, socket.inet_ntoa(raw[16:20])
