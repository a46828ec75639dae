"""The middlebox on IPv6 (dual stack): the parser, the forged packets of every action, the residual
table, ``family`` rules, and what the compiler writes for ip6tables and the shaper."""

from __future__ import annotations

import socket
import struct
from ipaddress import IPv4Address, IPv6Address, IPv6Network

import dns.message
import pytest

from netlab.addressing import SiteAddresses, isp_addresses
from netlab.compile.dpi import compile_dpi, dpi_config, dpi_iptables_rules
from netlab.compile.shaping import compile_shaping
from netlab.model import Isp, Match, Rule, ShapingRule
from netlab.services._parsers import (
    TCP_ACK,
    TCP_FIN,
    TCP_PSH,
    TCP_RST,
    TCP_SYN,
    _checksum,
    build_client_hello,
    build_tcp,
    build_udp,
    packet_destination,
    parse_ip,
    parse_ipv4,
    parse_ipv6,
)
from netlab.services.dpi import ACCEPT, BLOCKPAGE_MARKER, KILL, Engine, ResidualTable

C4, S4 = "10.1.0.2", "198.18.1.1"
C6, S6, DNS6 = "2001:2:0:3::2", "2001:2::c612:101", "2001:2::c612:2"
SITES = SiteAddresses({"social.test": IPv4Address(S4)}, v6={"social.test": (IPv6Address(S6),)})


def engine(*rules: Rule) -> Engine:
    return Engine(dpi_config(Isp("isp-b", dpi_rules=rules), isp_addresses(1), SITES))


def hello6(name: str = "social.test", sport: int = 40000, dport: int = 443) -> bytes:
    return build_tcp(C6, S6, sport, dport, 1001, 5001, TCP_PSH | TCP_ACK, build_client_hello(name))


def transport_checksum_ok(raw: bytes) -> bool:
    """The TCP/UDP checksum of an IPv6 packet, checked over the RFC 8200 pseudo-header."""
    seg = raw[40:]
    pseudo = raw[8:40] + struct.pack("!IxxxB", len(seg), raw[6])
    return _checksum(pseudo + seg) == 0


def test_parse_ipv6_tcp_udp_and_extension_headers() -> None:
    raw = build_tcp(C6, S6, 40000, 443, 7, 9, TCP_SYN)
    assert raw[0] >> 4 == 6 and len(raw) == 60 and transport_checksum_ok(raw)
    pkt = parse_ipv6(raw)
    assert pkt is not None and (pkt.src, pkt.dst, pkt.proto, pkt.sport, pkt.dport, pkt.seq, pkt.ack) == \
        (C6, S6, 6, 40000, 443, 7, 9) and pkt.flags == TCP_SYN
    assert parse_ipv4(raw) is None and parse_ip(raw) == pkt
    udp = build_udp(C6, DNS6, 5353, 53, b"query")
    assert transport_checksum_ok(udp) and parse_ip(udp).payload == b"query"  # type: ignore[union-attr]
    # a hop-by-hop header (8 bytes of padding) in front of the UDP header
    hbh = bytes([17, 0]) + b"\x01\x04\0\0\0\0"
    ext = udp[:4] + struct.pack("!HBB", len(udp) - 40 + 8, 0, 64) + udp[8:40] + hbh + udp[40:]
    got = parse_ipv6(ext)
    assert got is not None and (got.proto, got.dport, got.payload) == (17, 53, b"query")
    # a later fragment: no transport header
    frag = udp[:4] + struct.pack("!HBB", 8 + 8, 44, 64) + udp[8:40] + bytes([17, 0]) + struct.pack("!HI", 8 << 3, 1) \
        + b"x" * 8
    assert parse_ipv6(frag).proto == -1  # type: ignore[union-attr]


@pytest.mark.parametrize("raw", [b"", b"\x60" * 39, b"\x60" + b"\0" * 3 + b"\xff\xff" + b"\0" * 34,
                                 build_tcp(C6, S6, 1, 2, 0, 0, TCP_SYN)[:50]])
def test_parse_ipv6_never_raises(raw: bytes) -> None:
    assert parse_ipv6(raw) is None


def test_ipv4_packets_never_reach_the_ipv6_parser() -> None:
    raw = build_tcp(C4, S4, 40000, 443, 1, 2, TCP_SYN)
    assert raw[0] >> 4 == 4 and parse_ipv6(raw) is None and parse_ip(raw) == parse_ipv4(raw)
    assert packet_destination(raw) == (socket.AF_INET, S4)
    assert packet_destination(build_tcp(C6, S6, 1, 2, 0, 0, TCP_SYN)) == (socket.AF_INET6, S6)


def test_sni_reset_over_ipv6_forges_ipv6_rsts() -> None:
    e = engine(Rule(Match(sni="social.test"), "reset"))
    assert e.process(build_tcp(C6, S6, 40000, 443, 1000, 0, TCP_SYN)).verdict == ACCEPT
    d = e.process(hello6())
    assert d.verdict == KILL and len(d.send) == 2
    to_client, to_server = (parse_ipv6(p) for p in d.send)
    assert to_client is not None and to_server is not None
    assert (to_client.src, to_client.dst, to_client.sport, to_client.dport) == (S6, C6, 443, 40000)
    assert to_client.flags & TCP_RST and to_client.seq == 5001
    assert (to_server.src, to_server.dst, to_server.seq) == (C6, S6, 1001) and to_server.flags & TCP_RST
    assert all(transport_checksum_ok(p) for p in d.send)


def test_blockpage_and_close_over_ipv6() -> None:
    e = engine(Rule(Match(http_host="social.test"), "blockpage"))
    req = b"GET / HTTP/1.1\r\nHost: social.test\r\n\r\n"
    d = e.process(build_tcp(C6, S6, 40001, 80, 1, 2, TCP_PSH | TCP_ACK, req))
    page = parse_ipv6(d.send[0])
    assert d.verdict == KILL and page is not None and page.dst == C6 and page.flags & TCP_FIN
    assert BLOCKPAGE_MARKER.encode() in page.payload and transport_checksum_ok(d.send[0])
    e = engine(Rule(Match(sni="social.test"), "close"))
    d = e.process(hello6(sport=40002))
    fin = parse_ipv6(d.send[0])
    assert d.verdict == ACCEPT and fin is not None and fin.flags == TCP_FIN | TCP_ACK and fin.dst == C6


def test_dns_inject_over_ipv6_forges_the_rules_record_type() -> None:
    e = engine(Rule(Match(dns_query="video.test"), "inject", address=IPv4Address("10.10.34.35")))
    q = dns.message.make_query("video.test", "A")
    d = e.process(build_udp(C6, DNS6, 5353, 53, q.to_wire()))
    forged = parse_ipv6(d.send[0])
    assert d.verdict == ACCEPT and forged is not None and transport_checksum_ok(d.send[0])
    assert (forged.src, forged.sport, forged.dst, forged.dport) == (DNS6, 53, C6, 5353)
    r = dns.message.from_wire(forged.payload)
    assert r.id == q.id and [rd.address for rr in r.answer for rd in rr] == ["10.10.34.35"]


def test_family_limits_a_rule_and_site_rules_take_both_families() -> None:
    e = engine(Rule(Match(sni="social.test", family=4), "reset"))
    assert e.process(hello6()).verdict == ACCEPT  # a v4-only censor: IPv6 leaks
    assert e.process(build_tcp(C4, S4, 40000, 443, 1001, 5001, TCP_PSH | TCP_ACK,
                               build_client_hello("social.test"))).verdict == KILL
    e = engine(Rule(Match(sni="social.test", site="social.test", family=6), "drop"))
    assert e.process(hello6()).verdict == KILL
    e = engine(Rule(Match(keyword="falun", cidr=IPv6Network("2001:2::/64")), "drop"))
    assert e.process(build_udp(C6, S6, 5000, 9999, b"xx falun xx")).verdict == KILL
    assert e.process(build_udp(C4, S4, 5000, 9999, b"xx falun xx")).verdict == ACCEPT


def test_residual_keys_both_families() -> None:
    table = ResidualTable()
    table.put(C6, S6, 100.0, 110.0, 3)
    table.put(C4, S4, 100.0, 110.0, 4)
    assert table.get(C6, S6, 105.0) == 3 and table.get(C4, S4, 105.0) == 4
    assert table.get(C6, S6, 111.0) is None and table.get("::ffff:10.1.0.2", S4, 105.0) == 4
    e = engine(Rule(Match(sni="social.test"), "reset", residual=10))
    e.process(hello6(), now=100)
    assert e.process(hello6("ok.test", sport=40001), now=105).verdict == KILL


def test_compiler_writes_ip6tables_rules_in_a_dual_stack_lab() -> None:
    isp = Isp("isp-b", dpi_rules=(Rule(Match(sni="social.test"), "reset"),
                                  Rule(Match(keyword="falun", proto="udp"), "drop")))
    add = compile_dpi(isp, isp_addresses(1), SITES)
    six = add.files["isp-b/dpi6.rules"]
    assert any(s[0] == "ip6tables-restore" and s[-1].endswith("isp-b/dpi6.rules") for s in add.setup)
    assert "NFQUEUE" in six and "--hex-string" not in six  # UDP keywords: the middlebox reads IPv6
    assert "--hex-string" in add.files["isp-b/dpi.rules"]
    v4only = Isp("isp-b", dpi_rules=(Rule(Match(sni="social.test", family=4), "reset"),))
    assert "isp-b/dpi6.rules" not in compile_dpi(v4only, isp_addresses(1), SITES).files
    assert "isp-b/dpi6.rules" not in compile_dpi(isp, isp_addresses(1), {"social.test": IPv4Address(S4)}).files
    assert dpi_iptables_rules(isp, site_addresses=SITES) == add.files["isp-b/dpi.rules"]


def test_shaping_on_both_families() -> None:
    isp = Isp("isp-b", shaping=(ShapingRule(Match(site="social.test"), rate_bps=256_000),
                                ShapingRule(Match(sni="social.test", family=6), rate_bps=256_000)))
    add = compile_shaping(isp, isp_addresses(1), SITES, netem_available=True)
    filters = [" ".join(s) for s in add.setup if s[:3] == ("tc", "filter", "add")]
    assert any("protocol ip prio 1 u32 match ip src 198.18.1.1/32" in f for f in filters)
    assert any("protocol ipv6 prio 1001 u32 match ip6 src 2001:2::c612:101/128" in f for f in filters)
    marks6 = add.files["isp-b/shape-marks6.rules"]
    assert "CLASSIFY --set-class 1:b" in marks6 and "2001:2::c612:101/128" in marks6
    assert "2001:2" not in add.files["isp-b/shape-marks.rules"]
