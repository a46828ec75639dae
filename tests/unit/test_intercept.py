"""The DPI action intercept without a lab: the loader's errors, what the compiler writes (censor CA,
nat rules after the firewall's, the middlebox's splice hook), the oracle's verdicts, and the
interceptor's SNI peek, rule choice, page and reset relay on local sockets."""

from __future__ import annotations

import asyncio
import json
import socket
import ssl
import struct
from ipaddress import IPv4Address
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID

from netlab.addressing import isp_addresses
from netlab.compile import compile_lab
from netlab.compile.intercept import compile_intercept
from netlab.compile.router import INTERCEPT_PORT, SPLICE_MARK
from netlab.errors import ScenarioError
from netlab.loader import load_scenario, parse_scenario
from netlab.oracle import expected_verdicts, intercepts
from netlab.plan import LAB_DIR
from netlab.services import intercept as service
from netlab.services.configs import InterceptConfig
from netlab.target import Target
from netlab.verdict import Verdict

ROOT = Path(__file__).resolve().parents[2]
BASE = """version: 1
name: t
internet:
  sites:
    - name: a.test
    - name: www.a.test
    - name: b.test
isps:
  - name: x
"""


def scenario(dpi: str, firewall: str = "", targets: str = ""):
    text = BASE + firewall + "    dpi:\n      rules:\n" + dpi + targets
    return parse_scenario(text, source="s.yaml")


def err(dpi: str) -> ScenarioError:
    with pytest.raises(ScenarioError) as info:
        scenario(dpi)
    return info.value


@pytest.mark.parametrize(("rules", "key", "words"), [
    ("        - match: {http_host: a.test}\n          action: intercept\n",
     "isps[0].dpi.rules[0].action", "needs sni"),
    ("        - match: {sni: a.test, keyword: x}\n          action: intercept\n",
     "isps[0].dpi.rules[0].action", "not http_host, dns_query or keyword"),
    ("        - match: {sni: a.test}\n          action: {intercept: {pages: x}}\n",
     "isps[0].dpi.rules[0].action.intercept.pages", "unknown key"),
    ("        - match: {sni: a.test}\n          action: {intercept: {page: {body_file: /etc/passwd}}}\n",
     "isps[0].dpi.rules[0].action.intercept.page.body_file", "absolute path"),
    ("        - match: {sni: a.test}\n          transport: quic\n          action: intercept\n",
     "isps[0].dpi.rules[0].transport", "cannot be intercepted"),
    ("        - match: {sni: a.test}\n          action: intercept\n"
     "        - match: {sni: b.test}\n          action: reset\n          residual: 10\n",
     "isps[0].dpi.rules[1].residual", "cannot be combined with intercept"),
])
def test_bad_intercept_rules(rules: str, key: str, words: str) -> None:
    e = err(rules)
    assert e.key == key, str(e)
    assert words in str(e)
    assert e.line is not None and e.line >= 10


def test_wide_intercept_and_shaping_by_name_are_refused_together() -> None:
    shaping = "    shaping:\n      - match: {sni: b.test}\n        rate: 1mbit\n"
    with pytest.raises(ScenarioError) as info:
        parse_scenario(BASE + "    dpi:\n      rules:\n        - match: {sni: a.test}\n          action: intercept\n"
                       + shaping, source="s.yaml")
    assert info.value.key == "isps[0].shaping[0].match" and "give the intercept rule a site" in str(info.value)
    # an intercept rule limited to its site leaves other flows to the middlebox, which marks them
    s = parse_scenario(BASE + "    dpi:\n      rules:\n        - match: {sni: a.test, site: a.test}\n"
                       "          action: intercept\n" + shaping, source="s.yaml")
    assert s.isps[0].shaping[0].match.sni == "b.test"


def test_intercept_page_forms() -> None:
    s = scenario("        - match: {sni: a.test}\n          action: intercept\n"
                 "        - match: {sni: b.test}\n          action: {intercept: {page: }}\n"
                 "        - match: {sni: www.a.test}\n          action: {intercept: {page: {status: 200, body: hi}}}\n")
    relay, default, own = s.isps[0].dpi_rules
    assert relay.action == default.action == own.action == "intercept"
    assert relay.blockpage is None and relay.transport == "tcp"
    assert default.blockpage is not None and default.blockpage.status == 451
    assert own.blockpage is not None and own.blockpage.response().startswith(b"HTTP/1.1 200 OK\r\n")
    assert own.blockpage.response().endswith(b"\r\n\r\nhi")


def test_compile_writes_censor_ca_nat_rules_and_splice_hook() -> None:
    s = scenario("        - match: {sni: a.test}\n          action: intercept\n"
                 "        - match: {sni: b.test, port: 8443}\n          action: reset\n",
                 firewall="    firewall:\n      rules:\n        - match: {site: b.test, port: 443}\n"
                          "          action: reset\n")
    plan = compile_lab(s, "ph-unit", servers=[])
    nft = plan.files["x/intercept.nft"]
    assert isinstance(nft, str)
    fw_return = nft.index(f"ip daddr {plan.site_addresses['b.test']} th dport 443 return")
    redirect = nft.index(f'iifname "down0" tcp dport 443 counter redirect to :{INTERCEPT_PORT}')
    assert fw_return < redirect  # the firewall comes first
    ca = x509.load_pem_x509_certificate(plan.files["x/intercept/ca.pem"])  # type: ignore[arg-type]
    lab_ca = x509.load_pem_x509_certificate(plan.files["pki/ca.pem"])  # type: ignore[arg-type]
    assert ca.subject != lab_ca.subject
    for name in ("a.test", "www.a.test"):  # every site the rule covers, and not b.test
        leaf = x509.load_pem_x509_certificate(plan.files[f"x/intercept/{name}.pem"])  # type: ignore[arg-type]
        assert leaf.issuer == ca.subject
        assert leaf.issuer.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == "fauxisp x interception CA"
    assert "x/intercept/b.test.pem" not in plan.files
    dpi_rules = plan.files["x/dpi.rules"]
    assert isinstance(dpi_rules, str)
    assert f"-I OUTPUT 1 -o up0 -m mark --mark 0x{SPLICE_MARK:x}/0x{SPLICE_MARK:x} -j NETLAB-DPI-SPLICE" in dpi_rules
    router = plan.hosts["x.gw"]
    assert ("nft", "-f", f"{LAB_DIR}/x/intercept.nft") in router.setup
    assert [sv.name for sv in router.services][-3:-1] == ["dpi", "intercept"] or \
        [sv.name for sv in router.services].index("dpi") < [sv.name for sv in router.services].index("intercept")


def test_only_intercept_rules_start_no_middlebox() -> None:
    s = scenario("        - match: {sni: a.test, site: a.test}\n          action: intercept\n")
    plan = compile_lab(s, "ph-unit", servers=[])
    assert "x/dpi.rules" not in plan.files
    assert f"ip daddr {{ {plan.site_addresses['a.test']}/32 }}" in plan.files["x/intercept.nft"]  # type: ignore[operator]
    assert not compile_intercept(s.isps[0].__class__(name="y"), isp_addresses(2), plan.site_addresses)


def test_oracle_order_firewall_interception_dpi() -> None:
    s = scenario("        - match: {sni: a.test}\n          action: intercept\n"
                 "        - match: {sni: a.test}\n          action: reset\n"
                 "        - match: {sni: b.test}\n          action: reset\n"
                 "        - match: {sni: b.test, port: 8443}\n          action: intercept\n",
                 firewall="    firewall:\n      rules:\n        - match: {site: www.a.test}\n          action: drop\n",
                 targets="targets:\n  - https://a.test/\n  - http://a.test/\n  - https://www.a.test/\n"
                         "  - https://b.test/\n")
    got = {url: e.verdict for (v, url), e in expected_verdicts(s, s.site_addresses()).items() if v == "x"}
    assert got == {
        "https://a.test/": Verdict.TLS_CERT_INVALID,  # interception before the middlebox's reset
        "http://a.test/": Verdict.OK,
        "https://www.a.test/": Verdict.TCP_TIMEOUT,  # the firewall first
        "https://b.test/": Verdict.TLS_RESET,  # not intercepted on 443: spliced, then reset
    }
    on_8443 = s.isps[0].dpi_rules[3]  # nothing listens on 8443 in the lab: the rule itself, then
    sites = s.site_addresses()
    assert intercepts(on_8443, Target.parse("https://b.test:8443/"), sites["b.test"], sites)
    assert not intercepts(on_8443, Target.parse("https://b.test/"), sites["b.test"], sites)


def test_shipped_scenario_gives_the_verdicts_its_comment_lists() -> None:
    path = ROOT / "scenarios" / "interception.yaml"
    s = load_scenario(path)
    exp = expected_verdicts(s, s.site_addresses())
    listed = [line.split() for line in path.read_text().splitlines() if line.startswith("#   http")]
    assert len(listed) == len(s.targets)
    for _, url, kzisp, kzinstalled, *_ in listed:
        assert (exp[("kzisp", url)].verdict.value, exp[("kzinstalled", url)].verdict.value) == (kzisp, kzinstalled)


# --- the service, on local sockets -------------------------------------------------------------

def client_hello(name: str) -> bytes:
    ctx = ssl.create_default_context()
    obj = ctx.wrap_bio(ssl.MemoryBIO(), out := ssl.MemoryBIO(), server_hostname=name)
    with pytest.raises(ssl.SSLWantReadError):
        obj.do_handshake()
    return out.read()


def test_peek_reads_the_sni_and_leaves_the_bytes() -> None:
    hello = client_hello("www.a.test")

    async def go() -> tuple[str | None, bytes]:
        a, b = socket.socketpair()
        a.setblocking(False)
        b.sendall(hello[:40])  # the rest arrives later: the peek waits for it
        task = asyncio.create_task(service.peek_server_name(a))
        await asyncio.sleep(0.05)
        b.sendall(hello[40:])
        name = await task
        left = a.recv(len(hello) * 2)
        a.close()
        b.close()
        return name, left

    name, left = asyncio.run(go())
    assert name == "www.a.test" and left == hello


def test_rule_choice_by_name_address_and_port() -> None:
    icp = service.Interceptor(InterceptConfig.from_json(json.dumps({
        "listen": "127.0.0.1", "port": 0, "certs": {}, "source": "127.0.0.1", "splice_mark": 0, "rules": [
            {"sni": "a.test", "port": 443, "servers": [["198.18.1.0/24"]], "line": 3},
            {"sni": "test", "port": 8443, "line": 5}]})))
    assert icp.rule_for("www.a.test", "198.18.1.7", 443).line == 3  # type: ignore[union-attr]
    assert icp.rule_for("www.a.test", "198.18.2.7", 443) is None
    assert icp.rule_for("b.test", "198.18.2.7", 8443).line == 5  # type: ignore[union-attr]
    assert icp.rule_for(None, "198.18.1.7", 443) is None


def test_original_destination_reads_sockaddr_in() -> None:
    class Fake:
        family = socket.AF_INET

        def getsockopt(self, level: int, opt: int, size: int) -> bytes:
            assert (level, opt, size) == (socket.SOL_IP, 80, 16)
            return struct.pack("!HH4s8x", socket.AF_INET, 443, IPv4Address("198.18.1.2").packed)

    class Fake6:  # dual stack: a redirected IPv6 flow, struct sockaddr_in6 from SOL_IPV6
        family = socket.AF_INET6

        def getsockopt(self, level: int, opt: int, size: int) -> bytes:
            assert (level, opt, size) == (socket.IPPROTO_IPV6, 80, 28)
            addr = socket.inet_pton(socket.AF_INET6, "2001:2::c612:102")
            return struct.pack("!HHI16sI", socket.AF_INET6, 8443, 0, addr, 0)

    assert service.original_destination(Fake()) == ("198.18.1.2", 443)  # type: ignore[arg-type]
    assert service.original_destination(Fake6()) == ("2001:2::c612:102", 8443)  # type: ignore[arg-type]


def test_relay_passes_a_reset_on_as_a_reset() -> None:
    async def go() -> bytes | str:
        async def upstream(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.read(10)
            sock = writer.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            writer.transport.abort()  # the middlebox's RST, as the interceptor's onward socket sees it

        up_server = await asyncio.start_server(upstream, "127.0.0.1", 0)
        up_port = up_server.sockets[0].getsockname()[1]
        done = asyncio.Event()

        async def relay_side(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            up_r, up_w = await asyncio.open_connection("127.0.0.1", up_port)
            await service.relay(reader, writer, up_r, up_w)
            done.set()

        relay_server = await asyncio.start_server(relay_side, "127.0.0.1", 0)
        r, w = await asyncio.open_connection("127.0.0.1", relay_server.sockets[0].getsockname()[1])
        w.write(b"hello")
        try:
            got: bytes | str = await asyncio.wait_for(r.read(10), 5)
        except ConnectionResetError:
            got = "reset"
        await asyncio.wait_for(done.wait(), 5)
        w.close()
        for srv in (up_server, relay_server):
            srv.close()
        return got

    assert asyncio.run(go()) == "reset"


def test_coverage_intercepts_the_chosen_names_in_the_oracle_and_the_interceptor() -> None:
    import json

    sites = "".join(f"    - name: s{i}.cdn.test\n" for i in range(8))
    text = (f"version: 1\nname: t\nseed: 7\ninternet:\n  sites:\n{sites}isps:\n  - name: x\n    dpi:\n      rules:\n"
            "        - match: {sni: cdn.test}\n          action: intercept\n          coverage: 0.5\n")
    s = parse_scenario(text, source="s.yaml")
    plan = compile_lab(s, "ph-unit", servers=[])
    config = json.loads(plan.files["x/intercept.json"])  # type: ignore[arg-type]
    intercepted = {r["sni"] for r in config["rules"]}
    expected = {url.split("/")[2] for (v, url), e in expected_verdicts(s, s.site_addresses()).items()
                if v == "x" and e.verdict == Verdict.TLS_CERT_INVALID}
    assert expected == intercepted and 0 < len(intercepted) < 8


def test_ca_installed_gives_the_vantage_a_bundle_with_the_censor_ca() -> None:
    text = BASE + ("    dpi:\n      ca_installed: true\n      rules:\n"
                   "        - match: {sni: a.test}\n          action: intercept\n"
                   "        - match: {sni: b.test}\n"
                   "          action: {intercept: {page: {status: 200, body: censor}}}\n")
    s = parse_scenario(text, source="s.yaml")
    plan = compile_lab(s, "ph-unit", servers=[])
    assert plan.vantages["x"].ca_file == "x/intercept/trust.pem" and plan.vantages["control"].ca_file is None
    assert plan.vantages["x"].to_dict()["ca_file"] == "x/intercept/trust.pem"
    assert plan.files["x/intercept/trust.pem"] == plan.files["pki/ca.pem"] + plan.files["x/intercept/ca.pem"]
    got = {url: e.verdict for (v, url), e in expected_verdicts(s, s.site_addresses()).items() if v == "x"}
    assert got["https://a.test/"] == Verdict.OK  # relayed, and the certificate verifies
    assert got["https://b.test/"] == Verdict.HTTP_BLOCKPAGE  # the censor's page, fingerprinted


def test_ca_installed_needs_intercept_rules() -> None:
    with pytest.raises(ScenarioError) as info:
        parse_scenario(BASE + "    dpi:\n      ca_installed: true\n      rules:\n"
                       "        - match: {sni: a.test}\n          action: reset\n", source="s.yaml")
    assert info.value.key == "isps[0].dpi.ca_installed" and "has none" in str(info.value)
    with pytest.raises(ScenarioError) as info:
        parse_scenario(BASE + "    dpi:\n      ca_installed: yes please\n", source="s.yaml")
    assert info.value.key == "isps[0].dpi.ca_installed"


def test_compile_refuses_an_intercept_rule_without_sni() -> None:
    from netlab.model import Isp, Match, Rule

    isp = Isp(name="y", dpi_rules=(Rule(match=Match(http_host="a.test"), action="intercept", line=4),))
    with pytest.raises(ValueError, match="line 4: intercept needs sni"):
        compile_intercept(isp, isp_addresses(1), {"a.test": IPv4Address("198.18.1.1")})
