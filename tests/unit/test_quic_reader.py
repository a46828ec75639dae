"""The middlebox's QUIC Initial reader (netlab.services._quic) and its hook in the DPI engine:
decryption of real aioquic client Initials (v1, v2, a ClientHello over two datagrams), the censor
knobs (first datagram only, no reassembly, version filter, port condition, size, late blocking,
residual scopes), and malformed input that must never raise (hypothesis)."""

from __future__ import annotations

import struct

import pytest
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection
from aioquic.quic.packet import QuicProtocolVersion
from hypothesis import given, settings
from hypothesis import strategies as st

from netlab.model import QuicKnobs
from netlab.services._parsers import DONE, NEED_MORE, NOT_THIS, build_udp
from netlab.services._quic import VERSION_1, VERSION_2, client_hello_sni, datagram_version, read_initials
from netlab.services.configs import DpiConfig
from netlab.services.dpi import ACCEPT, KILL, Engine

SERVER = "198.18.0.20"
CLIENT = "10.1.0.2"


def client_datagrams(sni: str, *, version: int = 1, split: bool = False) -> list[bytes]:
    """The first flight of aioquic's client: one 1200-byte datagram, or two when the ClientHello
    carries a post-quantum-sized key share (``split``), as Chrome's since version 124."""
    config = QuicConfiguration(is_client=True, alpn_protocols=["h3"], server_name=sni,
                               original_version={1: QuicProtocolVersion.VERSION_1,
                                                 2: QuicProtocolVersion.VERSION_2}[version],
                               quantum_readiness_test=split)
    conn = QuicConnection(configuration=config)
    conn.connect((SERVER, 443), now=0.0)
    return [d for d, _ in conn.datagrams_to_send(now=0.0)]


def sni_of(datagrams: list[bytes], reassemble: bool = True):
    return client_hello_sni([i for d in datagrams for i in read_initials(d)], reassemble)


# --- the reader ------------------------------------------------------------------------------------

@pytest.mark.parametrize("version, wire", [(1, VERSION_1), (2, VERSION_2)])
def test_initial_decrypts_to_the_sni(version: int, wire: int) -> None:
    datagrams = client_datagrams("blocked.example", version=version)
    assert len(datagrams) == 1 and len(datagrams[0]) == 1200  # the Initial, padded with zeros after it
    assert datagram_version(datagrams[0]) == wire
    initials = read_initials(datagrams[0])
    assert len(initials) == 1 and initials[0].version == wire
    assert sni_of(datagrams).value == "blocked.example"
    assert sni_of(datagrams, reassemble=False).value == "blocked.example"


def test_version_filter_skips_other_versions() -> None:
    v2 = client_datagrams("blocked.example", version=2)[0]
    assert read_initials(v2, frozenset({VERSION_1})) == []


def test_a_hello_over_two_datagrams_needs_both() -> None:
    first, second = client_datagrams("blocked.example", split=True)
    assert sni_of([first]).status == NEED_MORE
    assert sni_of([first, second]) == sni_of([second, first])
    assert sni_of([first, second]).value == "blocked.example"
    # Without reassembly (the GFW's reading) neither datagram alone shows a whole ClientHello.
    assert sni_of([first], reassemble=False).status == NOT_THIS
    assert sni_of([first, second], reassemble=False).status == NOT_THIS


def test_coalesced_packets_and_trailing_junk() -> None:
    d = client_datagrams("blocked.example")[0]
    end = len(d.rstrip(b"\0"))  # aioquic pads after the Initial packet
    initial = d[:end]
    # Two Initials in one datagram (a retransmission coalesced), then garbage with the fixed bit.
    both = initial + initial + b"\xc0\xff\xff\xff\xff" + b"x" * 40
    assert len(read_initials(both)) == 2
    assert sni_of([both]).value == "blocked.example"


@pytest.mark.parametrize("mangle", [
    lambda d: d[:100],                                  # truncated Initial
    lambda d: d[:-1].rstrip(b"\0")[:-1],                # last byte of the packet removed
    lambda d: d[:1] + b"\xba\xba\xba\xba" + d[5:],      # unknown version
    lambda d: d[:30] + bytes([d[30] ^ 0xFF]) + d[31:],  # a flipped payload byte: the AEAD tag fails
    lambda d: b"\x40" + d[1:],                          # a short header
    lambda d: b"",
    lambda d: b"\xff" * 1200,
])
def test_malformed_initials_give_nothing(mangle) -> None:
    d = mangle(client_datagrams("blocked.example")[0])
    assert read_initials(d) == [] or sni_of([d]).status != DONE


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=1500))
def test_garbage_never_raises(data: bytes) -> None:
    for reassemble in (True, False):
        client_hello_sni(read_initials(data), reassemble)
    datagram_version(data)


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_mutated_initials_never_raise(data: st.DataObject) -> None:
    d = bytearray(client_datagrams("blocked.example")[0])
    for _ in range(data.draw(st.integers(1, 8))):
        pos = data.draw(st.integers(0, len(d) - 1))
        d[pos] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(d)))
    client_hello_sni(read_initials(bytes(d[:cut])))


# --- the censor in the DPI engine ---------------------------------------------------------------------

def engine(quic: dict | None = None, residual: float | None = None, sni: str | None = "blocked.example",
           transport: str = "quic") -> Engine:
    rule = {"sni": sni, "action": "drop", "transport": transport, "residual": residual,
            "quic": QuicKnobs.from_json(quic).to_json()}
    return Engine(DpiConfig.from_dict({"mode": "dpi", "rules": [rule]}))


def send(e: Engine, datagram: bytes, sport: int = 50000, dport: int = 443, now: float = 1.0,
         server: str = SERVER) -> str:
    return e.process(build_udp(CLIENT, server, sport, dport, datagram), now=now).verdict


GFW = {"datagrams": "first", "reassemble": False, "versions": [1], "sport_above_dport": True}


def test_sni_rule_drops_quic_and_its_retransmissions() -> None:
    e = engine()
    d = client_datagrams("www.blocked.example")[0]
    assert send(e, d) == KILL
    assert send(e, d, now=1.5) == KILL  # a retransmitted Initial: the flow stays blocked
    assert send(e, client_datagrams("fine.example")[0], sport=50001) == ACCEPT


def test_transport_tcp_rule_ignores_quic() -> None:
    assert send(engine(transport="tcp"), client_datagrams("blocked.example")[0]) == ACCEPT
    assert send(engine(transport="any"), client_datagrams("blocked.example")[0]) == KILL


def test_split_client_hello_evades_the_gfw_reading_but_not_a_reassembling_censor() -> None:
    first, second = client_datagrams("blocked.example", split=True)
    gfw = engine(GFW)
    assert send(gfw, first) == ACCEPT and send(gfw, second) == ACCEPT
    careful = engine()
    assert send(careful, first) == ACCEPT  # waits for the rest of the ClientHello
    assert send(careful, second) == KILL


def test_gfw_port_condition_and_version_filter() -> None:
    gfw = engine(GFW)
    assert send(gfw, client_datagrams("blocked.example")[0], sport=400) == ACCEPT  # sport < dport
    assert send(gfw, client_datagrams("blocked.example", version=2)[0], sport=50002) == ACCEPT
    assert send(gfw, client_datagrams("blocked.example")[0], sport=50003) == KILL


def test_gfw_reads_only_a_flows_first_datagram() -> None:
    gfw = engine(GFW)
    assert send(gfw, b"junk first", sport=50004) == ACCEPT
    assert send(gfw, client_datagrams("blocked.example")[0], sport=50004, now=1.1) == ACCEPT
    careful = engine()
    assert send(careful, b"junk first", sport=50005) == ACCEPT
    assert send(careful, client_datagrams("blocked.example")[0], sport=50005, now=1.1) == KILL


def test_late_block_lets_the_trigger_through_then_blocks_the_server_port() -> None:
    e = engine({**GFW, "delay": 2.0, "residual_on": "server_port"}, residual=180)
    d = client_datagrams("blocked.example")[0]
    assert send(e, d, sport=50006, now=10.0) == ACCEPT  # the trigger passes
    assert send(e, d, sport=50007, now=11.0) == ACCEPT  # before the block starts (a 2nd trigger)
    assert send(e, b"any datagram", sport=50008, now=12.5) == KILL  # same client, server and port
    assert send(e, b"the trigger's own flow", sport=50006, now=12.5) == ACCEPT  # spared: it ends first
    assert send(e, b"any datagram", sport=50008, dport=8443, now=12.5) == ACCEPT  # another port
    assert send(e, b"any datagram", sport=50009, now=11.0 + 2.0 + 180.0) == ACCEPT  # expired (the 2nd trigger)


def test_flow_residual_spares_new_flows_and_address_residual_takes_the_pair() -> None:
    d = client_datagrams("blocked.example")[0]
    flow = engine({"residual_on": "flow"}, residual=60)
    assert send(flow, d, sport=50010) == KILL
    assert send(flow, b"x" * 50, sport=50011, now=2.0) == ACCEPT
    pair = engine(residual=60)
    assert send(pair, d, sport=50012) == KILL
    assert send(pair, b"x" * 50, sport=50013, dport=53, now=2.0) == KILL  # any UDP to the server


def test_tspu_shape_rule_drops_big_v1_initials_on_443() -> None:
    tspu = engine({"datagrams": "first", "versions": [1], "min_size": 1001}, sni=None)
    assert send(tspu, client_datagrams("anything.example")[0], sport=50014) == KILL
    assert send(tspu, client_datagrams("anything.example", version=2)[0], sport=50015) == ACCEPT
    small = client_datagrams("anything.example")[0].rstrip(b"\0")  # a 1000-byte-or-less datagram
    assert len(small) < 1001 and send(tspu, small, sport=50016) == ACCEPT


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=1400), st.integers(1, 65535), st.integers(1, 65535))
def test_engine_never_raises_on_udp_garbage(data: bytes, sport: int, dport: int) -> None:
    for e in (engine(), engine(GFW), engine({"min_size": 1001}, sni=None)):
        e.process(build_udp(CLIENT, SERVER, sport, dport, data), now=1.0)
        e.process(build_udp(CLIENT, SERVER, sport, dport, struct.pack("!B", 0xC0) + data), now=1.0)


def build_initial(dcid: bytes, payload: bytes, packet_number: int = 0) -> bytes:
    """A client Initial (QUIC v1, 4-byte packet number) carrying ``payload`` frames, protected
    with the initial keys: what a client with its own framing (Chrome's chaos protection) sends."""
    from aioquic.buffer import encode_uint_var
    from aioquic.quic.crypto import CryptoPair

    pair = CryptoPair()
    pair.setup_initial(cid=dcid, is_client=True, version=VERSION_1)
    payload = payload + b"\0" * max(0, 1100 - len(payload))  # PADDING frames
    header = (bytes([0xC3]) + struct.pack("!I", VERSION_1) + bytes([len(dcid)]) + dcid + b"\x00" + b"\x00"
              + encode_uint_var(4 + len(payload) + 16) + struct.pack("!I", packet_number))
    return pair.encrypt_packet(header, payload, packet_number)


def crypto_frame(offset: int, data: bytes) -> bytes:
    from aioquic.buffer import encode_uint_var

    return b"\x06" + encode_uint_var(offset) + encode_uint_var(len(data)) + data


def hello_of(sni: str) -> bytes:
    """The ClientHello (handshake message, no record layer) aioquic's client sends for ``sni``."""
    initial = read_initials(client_datagrams(sni)[0])[0]
    return b"".join(data for _, data in sorted(initial.crypto))


def test_hello_in_shuffled_crypto_frames_with_pings() -> None:
    hello = hello_of("blocked.example")
    cut = hello.index(b"blocked") + 3  # the name itself is split between two frames
    payload = crypto_frame(cut, hello[cut:]) + b"\x01" + crypto_frame(0, hello[:cut])  # later part first
    datagram = build_initial(b"\x11" * 8, payload)
    assert sni_of([datagram]).value == "blocked.example"
    assert sni_of([datagram], reassemble=False).status == NOT_THIS  # the GFW: the first frame is not whole
    # In two Initial packets coalesced in one datagram, and in two datagrams: the same.
    first = build_initial(b"\x22" * 8, crypto_frame(0, hello[:cut]), 0)
    second = build_initial(b"\x22" * 8, crypto_frame(cut, hello[cut:]), 1)
    assert sni_of([first + second]).value == "blocked.example"
    assert sni_of([second, first]).value == "blocked.example"
    assert sni_of([first]).status == NEED_MORE
    e = engine()
    assert send(e, first, sport=50020) == ACCEPT and send(e, second, sport=50020, now=1.01) == KILL
    assert send(engine(GFW), first + second, sport=50021) == ACCEPT
