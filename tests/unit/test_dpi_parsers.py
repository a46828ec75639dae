"""The middlebox's hand-written parsers: known inputs, and fuzzing (they never raise)."""

from __future__ import annotations

import socket
import ssl
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from netlab.dnsname import name_matches
from netlab.services._parsers import (
    DONE,
    NEED_MORE,
    NOT_THIS,
    build_client_hello,
    build_tcp,
    build_udp,
    parse_client_hello,
    parse_http_host,
    parse_ipv4,
)


def real_client_hello(sni: str | None) -> bytes:
    """The ClientHello Python's ssl module (OpenSSL) really sends."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(inc, out, server_hostname=sni)
    with pytest.raises(ssl.SSLWantReadError):
        obj.do_handshake()
    return out.read()


@pytest.mark.parametrize("sni", ["social.test", "WWW.Example.TEST", "xn--e1afmkfd.test"])
def test_real_client_hello_sni(sni):
    hello = real_client_hello(sni)
    assert parse_client_hello(hello) == parse_client_hello(bytearray(hello))
    r = parse_client_hello(hello)
    assert r.status == DONE and r.value == sni.lower()


def test_real_client_hello_without_sni():
    r = parse_client_hello(real_client_hello(None))
    assert r.status == DONE and r.value is None


def test_every_prefix_needs_more():
    hello = real_client_hello("social.test")
    for n in range(len(hello)):
        assert parse_client_hello(hello[:n]).status == NEED_MORE, n


def test_handshake_split_over_two_records():
    hello = build_client_hello("split.test")
    hs = hello[5:]
    rec = b"\x16\x03\x01"
    two = rec + struct.pack("!H", 30) + hs[:30] + rec + struct.pack("!H", len(hs) - 30) + hs[30:]
    assert parse_client_hello(two).value == "split.test"
    assert parse_client_hello(two[:40]).status == NEED_MORE


def test_built_hello_with_padding():
    hello = build_client_hello("pad.test", pad_to=1800)
    assert len(hello) > 1500
    assert parse_client_hello(hello).value == "pad.test"


@pytest.mark.parametrize(
    "data",
    [b"GET / HTTP/1.1\r\n", b"\x17\x03\x03\x00\x10" + b"\x00" * 16, b"\x16\x02\x00\x00\x01\x01",
     b"\x16\x03\x01\x00\x04\x02\x00\x00\x00", b"SSH-2.0-OpenSSH\r\n"],
)
def test_not_a_client_hello(data):
    assert parse_client_hello(data).status == NOT_THIS


def test_corrupt_sni_lengths():
    hello = bytearray(build_client_hello("x.test"))
    i = hello.find(b"x.test")
    hello[i - 2 : i] = b"\xff\xff"  # name length past the extension
    assert parse_client_hello(bytes(hello)).status == NOT_THIS


@pytest.mark.parametrize(
    ("req", "host"),
    [
        (b"GET / HTTP/1.1\r\nHost: News.Test\r\n\r\n", "news.test"),
        (b"GET / HTTP/1.1\r\nUser-Agent: x\r\nhost:news.test:8080\r\n\r\n", "news.test"),
        (b"GET http://abs.test/x HTTP/1.1\r\nHost: other.test\r\n\r\n", "abs.test"),
        (b"POST /f HTTP/1.0\nHost: lf.test.\n\n", "lf.test"),
        (b"GET / HTTP/1.1\r\nAccept: */*\r\n\r\n", None),
    ],
)
def test_http_host(req, host):
    r = parse_http_host(req)
    assert r.status == DONE and r.value == host


def test_http_needs_more_and_not_http():
    assert parse_http_host(b"GE").status == NEED_MORE
    assert parse_http_host(b"GET / HTTP/1.1\r\nHos").status == NEED_MORE
    assert parse_http_host(b"\x16\x03\x01").status == NOT_THIS
    assert parse_http_host(b"GET / SMTP\r\n").status == NOT_THIS
    assert parse_http_host(b"GET / HTTP/1.1\r\nHost: \xff\xfe\r\n\r\n").value is None


def test_name_matches():
    assert name_matches("social.test", "social.test")
    assert name_matches("a.b.social.test", "Social.Test.")
    assert not name_matches("antisocial.test", "social.test")
    assert not name_matches(None, "social.test")


def test_packets_roundtrip():
    t = parse_ipv4(build_tcp("10.1.0.2", "198.18.1.1", 40000, 443, 7, 9, 0x18, b"hi"))
    assert (t.src, t.dst, t.proto, t.sport, t.dport, t.seq, t.ack, t.flags, t.payload) == (
        "10.1.0.2", "198.18.1.1", 6, 40000, 443, 7, 9, 0x18, b"hi")
    u = parse_ipv4(build_udp("10.1.0.2", "198.18.0.2", 5353, 53, b"q"))
    assert (u.proto, u.dport, u.payload) == (17, 53, b"q")


def test_checksums_are_valid():
    """The kernel accepts what we forge: verify with the one's-complement sum."""
    pkt = build_tcp("10.1.0.2", "198.18.1.1", 1, 2, 3, 4, 0x14, b"abc")

    def csum(b: bytes) -> int:
        b += b"\x00" * (len(b) % 2)
        s = sum(struct.unpack(f"!{len(b) // 2}H", b))
        while s >> 16:
            s = (s & 0xFFFF) + (s >> 16)
        return s

    assert csum(pkt[:20]) == 0xFFFF
    seg = pkt[20:]
    pseudo = socket.inet_aton("10.1.0.2") + socket.inet_aton("198.18.1.1") + struct.pack("!BBH", 0, 6, len(seg))
    assert csum(pseudo + seg) == 0xFFFF


@pytest.mark.parametrize(
    "raw",
    [b"", b"\x45", b"\x60" + b"\x00" * 39, b"\x4f" + b"\x00" * 19, b"\x45\x00\xff\xff" + b"\x00" * 16,
     b"\x45\x00\x00\x18" + b"\x00" * 5 + b"\x06" + b"\x00" * 14],
)
def test_malformed_ip(raw):
    assert parse_ipv4(raw) is None


@settings(max_examples=600, deadline=None)
@given(st.binary(max_size=3000))
def test_fuzz_client_hello_never_raises(data):
    r = parse_client_hello(data)
    assert r.status in (DONE, NEED_MORE, NOT_THIS)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600), st.integers(0, 600))
def test_fuzz_mutated_client_hello(junk, at):
    hello = build_client_hello("fuzz.test")
    at = min(at, len(hello))
    r = parse_client_hello(hello[:at] + junk + hello[at + len(junk):])
    assert r.status in (DONE, NEED_MORE, NOT_THIS)


@settings(max_examples=600, deadline=None)
@given(st.binary(max_size=3000))
def test_fuzz_http_never_raises(data):
    assert parse_http_host(data).status in (DONE, NEED_MORE, NOT_THIS)
    assert parse_http_host(b"GET / HTTP/1.1\r\n" + data).status in (DONE, NEED_MORE, NOT_THIS)


@settings(max_examples=600, deadline=None)
@given(st.binary(max_size=200))
def test_fuzz_ipv4_never_raises(data):
    parse_ipv4(data)
    parse_ipv4(b"\x45" + data)
