"""QUIC in the scenario language: the loader's keys and errors, the compiled middlebox (what it
queues, what it reads), and the oracle's predictions for the quic probe and the TCP probes."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from netlab.addressing import isp_addresses
from netlab.capabilities import WEB
from netlab.compile.dpi import dpi_config, dpi_iptables_rules
from netlab.errors import ScenarioError
from netlab.loader import load_scenario, parse_scenario
from netlab.model import QuicKnobs
from netlab.oracle import expected_verdicts, late_block_delay
from probes.quic import QuicProbe

ROOT = Path(__file__).resolve().parents[2]
QUIC = QuicProbe.capabilities

HEAD = """version: 1
name: q
internet:
  sites:
    - name: a.test
    - name: b.test
      quic: false
isps:
  - name: isp
    dpi:
      rules:
"""


def verdicts(path: str, caps=QUIC, **probe: object) -> dict[tuple[str, str], str]:
    scenario = load_scenario(ROOT / path)
    if probe:
        scenario = dataclasses.replace(scenario, probe={**scenario.probe, **probe})
    return {k: e.verdict.value for k, e in expected_verdicts(scenario, scenario.site_addresses(), caps).items()}


def test_quic_yaml_predictions() -> None:
    v = verdicts("scenarios/quic.yaml")
    isp = {url: verdict for (vantage, url), verdict in v.items() if vantage == "quicisp"}
    assert isp == {
        "https://quic-sni.test/": "quic.timeout", "https://udp-dropped.test/": "quic.timeout",
        "https://udp-rejected.test/": "quic.reset", "https://trigger.test/": "quic.timeout",
        "https://neighbour.test/": "quic.timeout",  # the residual block of the shared address
        "https://tcp-only.test/": "site_down", "https://clean.test/": "ok",
    }
    assert v[("control", "https://tcp-only.test/")] == "site_down"
    # The web probe loads every page over TCP (TLS passes the QUIC-only rule, the firewall blocks UDP
    # only); its QUIC step (web_quic) finds HTTP/3 blocked wherever the quic probe fails.
    web = verdicts("scenarios/quic.yaml", WEB)
    assert {url for (v, url), verdict in web.items() if verdict == "quic.blocked"} == {
        url for url, verdict in isp.items() if verdict.startswith("quic.")}
    assert set(web.values()) == {"ok", "quic.blocked"}
    assert set(verdicts("scenarios/quic.yaml", WEB, web_quic=False).values()) == {"ok"}


def test_gfw_replay_blocks_the_second_fetch_and_a_split_hello_evades_it() -> None:
    v = verdicts("scenarios/gfw-quic-2024.yaml")
    blocked = {url for (vantage, url), verdict in v.items() if vantage == "gfw" and verdict != "ok"}
    assert blocked and all(url.endswith("/again") for url in blocked)  # the trigger's own fetch completes
    assert "https://search.test/again" in blocked and "https://home.test/again" not in blocked
    assert 2 <= sum("video.test" in url for url in blocked) <= 4  # coverage 0.58 of five sites
    assert set(verdicts("scenarios/gfw-quic-2024.yaml", quic_split_hello=True).values()) == {"ok"}
    assert set(verdicts("scenarios/gfw-quic-2024.yaml", quic_version=2).values()) == {"ok"}
    scenario = load_scenario(ROOT / "scenarios/gfw-quic-2024.yaml")
    assert late_block_delay(scenario.isp("gfw")) == 3.0 and late_block_delay(scenario.isp("open")) == 0.0


def test_tspu_replay_drops_v1_whatever_the_name() -> None:
    v = verdicts("scenarios/tspu-quic-2022.yaml")
    assert {verdict for (vantage, _), verdict in v.items() if vantage == "tspu"} == {"quic.timeout"}
    assert set(verdicts("scenarios/tspu-quic-2022.yaml", quic_version=2).values()) == {"ok"}
    assert set(verdicts("scenarios/tspu-quic-2022.yaml", WEB).values()) == {"ok"}


def test_loader_reads_transport_and_knobs() -> None:
    s = parse_scenario(HEAD + """        - match: {sni: a.test}
          transport: quic
          action: drop
          residual: 30
          quic: {datagrams: first, reassemble: false, versions: [1], sport_above_dport: true, min_size: 1001,
                 delay: 2, residual_on: server_port}
        - match: {sni: b.test}
          transport: tcp
          action: reset
        - match: {port: 443}
          transport: quic
          action: drop
targets: [https://a.test/]
""")
    r0, r1, r2 = s.isp("isp").dpi_rules
    assert r0.quic == QuicKnobs("first", False, (1,), True, 1001, 2.0, "server_port") and r0.reads_quic
    assert r1.transport == "tcp" and not r1.reads_quic and r1.reads_tcp
    assert r2.match.sni is None and r2.reads_quic and not r2.reads_tcp
    assert s.site("b.test").quic is False and s.site("a.test").quic is True


@pytest.mark.parametrize("rule, where, what", [
    ("{match: {sni: a.test}, transport: udp, action: drop}", "transport", "expected one of"),
    ("{match: {sni: a.test}, transport: quic, action: reset}", "action", "can only drop"),
    ("{match: {http_host: a.test}, transport: quic, action: drop}", "match", "sni and addresses"),
    ("{match: {port: 443}, transport: tcp, action: drop}", "match", "DPI rule needs"),
    ("{match: {sni: a.test}, action: drop, quic: {datagrams: first}}", "quic", "need transport: quic"),
    ("{match: {sni: a.test}, transport: quic, action: drop, quic: {versions: [3]}}", "quic.versions", "1 and 2"),
    ("{match: {sni: a.test}, transport: quic, action: drop, quic: {delay: 0.3}}", "quic.delay", "races"),
    ("{match: {sni: a.test}, transport: quic, action: drop, quic: {delay: 2}}", "quic.delay", "server_port"),
    ("{match: {sni: a.test}, transport: quic, action: drop, quic: {residual_on: flow}}", "quic.residual_on",
     "needs the rule's residual"),
    ("{match: {sni: a.test}, transport: quic, action: drop, quic: {datagrams: some}}", "quic.datagrams",
     "expected one of"),
    ("{match: {sni: a.test}, transport: quic, action: drop, quic: {bogus: 1}}", "quic", "bogus"),
])
def test_loader_errors_name_line_and_key(rule: str, where: str, what: str) -> None:
    with pytest.raises(ScenarioError) as err:
        parse_scenario(HEAD + f"        - {rule}\ntargets: [https://a.test/]\n", source="q.yaml")
    message = str(err.value)
    assert message.startswith("q.yaml:12: isps[0].dpi.rules[0]") and f".{where}" in message.split(":")[2]
    assert what in message


def test_middlebox_queues_udp_443_and_reads_quic() -> None:
    s = load_scenario(ROOT / "scenarios/gfw-quic-2024.yaml")
    isp = s.isp("gfw")
    assert "-p udp --dport 443" in dpi_iptables_rules(isp)
    assert "-p tcp" not in dpi_iptables_rules(isp)  # QUIC-only rules queue no TCP
    rule = dpi_config(isp, isp_addresses(1), s.site_addresses()).rules[0]
    assert rule.transport == "quic" and rule.quic.datagrams == "first"
    # An sni rule for both transports queues TCP and UDP 443, beside DNS on 53.
    both = parse_scenario(HEAD + """        - {match: {sni: a.test}, action: drop}
        - {match: {dns_query: b.test}, action: drop}
targets: [https://a.test/]
""").isp("isp")
    rules = dpi_iptables_rules(both)
    assert "-p tcp " in rules and "-p udp -m multiport --dports 53,443" in rules


def test_sites_with_quic_publish_an_https_record() -> None:
    from netlab.compile import compile_lab

    plan = compile_lab(load_scenario(ROOT / "scenarios/quic.yaml"), "q")
    zones = "\n".join(v if isinstance(v, str) else v.decode() for k, v in plan.files.items() if k.endswith(".zone"))
    assert 'clean.test. IN HTTPS 1 . alpn="h3"' in zones
    assert "tcp-only.test. IN HTTPS" not in zones  # quic: false
    origin = {s["name"]: s for s in json.loads(plan.files["inet/origin.json"])["sites"]}
    assert origin["clean.test"]["quic"] is True and origin["tcp-only.test"]["quic"] is False


def test_analysis_of_quic_measurements() -> None:
    from harness.analysis import analyse

    base = {"queries": [], "x_resolved": {"system": ["198.18.1.1"], "public": None}, "x_status_code": 200,
            "x_title": "t", "x_body_length": 100, "x_body_seconds": 0.01}
    control = {**base, "x_failed_stage": None, "failure": None, "x_quic_failure": None}
    fail = {**base, "x_status_code": None, "x_failed_stage": "quic"}
    assert analyse({**fail, "failure": "generic_timeout_error"}, control, []).verdict.value == "quic.timeout"
    assert analyse({**fail, "failure": "connection_refused"}, control, []).verdict.value == "quic.reset"
    web = {**base, "x_failed_stage": None, "failure": None}
    assert analyse({**web, "x_quic_failure": "generic_timeout_error"}, control, []).verdict.value == "quic.blocked"
    assert analyse({**web, "x_quic_failure": None}, control, []).verdict.value == "ok"
    assert analyse(web, control, []).verdict.value == "ok"  # no QUIC step
    # The control's HTTP/3 fails too (a site without it): not blocking.
    assert analyse({**web, "x_quic_failure": "connection_refused"}, {**control, "x_quic_failure": "connection_refused"},
                   []).verdict.value == "ok"
