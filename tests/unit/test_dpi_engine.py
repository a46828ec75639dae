"""The middlebox's decisions, driven with hand-made packets (no NFQUEUE, no privileges)."""

from __future__ import annotations

import random
from ipaddress import IPv4Address

import dns.message
from hypothesis import given, settings
from hypothesis import strategies as st

from netlab.addressing import isp_addresses
from netlab.compile.dpi import dpi_config
from netlab.compile.shaping import shaper_config
from netlab.model import Isp, Match, Rule, ShapingRule
from netlab.services._parsers import (
    TCP_ACK,
    TCP_FIN,
    TCP_PSH,
    TCP_RST,
    TCP_SYN,
    build_client_hello,
    build_tcp,
    build_udp,
    parse_ipv4,
)
from netlab.services.dpi import ACCEPT, BLOCKPAGE_MARKER, DROP, HOLD, KILL, Engine

C, S1, S2, DNS = "10.1.0.2", "198.18.1.1", "198.18.1.2", "198.18.0.2"
SITES = {"social.test": IPv4Address(S1), "news.test": IPv4Address(S2)}


def engine(*rules: Rule) -> Engine:
    return Engine(dpi_config(Isp("isp-b", dpi_rules=rules), isp_addresses(1), SITES))


def syn(sport=40000, dst=S1, dport=443, seq=1000):
    return build_tcp(C, dst, sport, dport, seq, 0, TCP_SYN)


def data(payload, sport=40000, dst=S1, dport=443, seq=1001, ack=5001):
    return build_tcp(C, dst, sport, dport, seq, ack, TCP_PSH | TCP_ACK, payload)


def test_sni_reset_forges_rsts_with_right_sequence_numbers():
    e = engine(Rule(Match(sni="social.test"), "reset"))
    assert e.process(syn()).verdict == ACCEPT
    hello = build_client_hello("www.social.test")
    d = e.process(data(hello))
    assert d.verdict == KILL and len(d.send) == 2
    to_client, to_server = (parse_ipv4(p) for p in d.send)
    assert (to_client.src, to_client.dst, to_client.sport, to_client.dport) == (S1, C, 443, 40000)
    assert to_client.flags & TCP_RST and to_client.seq == 5001 and to_client.ack == 1001 + len(hello)
    assert (to_server.src, to_server.dst) == (C, S1) and to_server.flags & TCP_RST and to_server.seq == 1001


def test_split_client_hello_is_reassembled():
    e = engine(Rule(Match(sni="social.test"), "drop"))
    e.process(syn())
    hello = build_client_hello("social.test")
    assert e.process(data(hello[:50])).verdict == ACCEPT
    assert e.process(data(hello[50:], seq=1001 + 50)).verdict == KILL


def test_out_of_order_and_retransmitted_segments():
    e = engine(Rule(Match(sni="social.test"), "drop"))
    e.process(syn())
    hello = build_client_hello("social.test")
    assert e.process(data(hello[60:], seq=1061)).verdict == ACCEPT
    assert e.process(data(hello[:30])).verdict == ACCEPT
    assert e.process(data(hello[:60])).verdict == KILL  # retransmission that fills the hole


def test_no_sni_and_other_names_pass():
    e = engine(Rule(Match(sni="social.test"), "reset"))
    for i, name in enumerate([None, "antisocial.test", "ok.test"]):
        e.process(syn(sport=41000 + i))
        assert e.process(data(build_client_hello(name), sport=41000 + i)).verdict == ACCEPT


def test_first_matching_rule_wins_and_narrowing():
    e = engine(
        Rule(Match(sni="social.test", port=8443), "drop"),
        Rule(Match(sni="social.test", site="news.test"), "drop"),
        Rule(Match(sni="social.test"), "reset"),
    )
    d = e.process(data(build_client_hello("social.test")))
    assert d.verdict == KILL and d.rule == 2
    d = e.process(data(build_client_hello("social.test"), dst=S2, sport=40001))
    assert d.rule == 1


def test_http_blockpage():
    e = engine(Rule(Match(http_host="news.test"), "blockpage"))
    req = b"GET / HTTP/1.1\r\nHost: news.test\r\n\r\n"
    d = e.process(data(req, dport=80, dst=S2))
    assert d.verdict == KILL
    page = parse_ipv4(d.send[0])
    assert page.flags & TCP_FIN and page.seq == 5001 and page.ack == 1001 + len(req)
    assert page.payload.startswith(b"HTTP/1.1 451 ") and BLOCKPAGE_MARKER.encode() in page.payload
    assert b"<title>Blocked</title>" in page.payload


def test_close_forges_a_fin_to_the_client_and_lets_the_packet_on():
    e = engine(Rule(Match(sni="social.test"), "close"), Rule(Match(http_host="news.test"), "close"))
    e.process(syn())
    hello = build_client_hello("social.test")
    d = e.process(data(hello))
    assert d.verdict == ACCEPT and d.settled and d.rule == 0 and len(d.send) == 1  # no RST to the server
    fin = parse_ipv4(d.send[0])
    assert (fin.src, fin.dst, fin.sport, fin.dport) == (S1, C, 443, 40000)
    assert fin.flags == TCP_FIN | TCP_ACK and fin.seq == 5001 and fin.ack == 1001 + len(hello) and not fin.payload
    req = b"GET / HTTP/1.1\r\nHost: news.test\r\n\r\n"
    d = e.process(data(req, sport=40001, dport=80, dst=S2))
    assert d.verdict == ACCEPT and parse_ipv4(d.send[0]).flags == TCP_FIN | TCP_ACK
    # the flow is left alone afterwards: the server's later packets and the client's are not judged again
    assert e.process(data(b"more", seq=1001 + len(hello))).send == []


def test_http_host_split_over_segments():
    e = engine(Rule(Match(http_host="news.test"), "drop"))
    assert e.process(data(b"GET / HTTP/1.1\r\nHo", dport=80)).verdict == ACCEPT
    assert e.process(data(b"st: news.test\r\n\r\n", dport=80, seq=1001 + 18)).verdict == KILL


def test_keyword_tcp_and_udp():
    e = engine(Rule(Match(keyword="falun"), "reset"))
    assert e.process(data(b"GET /?q=fal", dport=80)).verdict == ACCEPT
    assert e.process(data(b"un HTTP/1.1\r\n", dport=80, seq=1001 + 11)).verdict == KILL
    assert e.process(build_udp(C, S1, 5000, 9999, b"xx falun xx")).verdict == KILL


def test_dns_inject_sends_answer_then_accepts():
    e = engine(Rule(Match(dns_query="video.test"), "inject", address=IPv4Address("10.10.34.35")))
    q = dns.message.make_query("www.Video.test", "A")
    d = e.process(build_udp(C, DNS, 5353, 53, q.to_wire()))
    assert d.verdict == ACCEPT and len(d.send) == 1
    forged = parse_ipv4(d.send[0])
    assert (forged.src, forged.sport, forged.dst, forged.dport) == (DNS, 53, C, 5353)
    r = dns.message.from_wire(forged.payload)
    assert r.id == q.id and [rd.address for rr in r.answer for rd in rr] == ["10.10.34.35"]
    ok = dns.message.make_query("ok.test", "A")
    assert e.process(build_udp(C, DNS, 5354, 53, ok.to_wire())) .send == []


def test_residual_blocks_the_pair_then_expires():
    e = engine(Rule(Match(sni="social.test"), "reset", residual=10))
    e.process(data(build_client_hello("social.test")), now=100)
    # another name, same server, new flow: reset at the first payload packet
    d = e.process(data(build_client_hello("ok.test"), sport=40001), now=105)
    assert d.verdict == KILL and len(d.send) == 2
    assert e.process(syn(sport=40002), now=105).verdict == ACCEPT
    # another server is not affected
    assert e.process(data(build_client_hello("ok.test"), sport=40003, dst=S2), now=105).verdict == ACCEPT
    assert e.process(data(build_client_hello("ok.test"), sport=40004), now=111).verdict == ACCEPT


def test_garbage_never_raises():
    e = engine(Rule(Match(sni="social.test"), "reset"), Rule(Match(dns_query="v.test"), "inject",
                                                              address=IPv4Address("10.0.0.1")))
    rng = random.Random(3)
    for _ in range(300):
        n = rng.randrange(0, 200)
        e.process(bytes(rng.randrange(256) for _ in range(n)))
        e.process(data(bytes(rng.randrange(256) for _ in range(n))))
        e.process(build_udp(C, DNS, 1, 53, bytes(rng.randrange(256) for _ in range(n))))


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=400), max_size=6))
def test_fuzz_streams(chunks):
    e = engine(Rule(Match(sni="social.test"), "reset"), Rule(Match(http_host="news.test"), "blockpage"),
               Rule(Match(keyword="kw"), "drop"))
    seq = 1001
    for c in chunks:
        assert e.process(data(c, seq=seq)).verdict in (ACCEPT, KILL)
        seq += len(c)


def test_shaper_delay_down_and_loss():
    isp = Isp("isp-b", shaping=(ShapingRule(Match(site="social.test"), delay_ms=50, loss=0.5),))
    e = Engine(shaper_config(isp, SITES), rng=random.Random(1))
    down = [e.process(build_udp(S1, C, 53, 5000, b"x")) for _ in range(200)]
    assert {d.verdict for d in down} == {DROP, HOLD}
    assert all(d.delay == 0.05 for d in down if d.verdict == HOLD)
    up = [e.process(build_udp(C, S1, 5000, 53, b"x")).verdict for _ in range(200)]
    assert set(up) == {DROP, ACCEPT} and 50 < up.count(DROP) < 150
    assert e.process(build_udp(C, S2, 5000, 53, b"x")).verdict == ACCEPT
