"""dpi.reassembly (issue 15 item 8): how much of each flow the middlebox reads, from the scenario
key to the iptables window, the middlebox's own window and the oracle's view of which fetches
evade (netlab.first_flight)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from netlab.addressing import isp_addresses
from netlab.compile import compile_lab
from netlab.compile.dpi import compile_dpi, dpi_config
from netlab.errors import ScenarioError
from netlab.first_flight import MSS, client_hello, needed, request_head, within
from netlab.loader import load_scenario, parse_scenario
from netlab.model import Isp, Match, Reassembly, Rule
from netlab.oracle import expected_verdicts
from netlab.services._parsers import TCP_ACK, TCP_PSH, TCP_SYN, build_client_hello, build_tcp
from netlab.services.dpi import ACCEPT, KILL, Engine
from netlab.target import Target

ROOT = Path(__file__).resolve().parents[2]
C, S = "10.1.0.2", "198.18.1.1"
SNI = Rule(Match(sni="news.test"), "reset")
HOST = Rule(Match(http_host="news.test"), "reset")


def scenario(reassembly: str) -> str:
    return f"""version: 1
name: t
internet: {{sites: [{{name: news.test}}]}}
isps:
  - name: isp
    dpi:
      reassembly: {reassembly}
      rules: [{{match: {{sni: news.test}}, action: reset}}]
"""


def test_the_key_loads_with_defaults() -> None:
    assert parse_scenario(scenario("{packets: 4}"), source="s.yaml").isps[0].dpi_reassembly == Reassembly(4, 16384)
    assert parse_scenario(scenario("{bytes: 2KiB}"), source="s.yaml").isps[0].dpi_reassembly == Reassembly(10, 2048)
    assert Isp("x").dpi_reassembly == Reassembly(packets=10, bytes=16 * 1024)


@pytest.mark.parametrize(("value", "key", "words"), [
    ("{packets: 0}", "isps[0].dpi.reassembly.packets", "from 1 to 1000"),
    ("{packets: 1001}", "isps[0].dpi.reassembly.packets", "from 1 to 1000"),
    ("{bytes: 2MiB}", "isps[0].dpi.reassembly.bytes", "from 1 to 1 MiB"),
    ("{bytes: lots}", "isps[0].dpi.reassembly.bytes", "is not a size"),
    ("{segments: 2}", "isps[0].dpi.reassembly.segments", "unknown key"),
])
def test_bad_values_name_line_and_key(value: str, key: str, words: str) -> None:
    with pytest.raises(ScenarioError) as info:
        parse_scenario(scenario(value), source="s.yaml")
    assert str(info.value).startswith("s.yaml:7: ") and f"{key}: " in str(info.value) and words in str(info.value)


def test_compiled_window_and_config() -> None:
    isp = Isp("b", dpi_rules=(SNI,), dpi_reassembly=Reassembly(packets=3, bytes=300))
    add = compile_dpi(isp, isp_addresses(1), {})
    assert "--connbytes 0:3 " in add.files["b/dpi.rules"] and "--connbytes 0:10 " not in add.files["b/dpi.rules"]
    cfg = json.loads(add.files["b/dpi.json"])
    assert (cfg["inspect_packets"], cfg["max_stream"]) == (3, 300)
    assert "--connbytes 0:10 " in compile_dpi(Isp("a", dpi_rules=(SNI,)), isp_addresses(1), {}).files["a/dpi.rules"]


def engine(reassembly: Reassembly, *rules: Rule) -> Engine:
    return Engine(dpi_config(Isp("b", dpi_rules=rules, dpi_reassembly=reassembly), isp_addresses(1), {}))


def flow(e: Engine, segments: list[bytes], dport: int = 443) -> list[str]:
    """A client flow: SYN, the handshake's ACK, then ``segments``; the verdict of each segment."""
    e.process(build_tcp(C, S, 40000, dport, 1000, 0, TCP_SYN))
    e.process(build_tcp(C, S, 40000, dport, 1001, 5001, TCP_ACK))
    out, seq = [], 1001
    for seg in segments:
        out.append(e.process(build_tcp(C, S, 40000, dport, seq, 5001, TCP_PSH | TCP_ACK, seg)).verdict)
        seq += len(seg)
    return out


def test_middlebox_gives_up_past_its_bytes() -> None:
    hello = build_client_hello("news.test")
    assert flow(engine(Reassembly(bytes=len(hello)), SNI), [hello]) == [KILL]
    e = engine(Reassembly(bytes=len(hello) - 1), SNI)
    assert flow(e, [hello]) == [ACCEPT]
    assert all(f.done for f in e.flows.values())  # settled: nothing later can match


def test_middlebox_reads_only_its_packets() -> None:
    hello = build_client_hello("news.test")
    halves = [hello[:40], hello[40:]]
    assert flow(engine(Reassembly(packets=4), SNI), halves) == [ACCEPT, KILL]  # SYN, ACK, 2 segments
    assert flow(engine(Reassembly(packets=3), SNI), halves) == [ACCEPT, ACCEPT]
    req = b"GET /" + b"q" * 3000 + b" HTTP/1.1\r\nHost: news.test\r\n\r\n"
    segs = [req[i:i + MSS] for i in range(0, len(req), MSS)]
    assert flow(engine(Reassembly(packets=4), HOST), segs, dport=80) == [ACCEPT, ACCEPT, ACCEPT]
    assert flow(engine(Reassembly(packets=5), HOST), segs, dport=80) == [ACCEPT, ACCEPT, KILL]


def test_first_flight_is_what_the_probes_send() -> None:
    hello = client_hello("news.test")
    assert hello[0] == 0x16 and b"news.test" in hello and len(hello) == 517  # OpenSSL pads to 512 + header
    t = Target.parse("http://news.test/a?b=1")
    assert request_head(t) == b"GET /a?b=1 HTTP/1.1\r\nHost: news.test\r\n"
    assert request_head(Target.parse("http://news.test:8080/")).endswith(b"Host: news.test:8080\r\n")
    https, http = Target.parse("https://news.test/"), Target.parse("http://news.test/")
    assert needed(SNI, https) == 517 and needed(HOST, http) == len(request_head(http))
    kw = Rule(Match(keyword="news"), "reset")
    assert needed(kw, http) == request_head(http).index(b"news") + 4
    assert needed(Rule(Match(keyword="nope"), "reset"), http) is None
    assert within(Reassembly(), SNI, https) and not within(Reassembly(bytes=516), SNI, https)
    assert not within(Reassembly(packets=2), SNI, https) and within(Reassembly(packets=3), SNI, https)
    long = Target.parse("http://news.test/" + "q" * 3000)
    assert within(Reassembly(packets=5), HOST, long) and not within(Reassembly(packets=4), HOST, long)


def test_oracle_knows_which_fetches_evade() -> None:
    s = load_scenario(ROOT / "scenarios" / "dpi-reassembly.yaml")
    exp = expected_verdicts(s, compile_lab(s).site_addresses)
    got = {(v, u.split("/")[3][:7]): e.verdict.value for (v, u), e in exp.items() if v != "control"
           and u.startswith("http://news.test")}
    assert got == {
        ("thorough", ""): "http.reset", ("thorough", "padding"): "http.reset", ("thorough", "qqqqqqq"): "http.reset",
        ("shallow", ""): "http.reset", ("shallow", "padding"): "ok", ("shallow", "qqqqqqq"): "ok",
        ("first-segment", ""): "http.reset", ("first-segment", "padding"): "http.reset",
        ("first-segment", "qqqqqqq"): "ok",
    }
    tls = {v: exp[(v, "https://news.test/")].verdict.value for v in ("thorough", "shallow", "first-segment")}
    assert tls == {"thorough": "tls.reset", "shallow": "ok", "first-segment": "tls.reset"}
