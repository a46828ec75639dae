"""The DPI middlebox and shaping in a real client - router - server topology (needs root)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import time
from ipaddress import IPv4Address

import pytest
from dpi_topology import RESOLVER, SITES, DpiLab, leftover_namespaces

from netlab.addressing import isp_addresses
from netlab.backends.kernel import netem_available
from netlab.compile.dpi import compile_dpi
from netlab.compile.shaping import compile_shaping
from netlab.model import Isp, Match, Rule, ShapingRule

pytestmark = [
    pytest.mark.lab,
    pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("ip") or not shutil.which("iptables-restore"),
                       reason="needs root, iproute2 and iptables-nft"),
]

SOCIAL, NEWS, OK, OTHER = SITES[0], SITES[1], SITES[2], SITES[3]
SITE_ADDRESSES = {"social.test": IPv4Address(SOCIAL), "news.test": IPv4Address(NEWS),
                  "ok.test": IPv4Address(OK), "other.test": IPv4Address(OTHER)}


@pytest.fixture
def lab(request):
    suffix = f"{os.getpid() % 10000}{request.node.name[-12:]}".replace("[", "").replace("]", "")[:10]
    lab = DpiLab(suffix=suffix.replace("_", ""))
    try:
        lab.up()
        lab.start_server()
        yield lab
    finally:
        lab.down()
        assert not [n for n in leftover_namespaces() if n in lab.namespaces], "namespaces left behind"


def with_dpi(lab: DpiLab, *rules: Rule, fail: str = "closed") -> Isp:
    isp = Isp("isp-b", dpi_rules=rules, dpi_fail=fail)
    lab.apply(compile_dpi(isp, isp_addresses(1), SITE_ADDRESSES))
    return isp


def alive(lab: DpiLab, name: str = "dpi") -> bool:
    return lab.procs[name].poll() is None


def test_sni_reset_and_drop(lab):
    with_dpi(lab, Rule(Match(sni="social.test"), "reset"), Rule(Match(sni="chat.test"), "drop"))
    assert lab.client_cmd("tls", "social.test", SOCIAL)["result"] == "handshake:connection_reset"
    assert lab.client_cmd("tls", "www.Social.test", SOCIAL)["result"] == "handshake:connection_reset"
    r = lab.client_cmd("tls", "chat.test", SOCIAL, "--timeout", "1.5")
    assert r["result"] == "handshake:timeout"
    assert lab.client_cmd("tls", "ok.test", SOCIAL)["result"] == "ok"
    assert lab.client_cmd("tls", "-", SOCIAL)["result"] == "ok"  # ClientHello without SNI passes
    assert alive(lab)


def test_split_client_hello(lab):
    with_dpi(lab, Rule(Match(sni="social.test"), "reset"))
    # cut inside the record header, inside the SNI, and a 1.8 KiB hello in three segments
    for cuts, pad in (("3", 0), ("60", 0), ("50,700", 1800)):
        r = lab.client_cmd("split", "social.test", SOCIAL, "--cuts", cuts, "--pad", str(pad))
        assert r["result"] == "connection_reset", (cuts, r)
        r = lab.client_cmd("split", "ok.test", SOCIAL, "--cuts", cuts, "--pad", str(pad))
        assert r["result"] != "connection_reset", (cuts, r)


def test_http_blockpage(lab):
    with_dpi(lab, Rule(Match(http_host="news.test"), "blockpage"))
    r = lab.client_cmd("http", "news.test", NEWS)
    assert r["status"].startswith("HTTP/1.1 451")
    assert "netlab-blockpage" in r["body"] and "<title>Blocked</title>" in r["body"]
    r = lab.client_cmd("http", "ok.test", NEWS)
    assert r["status"] == "HTTP/1.1 200 OK" and "origin" in r["body"]


def test_dns_inject(lab):
    with_dpi(lab, Rule(Match(dns_query="video.test"), "inject", address=IPv4Address("10.10.34.35")))
    r = lab.client_cmd("dns", "video.test", "--server", RESOLVER)["responses"]
    assert [x["answers"] for x in r] == [["10.10.34.35"], [SITES[0]]]  # forged first, real after
    assert all(x["id_ok"] for x in r)
    r = lab.client_cmd("dns", "ok.test", "--server", RESOLVER, "--listen", "0.3")["responses"]
    assert [x["answers"] for x in r] == [[SITES[0]]]


RESIDUAL = 4  # seconds


def test_residual(lab):
    # 4 s: the two checks inside the block each start a client in the namespace, and on a loaded
    # 2-core machine (a fresh `make test`, images building beside it) they once took 2.2 s together.
    with_dpi(lab, Rule(Match(sni="social.test"), "reset", residual=RESIDUAL))
    # The block begins when the middlebox sees the hello, between these two clock readings: it ends
    # RESIDUAL after that, so never before RESIDUAL after `sent` (it was seen 1.995 s of 2 after `hit`).
    sent = time.monotonic()
    assert lab.client_cmd("tls", "social.test", SOCIAL)["result"] == "handshake:connection_reset"
    hit = time.monotonic()
    assert lab.client_cmd("tls", "ok.test", SOCIAL)["result"] == "handshake:connection_reset"
    assert lab.client_cmd("tls", "ok.test", OTHER)["result"] == "ok"  # other server: unaffected
    assert time.monotonic() - sent < RESIDUAL, "the checks inside the block may have run past its end"
    deadline = hit + RESIDUAL + 4
    while True:  # the residual block expires after RESIDUAL seconds
        if lab.client_cmd("tls", "ok.test", SOCIAL)["result"] == "ok":
            break
        assert time.monotonic() < deadline, "residual block never expired"
    assert time.monotonic() - sent >= RESIDUAL


def test_malformed_packets_keep_it_running(lab):
    with_dpi(lab, Rule(Match(sni="social.test"), "reset"), Rule(Match(http_host="news.test"), "blockpage"),
             Rule(Match(dns_query="video.test"), "inject", address=IPv4Address("10.10.34.35")))
    for seed in (1, 2):
        lab.client_cmd("garbage", "--seed", str(seed), "--random", "60")
        assert alive(lab), lab.log("dpi")
    assert "Traceback" not in lab.log("dpi")
    assert lab.client_cmd("tls", "social.test", SOCIAL)["result"] == "handshake:connection_reset"
    assert lab.client_cmd("http", "news.test", NEWS)["status"].startswith("HTTP/1.1 451")
    assert lab.client_cmd("tls", "ok.test", SOCIAL)["result"] == "ok"


def test_1000_concurrent_flows_30_percent_blocked(lab):
    with_dpi(lab, Rule(Match(sni="blocked.test"), "reset"))
    names = [f"f{i}.blocked.test" if i % 10 < 3 else f"f{i}.allowed.test" for i in range(1000)]
    r = lab.client_cmd("many", json.dumps(names), "--timeout", "20", timeout=120)["results"]
    wrong = [(n, x) for n, x in zip(names, r, strict=True)
             if x != ("handshake:connection_reset" if ".blocked." in n else "ok")]
    assert not wrong, f"{len(wrong)} wrong, e.g. {wrong[:5]}"
    assert alive(lab)


@pytest.mark.parametrize("fail", ["closed", "open"])
def test_dead_middlebox(lab, fail):
    with_dpi(lab, Rule(Match(sni="social.test"), "reset"), fail=fail)
    assert lab.client_cmd("tls", "ok.test", SOCIAL)["result"] == "ok"
    lab.procs["dpi"].send_signal(signal.SIGKILL)
    lab.procs["dpi"].wait(5)
    r = lab.client_cmd("tls", "ok.test", SOCIAL, "--timeout", "1")["result"]
    if fail == "closed":
        assert r == "connect:timeout"  # even the SYN is queued to a queue nobody reads
    else:
        assert r == "ok"
        assert lab.client_cmd("tls", "social.test", SOCIAL)["result"] == "ok"  # uninspected


def test_rate_shaping(lab):
    isp = Isp("isp-b", shaping=(ShapingRule(Match(site="ok.test"), rate_bps=2_000_000),))
    lab.apply(compile_shaping(isp, isp_addresses(1), SITE_ADDRESSES, netem_available=netem_available()))
    size = str(256 * 1024)
    shaped = lab.client_cmd("bulk", OK, "--size", size)
    free = lab.client_cmd("bulk", OTHER, "--size", size)
    assert shaped["bytes"] == free["bytes"] == 256 * 1024
    assert shaped["bps"] < 3_000_000, shaped  # 2 Mbit/s plus the bucket's burst
    assert free["bps"] > 5 * shaped["bps"], (free, shaped)


def test_delay_and_loss_emulation(lab):
    have_netem = netem_available()
    isp = Isp("isp-b", shaping=(ShapingRule(Match(site="ok.test"), delay_ms=80),
                                ShapingRule(Match(site="news.test"), loss=1.0)))
    add = compile_shaping(isp, isp_addresses(1), SITE_ADDRESSES, netem_available=have_netem)
    assert bool(add.services) == (not have_netem)
    lab.apply(add)
    slow = lab.client_cmd("tls", "ok.test", OK)
    # The unshaped path's best of three: one handshake on a loaded machine (the whole suite on
    # two cores) can take longer than the delay; the delay itself is a floor, never jitter.
    fast = min((lab.client_cmd("tls", "ok.test", OTHER) for _ in range(3)), key=lambda r: r["seconds"])
    assert slow["result"] == fast["result"] == "ok"
    assert slow["seconds"] >= 0.16 > fast["seconds"]  # two round trips (connect, handshake)
    assert lab.client_cmd("tls", "ok.test", NEWS, "--timeout", "1")["result"] == "connect:timeout"


def test_udp_keyword_in_the_kernel(lab):
    """A UDP keyword rule is an iptables string match: the datagram is dropped (and its flow with
    it) without reaching the middlebox; on the ports the middlebox reads (DNS 53 here) the rules
    keep their order there, so the keyword is still matched by the middlebox."""
    isp = with_dpi(lab, Rule(Match(dns_query="video.test"), "inject", address=IPv4Address("10.10.34.35")),
                   Rule(Match(keyword="falun"), "drop"))
    rules = compile_dpi(isp, isp_addresses(1), SITE_ADDRESSES).files["isp-b/dpi.rules"]
    assert "--dport 53" in rules and "-m string" in rules
    assert lab.client_cmd("udp-rtt", "--count", "2", "--payload", "about falun gong", "--timeout", "1")["rtts_us"] == []
    assert len(lab.client_cmd("udp-rtt", "--count", "2", "--payload", "about tai chi")["rtts_us"]) == 2
    counters = lab.exec(lab.router, ["iptables", "-v", "-x", "-n", "-L", "NETLAB-DPI"]).stdout
    (line,) = [x for x in counters.splitlines() if "STRING match" in x]
    assert int(line.split()[0]) == 2  # both datagrams met the kernel's match
    assert lab.client_cmd("dns", "video.test")["responses"][0]["answers"] == ["10.10.34.35"]  # the middlebox
    lab.stop("dpi", signal.SIGTERM)
    judged = int(lab.log("dpi").split("stopped after ")[-1].split()[0])
    assert judged <= 2  # the DNS query (and its retransmission at most); no echo datagram
