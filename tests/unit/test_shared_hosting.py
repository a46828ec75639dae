"""Shared hosting and CDNs (issue 15 item 2): sites sharing an address, a site on several, what the
loader accepts, what the compiler writes, what the oracle and the impact report predict, and the
origin choosing certificate by SNI and content by Host (in-process, on loopback addresses)."""

from __future__ import annotations

import asyncio
import json
import re
import socket
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from ipaddress import IPv4Address
from pathlib import Path

import pytest
from cryptography import x509

from harness.explain import explain
from netlab.addons import Declared, Server, ServerError
from netlab.compile import compile_lab
from netlab.compile.pki import make_pki
from netlab.errors import ScenarioError
from netlab.impact import impact
from netlab.loader import load_scenario, parse_scenario
from netlab.oracle import expected_verdicts
from netlab.services import origin
from netlab.services._serve import listener

ROOT = Path(__file__).resolve().parents[2]
SHARED = ROOT / "scenarios" / "shared-hosting.yaml"


def err(text: str) -> ScenarioError:
    with pytest.raises(ScenarioError) as info:
        parse_scenario(text, source="s.yaml")
    return info.value


def sites_yaml(*entries: str) -> str:
    return "version: 1\nname: t\ninternet:\n  sites:\n" + "".join(entries)


def test_sites_may_share_an_address_and_have_several() -> None:
    s = parse_scenario(sites_yaml("    - name: a.test\n      address: 198.18.5.5\n",
                                  "    - name: b.test\n      address: 198.18.5.5\n",
                                  "    - name: cdn.test\n      addresses: [198.18.6.1, 198.18.6.2]\n",
                                  "    - name: free.test\n"))
    assert s.site("a.test").addresses == s.site("b.test").addresses == (IPv4Address("198.18.5.5"),)
    assert s.site("cdn.test").address == IPv4Address("198.18.6.1")
    sites = s.site_addresses()
    assert sites["cdn.test"] == IPv4Address("198.18.6.1")
    assert sites.all("cdn.test") == (IPv4Address("198.18.6.1"), IPv4Address("198.18.6.2"))
    assert sites["free.test"] not in sites.all("cdn.test")  # a CDN's further addresses are never allocated


def test_a_cdn_address_is_never_allocated_to_another_site() -> None:
    cdn = "    - name: cdn.test\n      addresses: [198.18.9.9, 198.18.1.1]\n"
    s = parse_scenario(sites_yaml("    - name: free.test\n", cdn))
    assert s.site_addresses()["free.test"] == IPv4Address("198.18.1.2")


@pytest.mark.parametrize(("entries", "key", "words"), [
    (("    - name: a.test\n      address: 198.18.5.5\n      addresses: [198.18.5.6]\n",),
     "internet.sites[0].addresses", "address or addresses, not both"),
    (("    - name: a.test\n      addresses: []\n",), "internet.sites[0].addresses", "at least one"),
    (("    - name: a.test\n      addresses: [198.18.5.5, 198.18.5.5]\n",), "internet.sites[0].addresses", "twice"),
    (("    - name: a.test\n      addresses: [198.18.0.3]\n",), "internet.sites[0].addresses", "outside the lab"),
    (("    - name: a.test\n      address: 198.18.5.5\n", "    - name: b.test\n      address: 198.18.5.5\n"
      "      https: false\n"), "internet.sites[1].https", "co-hosted sites share port 443"),
    (("    - name: a.test\n      addresses: [198.18.5.4, 198.18.5.5]\n      state: refused\n",
      "    - name: b.test\n      address: 198.18.5.5\n"), "internet.sites[1].state", "refused and timeout filter"),
])
def test_bad_addresses_and_conflicting_co_hosted_sites(entries: tuple[str, ...], key: str, words: str) -> None:
    e = err(sites_yaml(*entries))
    assert e.key == key and words in e.message and e.line is not None, str(e)


def test_compiled_dataplane_names_every_address() -> None:
    scenario = load_scenario(SHARED)
    plan = compile_lab(scenario, servers=[])
    zone = plan.files["inet/dns/auth/video.test.zone"]
    assert zone.index("video.test. IN A 198.18.20.1") < zone.index("video.test. IN A 198.18.20.2")
    assert "rrset-roundrobin: no" in plan.files["ipblock/unbound.conf"]
    assert 'ip daddr 198.18.10.10 counter drop' in plan.files["ipblock/firewall.nft"]
    assert "ip daddr { 198.18.20.1, 198.18.20.2 } counter drop" in plan.files["cdnblock/firewall.nft"]
    config = json.loads(plan.files["inet/origin.json"])["sites"]
    assert [s["addresses"] for s in config if s["name"] in ("news.test", "forum.test")] == [["198.18.10.10"]] * 2
    assert next(s for s in config if s["name"] == "video.test")["addresses"] == ["198.18.20.1", "198.18.20.2"]


def test_oracle_predicts_collateral_damage_and_cdn_resilience() -> None:
    scenario = load_scenario(SHARED)
    sites = scenario.site_addresses()
    exp = expected_verdicts(scenario, sites)
    verdict = {k: e.verdict.value for k, e in exp.items()}
    for name in ("news", "forum", "shop"):  # one address: the firewall hits all three
        assert verdict[("ipblock", f"https://{name}.test/")] == "tcp.timeout"
    assert verdict[("ipblock", "https://video.test/")] == "ok"  # the second CDN address answers
    assert verdict[("sniblock", "https://news.test/")] == "tls.reset"
    assert verdict[("sniblock", "http://news.test/")] == "http.reset"
    assert verdict[("sniblock", "https://forum.test/")] == verdict[("sniblock", "http://shop.test/")] == "ok"
    assert verdict[("cdnblock", "http://video.test/")] == "tcp.timeout"
    imp = impact(scenario, sites, {k: e.verdict for k, e in exp.items()}, {k: e.rule for k, e in exp.items()})
    assert sorted(imp["ipblock"].collateral) == ["http://forum.test/", "http://shop.test/", "https://forum.test/",
                                                 "https://shop.test/"]
    assert imp["sniblock"].collateral == [] and imp["cdnblock"].collateral == []
    rows = {(r["vantage"], r["url"]): r["collateral"] for r in explain(scenario).expected}
    assert rows[("ipblock", "https://forum.test/")] and not rows[("ipblock", "https://news.test/")]


def test_a_cdn_is_blocked_by_address_only_when_every_address_is() -> None:
    text = sites_yaml("    - name: cdn.test\n      addresses: [198.18.6.1, 198.18.6.2]\n") + (
        "isps:\n  - name: one\n    firewall:\n      rules:\n        - match: {ip: 198.18.6.2}\n          action: drop\n"
        "  - name: both\n    firewall:\n      rules:\n        - match: {ip: 198.18.6.1}\n          action: reset\n"
        "        - match: {cidr: 198.18.6.0/24}\n          action: drop\n")
    s = parse_scenario(text)
    exp = expected_verdicts(s, s.site_addresses())
    assert exp[("one", "https://cdn.test/")].verdict.value == "ok"
    both = exp[("both", "https://cdn.test/")]
    assert both.verdict.value == "tcp.reset" and both.rule.line == 16  # the first address's rule


# -- the origin, in-process on loopback addresses (127.0.0.0/8 is all local on Linux)


@asynccontextmanager
async def running_origin(tmp_path: Path, sites: list[dict]) -> AsyncIterator[None]:
    pki = make_pki([s["name"] for s in sites])
    for s in sites:
        pem = tmp_path / f"{s['name']}.pem"
        pem.write_bytes(pki.site_pems[s["name"]])
        s.setdefault("pem", str(pem))
        s.setdefault("body_size", 2048)
        s["quic"] = False
    (tmp_path / "ca.pem").write_bytes(pki.ca_pem)
    servers = []
    for where in origin.addresses([origin.site_config(s) for s in sites]):
        async def on_connect(r: asyncio.StreamReader, w: asyncio.StreamWriter, a: origin.Address = where) -> None:
            scheme = "https" if w.get_extra_info("sslcontext") is not None else "http"
            await origin.serve_connection(r, w, a, scheme, w.get_extra_info("peername")[0])
        servers.append(await asyncio.start_server(on_connect, sock=listener(where.address, 80 + PORT_SHIFT)))
        servers.append(await asyncio.start_server(on_connect, sock=listener(where.address, 443 + PORT_SHIFT),
                                                  ssl=where.tls))
    try:
        yield
    finally:
        for srv in servers:
            srv.close()


PORT_SHIFT = 20000  # unprivileged ports: the test needs no root


async def tls_names(tmp_path: Path, address: str, sni: str | None) -> list[str]:
    ctx = ssl.create_default_context(cafile=str(tmp_path / "ca.pem"))
    ctx.check_hostname = False
    _, w = await asyncio.open_connection(address, 443 + PORT_SHIFT, ssl=ctx, server_hostname=sni or "")
    der = w.get_extra_info("ssl_object").getpeercert(binary_form=True)
    w.close()
    san = x509.load_der_x509_certificate(der).extensions.get_extension_for_class(x509.SubjectAlternativeName)
    return san.value.get_values_for_type(x509.DNSName)


def http_get(address: str, host: str, path: str = "/", port: int = 80 + PORT_SHIFT) -> bytes:
    """The raw bytes of one GET, read until the server closes (every origin response closes)."""
    with socket.create_connection((address, port), timeout=5) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
        out = b""
        while chunk := sock.recv(65536):
            out += chunk
    return out


def test_origin_serves_co_hosted_sites_by_sni_and_host(tmp_path: Path) -> None:
    async def main() -> None:
        sites = [{"name": "a.test", "addresses": ["127.0.0.2"]}, {"name": "b.test", "addresses": ["127.0.0.2"]},
                 {"name": "cdn.test", "addresses": ["127.0.0.3", "127.0.0.4"]}]
        async with running_origin(tmp_path, sites):
            assert await tls_names(tmp_path, "127.0.0.2", "b.test") == ["b.test", "*.b.test"]
            assert await tls_names(tmp_path, "127.0.0.2", "a.test") == ["a.test", "*.a.test"]
            # No SNI, or one the address does not serve: the first site's certificate.
            assert await tls_names(tmp_path, "127.0.0.2", "nobody.test") == ["a.test", "*.a.test"]
            assert await tls_names(tmp_path, "127.0.0.4", "cdn.test") == ["cdn.test", "*.cdn.test"]
            pages = await asyncio.gather(*(asyncio.to_thread(http_get, a, h) for a, h in (
                ("127.0.0.2", "b.test"), ("127.0.0.2", "A.TEST:80"), ("127.0.0.2", "nobody.test"),
                ("127.0.0.3", "cdn.test"), ("127.0.0.4", "cdn.test"))))
            titles = [p.split(b"<title>")[1].split(b" ")[0].decode() for p in pages]
            assert titles == ["b.test", "a.test", "a.test", "cdn.test", "cdn.test"]
    asyncio.run(main())


def test_an_addon_server_on_part_of_a_shared_address_is_refused() -> None:
    """A server taking 443 of some co-hosted sites only would need a second listener on the address."""
    doh = Declared("doh", Server(name="doh", module="fauxisp_doh", port=443, sites="targets", path="/dns-query",
                                 ready="file"))
    shared = "      address: 198.18.5.5\n"
    text = sites_yaml("    - name: a.test\n" + shared, "    - name: b.test\n" + shared)
    one = parse_scenario(text + "targets: ['https://a.test/dns-query', 'https://b.test/']\n")
    with pytest.raises(ServerError, match=re.escape("198.18.5.5 hosts a.test (443), b.test (none)")):
        compile_lab(one, servers=[doh])
    both = parse_scenario(text + "targets: ['https://a.test/dns-query', 'https://b.test/dns-query']\n")
    assert compile_lab(both, servers=[doh]).files["inet/origin.json"]
