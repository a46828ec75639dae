"""compile_dpi / compile_shaping output."""

from __future__ import annotations

import json
from ipaddress import IPv4Address, IPv4Network

import pytest

from netlab.addressing import isp_addresses
from netlab.compile.dpi import RouterAdditions, compile_dpi, dpi_iptables_rules, kernel_keyword_rules
from netlab.compile.shaping import compile_shaping
from netlab.model import Isp, Match, Rule, ShapingRule
from netlab.plan import LAB_DIR

SITES = {"social.test": IPv4Address("198.18.1.1"), "ok.test": IPv4Address("198.18.1.5")}


def test_empty_when_no_rules():
    isp = Isp("isp-a")
    assert not compile_dpi(isp, isp_addresses(1), SITES)
    assert not compile_shaping(isp, isp_addresses(1), SITES, netem_available=False)
    assert compile_dpi(isp, isp_addresses(1), SITES) == RouterAdditions()


def test_dpi_additions():
    isp = Isp("isp-b", dpi_rules=(
        Rule(Match(sni="social.test"), "reset", residual=30),
        Rule(Match(dns_query="video.test"), "inject", address=IPv4Address("10.10.34.35")),
        Rule(Match(keyword="falun", site="ok.test", port=80), "drop"),
    ))
    add = compile_dpi(isp, isp_addresses(2), SITES)
    assert set(add.files) == {"isp-b/dpi.json", "isp-b/dpi.rules"}
    cfg = json.loads(add.files["isp-b/dpi.json"])
    assert cfg["ready_file"] == f"{LAB_DIR}/isp-b/dpi.ready"
    assert cfg["rules"][0]["sni"] == "social.test" and cfg["rules"][0]["residual"] == 30
    assert cfg["rules"][1]["address"] == "10.10.34.35"
    assert cfg["rules"][2]["servers"] == [["198.18.1.5/32"]] and cfg["rules"][2]["port"] == 80
    rules = add.files["isp-b/dpi.rules"]
    assert "--queue-bypass" not in rules
    assert "-p tcp -m connbytes" in rules and "-p udp -m connbytes" in rules  # keyword: udp too
    assert "CONNMARK" in rules and rules.rstrip().endswith("COMMIT")
    assert add.setup == [("iptables-restore", "--noflush", f"{LAB_DIR}/isp-b/dpi.rules")]
    (svc,) = add.services
    assert svc.argv[:3] == ("python3", "-m", "netlab.services.dpi")
    assert svc.ready.kind == "file" and svc.ready.path == "isp-b/dpi.ready"
    assert svc.ready.address == IPv4Address("10.2.0.1")
    assert any("fail closed" in n for n in add.notes)


def test_fail_open_and_udp_only_dns():
    isp = Isp("isp-b", dpi_fail="open", dpi_rules=(Rule(Match(dns_query="v.test"), "drop"),))
    rules = compile_dpi(isp, isp_addresses(1), SITES).files["isp-b/dpi.rules"]
    assert "--queue-bypass" in rules and "-p udp --dport 53" in rules and "-p tcp" not in rules


@pytest.mark.parametrize(
    "rule",
    [
        Rule(Match(sni="a.test"), "inject", address=IPv4Address("10.0.0.1")),
        Rule(Match(sni="a.test"), "blockpage"),
        Rule(Match(site="ok.test"), "drop"),
        Rule(Match(sni="a.test"), "nxdomain"),
        Rule(Match(sni="a.test", site="nosuch.test"), "drop"),
    ],
)
def test_invalid_rules(rule):
    with pytest.raises(ValueError):
        compile_dpi(Isp("x", dpi_rules=(rule,)), isp_addresses(1), SITES)


def test_shaping_rate_without_netem():
    isp = Isp("isp-b", shaping=(ShapingRule(Match(site="ok.test"), rate_bps=256_000),))
    add = compile_shaping(isp, isp_addresses(1), SITES, netem_available=False)
    assert not add.services  # rate alone needs no middlebox
    cmds = [" ".join(c) for c in add.setup]
    assert "tc qdisc replace dev down0 root handle 1: htb default 0" in cmds
    assert "tc class add dev up0 parent 1: classid 1:a htb rate 256000bit ceil 256000bit" in cmds
    assert any("dev down0" in c and "match ip src 198.18.1.5/32" in c for c in cmds)
    assert any("dev up0" in c and "match ip dst 198.18.1.5/32" in c for c in cmds)


def test_shaping_delay_loss_emulated_or_netem():
    isp = Isp("isp-b", shaping=(ShapingRule(Match(cidr=IPv4Network("198.18.1.0/24"), port=443),
                                            delay_ms=100, loss=0.01),))
    emu = compile_shaping(isp, isp_addresses(1), SITES, netem_available=False)
    assert [s.name for s in emu.services] == ["shaper"]
    assert "isp-b/shaper.json" in emu.files and "NFQUEUE --queue-num 101" in emu.files["isp-b/shaper.rules"]
    assert "--sport 443" in emu.files["isp-b/shaper.rules"]
    assert any("no netem" in n for n in emu.notes)
    net = compile_shaping(isp, isp_addresses(1), SITES, netem_available=True)
    assert not net.services
    cmds = [" ".join(c) for c in net.setup]
    assert any("netem delay 100ms loss 1%" in c and "down0" in c for c in cmds)
    assert any("netem loss 1%" in c and "up0" in c for c in cmds)


def test_udp_keywords_in_the_kernel():
    kw = Rule(Match(keyword="falun"), "drop")
    rules = dpi_iptables_rules(Isp("isp-b", dpi_rules=(kw,)))
    # no datagram is queued: the string match (on the payload, in hex) marks and drops the flow
    assert "-p udp -m connbytes" in rules and "NFQUEUE" in rules.split("-p udp")[0]
    assert "-j NFQUEUE" not in rules.split("-p udp", 1)[1]
    assert f"--from 28 --hex-string |{b'falun'.hex()}| -j CONNMARK --set-mark 0x40000000/0x40000000" in rules
    # names read on UDP (DNS 53, QUIC 443) keep the middlebox, keywords included, so order holds there
    isp = Isp("isp-b", dpi_rules=(Rule(Match(dns_query="v.test"), "inject", address=IPv4Address("10.0.0.1")),
                                  Rule(Match(sni="s.test"), "reset"), kw))
    rules = dpi_iptables_rules(isp)
    queue = [x for x in rules.splitlines() if "-p udp" in x and "NFQUEUE" in x]
    assert queue and all("--dports 53,443" in x for x in queue)
    assert rules.index("--dports 53,443") < rules.index("-m string")
    add = compile_dpi(isp, isp_addresses(1), SITES)
    assert any("keyword=falun" in n and "matched in the kernel" in n for n in add.notes)
    # narrowed to a site and port: one rule per address
    narrow = Rule(Match(keyword="falun", site="ok.test", port=5000), "drop")
    assert kernel_keyword_rules(Isp("i", dpi_rules=(narrow,)), SITES)[0][1] == [IPv4Network("198.18.1.5/32")]
    assert "-d 198.18.1.5/32 --dport 5000" in dpi_iptables_rules(Isp("i", dpi_rules=(narrow,)), 1, SITES)
    # what stays in the middlebox: residual blocks (they cover every protocol of a pair), long patterns
    for rules_ in ((Rule(Match(sni="s.test"), "reset", residual=5), kw),
                   (Rule(Match(keyword="x" * 129), "drop"),)):
        assert kernel_keyword_rules(Isp("i", dpi_rules=rules_), SITES) is None
        assert "-m string" not in dpi_iptables_rules(Isp("i", dpi_rules=rules_), 1, SITES)
        assert "-p udp -m connbytes --connbytes 0:10 --connbytes-dir original --connbytes-mode packets -j NFQUEUE" \
            in dpi_iptables_rules(Isp("i", dpi_rules=rules_), 1, SITES)
