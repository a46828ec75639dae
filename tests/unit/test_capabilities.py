"""Probe capabilities (issue 19): each probe type's expected verdicts follow from what it declares
it measures, and the probe contract names the keys the verdict logic reads."""

from __future__ import annotations

from pathlib import Path

import pytest

from netlab.addressing import allocate_sites
from netlab.capabilities import (
    PROBE_CONTRACT_VERSION,
    STAGES,
    WEB,
    Capabilities,
    ContractError,
    capabilities_of,
)
from netlab.loader import load_scenario
from netlab.oracle import expected_verdicts
from netlab.target import Target
from probes.base import BUILTIN_PROBES, load_probe

ROOT = Path(__file__).resolve().parents[2]
DEMO = load_scenario(ROOT / "scenarios/demo.yaml")
SITES = allocate_sites({x.name: x.address for x in DEMO.sites})


def demo(probe: str) -> dict[tuple[str, str], str]:
    caps = capabilities_of(load_probe(probe))
    return {k: v.verdict.value for k, v in expected_verdicts(DEMO, SITES, caps).items()}


def test_every_builtin_probe_declares_its_capabilities() -> None:
    declared = {name: capabilities_of(load_probe(name)) for name in BUILTIN_PROBES}
    assert declared["web"] == WEB
    assert declared["dns"].stages == ("dns",) and declared["dns"].public_dns
    assert declared["tcp"].stages == ("dns", "tcp") and not declared["tcp"].public_dns
    assert declared["tls"].stages == ("dns", "tcp", "tls")
    assert declared["http"].stages == STAGES and not declared["http"].redirects and declared["http"].throughput


def test_the_web_probe_expects_what_the_oracle_always_did() -> None:
    assert demo("web") == {k: v.verdict.value for k, v in expected_verdicts(DEMO, SITES).items()}


def test_a_dns_probe_sees_dns_blocks_only() -> None:
    v = demo("dns")
    assert v[("isp-a", "https://news.test/")] == "dns.nxdomain"
    assert v[("isp-a", "https://social.test/")] == "dns.bogon"
    assert v[("isp-b", "https://video.test/")] == "dns.injected"  # it asks the public resolver too
    assert v[("isp-a", "https://video.test/")] == "ok"  # a firewall drop of TCP: never reached
    assert v[("isp-a", "https://www.blog.test/")] == "ok"
    assert v[("isp-b", "https://social.test/")] == "ok"  # SNI reset
    assert v[("isp-b", "http://news.test/")] == "ok"  # blockpage: the scenario's pin is beyond its reach
    assert v[("isp-b", "https://ok.test/")] == "ok"  # throttling


def test_a_tcp_probe_sees_dns_and_tcp_blocks_not_tls_or_http() -> None:
    v = demo("tcp")
    assert v[("isp-a", "https://video.test/")] == "tcp.timeout"
    assert v[("isp-a", "https://www.blog.test/")] == "tcp.reset"
    assert v[("isp-a", "https://social.test/")] == "dns.bogon"
    assert v[("isp-b", "https://video.test/")] == "ok"  # injection on the public resolver's path
    assert v[("isp-b", "https://social.test/")] == "ok"  # a connect sends no ClientHello
    assert v[("isp-b", "https://chat.test/")] == "ok"


def test_tls_and_http_probes_reach_their_stage() -> None:
    tls, http = demo("tls"), demo("http")
    assert tls[("isp-b", "https://social.test/")] == "tls.reset"
    assert tls[("isp-b", "http://news.test/")] == "ok"  # no TLS on http, and no request
    assert http[("isp-b", "http://news.test/")] == "http.blockpage"
    assert http[("isp-b", "https://ok.test/")] == "throttled"
    assert http[("isp-b", "https://video.test/")] == "ok"  # only the vantage's resolver


def test_redirects_and_site_faults_follow_the_capabilities() -> None:
    s = load_scenario(ROOT / "scenarios/misbehaving.yaml")
    sites = allocate_sites({x.name: x.address for x in s.sites})

    def v(probe: str) -> dict[tuple[str, str], str]:
        caps = capabilities_of(load_probe(probe))
        return {k: e.verdict.value for k, e in expected_verdicts(s, sites, caps).items()}

    web, http, tcp, dns = v("web"), v("http"), v("tcp"), v("dns")
    assert web[("isp-b", "https://hop.test/")] == "tls.reset"  # via the redirect to ok.test
    assert http[("isp-b", "https://hop.test/")] == "ok"  # it does not follow redirects
    assert web[("control", "https://broken.test/")] == "site_down"
    assert http[("control", "https://broken.test/")] == "ok"  # the same 3xx for everyone
    assert tcp[("control", "https://gone.test/")] == "site_down" and dns[("control", "https://gone.test/")] == "ok"
    assert dns[("control", "https://nowhere.test/")] == "site_down"  # unresolvable: every probe sees it
    assert v("tls")[("control", "https://expired.test/")] == "site_down"
    assert tcp[("control", "https://expired.test/")] == "ok"
    assert web[("isp-a", "https://captcha.test/")] == "http.diff" and tcp[("isp-a", "https://captcha.test/")] == "ok"
    # The ISP's transparent proxy: the page shows it is the same site; without a page only the address differs.
    assert web[("isp-a", "https://proxied.test/")] == "ok" and tcp[("isp-a", "https://proxied.test/")] == "dns.mismatch"


def test_targets_outside_the_declared_scope_are_not_expected() -> None:
    caps = Capabilities(stages=("dns", "tcp", "tls"), schemes=("https",), ports=(853,))
    assert expected_verdicts(DEMO, SITES, caps) == {}
    assert caps.measures(Target.parse("https://dns.test:853/")) and not caps.measures(Target.parse("http://a.test/"))


def test_capabilities_are_checked_and_round_trip() -> None:
    with pytest.raises(ContractError, match="prefix"):
        Capabilities(stages=("tcp",))
    with pytest.raises(ContractError, match="need the http stage"):
        Capabilities(stages=("dns", "tcp"), throughput=True)
    for name in BUILTIN_PROBES:
        caps = capabilities_of(load_probe(name))
        assert Capabilities.from_json(caps.to_json()) == caps
        assert caps.to_json()["contract"] == PROBE_CONTRACT_VERSION

    class Bare:
        name = "bare"

    with pytest.raises(ContractError, match="'bare' declares no capabilities"):
        capabilities_of(Bare)


def test_the_contract_keys_depend_on_the_stages() -> None:
    dns = Capabilities(stages=("dns",))
    assert dns.required_keys() == ("queries", "x_resolved", "x_failed_stage", "failure")
    assert "x_body_seconds" in WEB.required_keys() and "x_status_code" in WEB.required_keys()
    assert dns.missing_keys({"queries": [], "failure": None}) == ["x_resolved", "x_failed_stage"]
    http_blind = " ".join(capabilities_of(load_probe("http")).blind_spots())
    assert "redirect" in http_blind and "public resolver" in http_blind and "throttling" not in http_blind
    assert any("tls, http" in b for b in Capabilities(stages=("dns", "tcp")).blind_spots())
