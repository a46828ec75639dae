"""Shaping by sni and http_host (issue 15 item 7): the loader, the compiled marks (middlebox config,
iptables save/restore/CLASSIFY, shaper rules), the middlebox's marking, the shaper reading marks,
and the oracle (tests/lab/test_shaping_names_lab.py runs it for real)."""

from __future__ import annotations

import json
from ipaddress import IPv4Address
from pathlib import Path

import pytest

from netlab.addressing import isp_addresses
from netlab.compile import compile_lab
from netlab.compile.dpi import dpi_config
from netlab.compile.shaping import compile_shaping, shape_mark, shaper_config
from netlab.errors import ScenarioError
from netlab.loader import load_scenario, parse_scenario
from netlab.model import Isp, Match, Reassembly, Rule, ShapingRule
from netlab.oracle import expected_verdicts
from netlab.services._parsers import TCP_ACK, TCP_PSH, TCP_SYN, build_client_hello, build_tcp
from netlab.services.dpi import ACCEPT, HOLD, KILL, Engine

ROOT = Path(__file__).resolve().parents[2]
SCENARIO = ROOT / "scenarios" / "shaping-names.yaml"
C, S = "10.1.0.2", "198.18.5.5"
SITES = {"video.test": IPv4Address(S), "docs.test": IPv4Address(S)}


def shaping(rules: str) -> str:
    return f"""version: 1
name: t
internet: {{sites: [{{name: video.test}}]}}
isps:
  - name: isp
    shaping:
{rules}"""


def test_names_load_in_shaping() -> None:
    s = parse_scenario(shaping("      - {match: {sni: video.test, port: 443}, rate: 1mbit}\n"
                               "      - {match: {http_host: Video.Test}, delay: 10ms}\n"), source="s.yaml")
    assert [r.match.sni or r.match.http_host for r in s.isps[0].shaping] == ["video.test", "video.test"]


@pytest.mark.parametrize(("rules", "key", "words"), [
    ("      - {match: {sni: video.test, proto: udp}, rate: 1mbit}\n", "isps[0].shaping[0].match", "drop proto: udp"),
    ("".join(f"      - {{match: {{sni: s{i}.video.test}}, rate: 1mbit}}\n" for i in range(256)),
     "isps[0].shaping[255].match", "more than 255"),
    ("      - {match: {dns_query: video.test}, rate: 1mbit}\n", "isps[0].shaping[0].match.dns_query", "unknown key"),
])
def test_bad_name_rules(rules: str, key: str, words: str) -> None:
    with pytest.raises(ScenarioError) as info:
        parse_scenario(shaping(rules), source="s.yaml")
    assert f": {key}: " in str(info.value) and words in str(info.value)


def test_compiled_marks() -> None:
    plan = compile_lab(load_scenario(SCENARIO))
    cfg = json.loads(plan.files["by-name/dpi.json"])
    assert cfg["rules"] == [] and [(r["sni"], r["http_host"], r["mark"]) for r in cfg["shape"]] == [
        ("video.test", None, shape_mark(0)), (None, "video.test", shape_mark(1))]
    assert "-j CONNMARK --save-mark --mask 0xff0000" in plan.files["by-name/dpi.rules"]
    marks = plan.files["by-name/shape-marks.rules"]
    assert "-I PREROUTING 1 -j CONNMARK --restore-mark --mask 0xff0000" in marks
    assert "-A NETLAB-SHAPE-CLASS -o down0 -m mark --mark 0x10000/0xff0000 -j CLASSIFY --set-class 1:a" in marks
    assert "-A NETLAB-SHAPE-CLASS -o up0 -m mark --mark 0x20000/0xff0000 -j CLASSIFY --set-class 1:b" in marks
    tc = [a for a in plan.hosts["by-name.gw"].setup if a[:3] == ("tc", "filter", "add")]
    assert tc == []  # the classes come from CLASSIFY, not from filters
    assert "by-address/shape-marks.rules" not in plan.files and "by-address/dpi.json" not in plan.files
    assert [s.name for s in plan.hosts["by-name.gw"].services] == ["resolver", "dpi"]


def test_an_address_rule_before_a_name_rule_keeps_its_packets() -> None:
    isp = Isp("i", shaping=(ShapingRule(Match(site="docs.test"), rate_bps=1_000_000),
                            ShapingRule(Match(sni="video.test"), rate_bps=256_000),
                            ShapingRule(Match(sni="docs.test"), delay_ms=100)))
    add = compile_shaping(isp, isp_addresses(1), SITES, netem_available=False)
    marks = add.files["i/shape-marks.rules"].splitlines()
    first_return = marks.index("-A NETLAB-SHAPE-CLASS -o down0 -s 198.18.5.5/32 -j RETURN")
    assert first_return < marks.index("-A NETLAB-SHAPE-CLASS -o down0 -m mark --mark 0x20000/0xff0000 "
                                      "-j CLASSIFY --set-class 1:b")
    shaper = add.files["i/shaper.rules"]
    assert "-A NETLAB-SHAPE -i up0 -o down0 -m mark --mark 0x30000/0xff0000 -j NFQUEUE --queue-num 101" in shaper
    cfg = shaper_config(isp, SITES, "10.1.0.0/24")
    assert [r.mark for r in cfg.shaping] == [None, shape_mark(1), shape_mark(2)]


def flow(e: Engine, payload: bytes, dport: int = 443, sport: int = 40000):
    e.process(build_tcp(C, S, sport, dport, 1000, 0, TCP_SYN))
    e.process(build_tcp(C, S, sport, dport, 1001, 5001, TCP_ACK))
    return e.process(build_tcp(C, S, sport, dport, 1001, 5001, TCP_PSH | TCP_ACK, payload))


def test_middlebox_marks_the_flows_of_a_name() -> None:
    isp = Isp("i", dpi_rules=(Rule(Match(http_host="docs.test"), "reset"),),
              shaping=(ShapingRule(Match(sni="video.test"), rate_bps=256_000),
                       ShapingRule(Match(http_host="video.test", port=80), rate_bps=256_000)))
    e = Engine(dpi_config(isp, isp_addresses(1), SITES))
    d = flow(e, build_client_hello("www.video.test"))
    assert d.verdict == ACCEPT and d.settled and d.mark == shape_mark(0)
    d = flow(e, build_client_hello("docs.test"), sport=40001)
    assert d.settled and d.mark == 0
    d = flow(e, b"GET / HTTP/1.1\r\nHost: video.test\r\n\r\n", dport=80, sport=40002)
    assert d.settled and d.mark == shape_mark(1)
    assert flow(e, b"GET / HTTP/1.1\r\nHost: docs.test\r\n\r\n", dport=80, sport=40003).verdict == KILL  # DPI first
    isp = Isp("i", shaping=isp.shaping, dpi_reassembly=Reassembly(bytes=10))
    e = Engine(dpi_config(isp, isp_addresses(1), SITES))
    assert flow(e, build_client_hello("video.test")).mark == 0  # the name past the window: not shaped


def test_shaper_reads_the_mark() -> None:
    isp = Isp("i", shaping=(ShapingRule(Match(sni="video.test"), delay_ms=300),))
    e = Engine(shaper_config(isp, SITES, "10.1.0.0/24"))
    down, up = build_tcp(S, C, 443, 40000, 1, 1, TCP_ACK, b"x"), build_tcp(C, S, 40000, 443, 1, 1, TCP_ACK, b"x")
    assert e.process(down, mark=shape_mark(0)).verdict == HOLD
    assert e.process(down, mark=shape_mark(0)).delay == pytest.approx(0.3)
    assert e.process(up, mark=shape_mark(0)).verdict == ACCEPT  # delay is added downstream
    assert e.process(down, mark=0).verdict == ACCEPT and e.process(down, mark=shape_mark(1)).verdict == ACCEPT


def test_oracle() -> None:
    s = load_scenario(SCENARIO)
    exp = {(v, u): e.verdict.value for (v, u), e in expected_verdicts(s, compile_lab(s).site_addresses).items()}
    assert {u: v for (i, u), v in exp.items() if i == "by-name"} == {
        "https://video.test/": "throttled", "http://video.test/": "throttled",
        "https://docs.test/": "ok", "http://docs.test/": "ok"}
    assert {v for (i, _u), v in exp.items() if i == "by-address"} == {"throttled"}
