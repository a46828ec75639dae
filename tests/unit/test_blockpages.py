"""Paths and blockpages as censors send them (issue 15 items 4 and 5): per-path responses, bodiless
statuses, the `{status, headers, body | body_file}` page of a DPI blockpage and of a resolver's
blockpage server, their bad input, the fingerprints they add, what the oracle expects, and the
origin and middlebox sending them (in-process)."""

from __future__ import annotations

import asyncio
import base64
import json
from ipaddress import IPv4Address
from pathlib import Path

import pytest
from test_shared_hosting import http_get

from harness.analysis import analyse, load_fingerprints
from netlab.addressing import isp_addresses
from netlab.blockpage import DEFAULT, MARKER, Blockpage, declared_fingerprints
from netlab.compile import compile_lab
from netlab.compile.dpi import dpi_config
from netlab.errors import ScenarioError
from netlab.loader import load_scenario, parse_scenario
from netlab.model import Isp, Match, Rule
from netlab.oracle import expected_verdicts
from netlab.services import origin
from netlab.services._parsers import TCP_ACK, TCP_PSH, build_tcp, parse_ipv4
from netlab.services._serve import listener
from netlab.services.dpi import KILL, Engine

ROOT = Path(__file__).resolve().parents[2]
SCENARIO = ROOT / "scenarios" / "paths-blockpages.yaml"
BASE = "version: 1\nname: t\ninternet:\n  sites:\n    - name: a.test\n    - name: warn.test\n"


def err(text: str) -> ScenarioError:
    with pytest.raises(ScenarioError) as info:
        parse_scenario(text, source="s.yaml")
    return info.value


def dpi(action: str) -> str:
    return BASE + f"isps:\n  - name: i\n    dpi:\n      rules:\n        - match: {{http_host: a.test}}\n" \
                  f"          action: {action}\n"


def resolver(action: str, isps: int = 1) -> str:
    more = "".join(f"  - name: x{n}\n" for n in range(isps - 1))
    return BASE + f"isps:\n  - name: i\n    resolver:\n      rules:\n        - match: {{domain: a.test}}\n" \
                  f"          action: {action}\n" + more


def test_pages_render_as_declared() -> None:
    head, _, body = DEFAULT.response().partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 451 Unavailable For Legal Reasons\r\n") and MARKER.encode() in body
    assert f"X-Netlab-Blockpage: {MARKER}".encode() in head and f"Content-Length: {len(body)}".encode() in head
    # Declared headers go out exactly as written: none at all, and the FIN ends the page.
    assert Blockpage(200, (), b"<p>stop</p>").response() == b"HTTP/1.1 200 OK\r\n\r\n<p>stop</p>"
    assert Blockpage(204, None, b"").response() == (b"HTTP/1.1 204 No Content\r\nContent-Type: text/html; "
                                                    b"charset=utf-8\r\nConnection: close\r\n\r\n")
    moved = Blockpage(302, (("Location", "http://warn.test/"),), b"")
    assert moved.location == "http://warn.test/" and not moved.fingerprinted


def test_loader_reads_dpi_and_resolver_pages() -> None:
    page = "{blockpage: {status: 403, headers: {Connection: close}, body: '<b>no</b>'}}"
    rule = parse_scenario(dpi(page)).isps[0].dpi_rules[0]
    assert rule.action == "blockpage" and rule.blockpage == Blockpage(403, (("Connection", "close"),), b"<b>no</b>",
                                                                      line=rule.line + 1)
    assert parse_scenario(dpi("blockpage")).isps[0].dpi_rules[0].blockpage.is_default
    assert parse_scenario(dpi("{blockpage: }")).isps[0].dpi_rules[0].blockpage.is_default
    r = parse_scenario(resolver("{answer: 10.10.34.34, blockpage: {status: 200, body: hi}}")).isps[0].resolver_rules[0]
    assert (r.action, r.address, r.blockpage.page) == ("answer", IPv4Address("10.10.34.34"), b"hi")
    assert parse_scenario(resolver("{answer: 10.10.34.34}")).isps[0].resolver_rules[0].blockpage is None


@pytest.mark.parametrize(("text", "key", "words"), [
    (dpi("{blockpage: {status: 204, body: x}}"), "isps[0].dpi.rules[0].action.blockpage.body", "never carries a body"),
    (dpi("{blockpage: {body: '" + "x" * 1500 + "'}}"), "isps[0].dpi.rules[0].action.blockpage", "at most 1400"),
    (dpi("{blockpage: {status: 302}}"), "isps[0].dpi.rules[0].action.blockpage.headers", "Location header"),
    (dpi("{blockpage: {status: 302, headers: {Location: 'http://elsewhere.test/'}}}"),
     "isps[0].dpi.rules[0].action.blockpage.headers.Location", "not a site of this scenario"),
    (dpi("{blockpage: {headers: {'X-A': \"a\\r\\nb\"}}}"), "isps[0].dpi.rules[0].action.blockpage.headers.X-A",
     "one line"),
    (dpi("{blockpage: {colour: red}}"), "isps[0].dpi.rules[0].action.blockpage.colour", "unknown key"),
    (resolver("{answer: 198.18.1.1, blockpage: {body: x}}"), "isps[0].resolver.rules[0].action.answer",
     "address of site a.test"),
    (resolver("{answer: 10.2.0.9, blockpage: {body: x}}", isps=2), "isps[0].resolver.rules[0].action.answer",
     "cannot hold a blockpage server"),
    (resolver("{answer: 198.18.0.5, blockpage: {body: x}}"), "isps[0].resolver.rules[0].action.answer",
     "lab's own servers"),
    (BASE + "isps:\n  - name: i\n    resolver:\n      rules:\n"
     "        - match: {domain: a.test}\n          action: {answer: 10.10.34.34, blockpage: {body: x}}\n"
     "        - match: {domain: warn.test}\n          action: {answer: 10.10.34.34, blockpage: {body: y}}\n",
     "isps[0].resolver.rules[1].action.answer", "one page each"),
])
def test_bad_pages_are_refused(text: str, key: str, words: str) -> None:
    e = err(text)
    assert e.key == key and words in e.message and e.line is not None, str(e)


@pytest.mark.parametrize(("paths", "key", "words"), [
    ("{gone: {status: 410}}", "internet.sites[0].paths.gone", "is not a path"),
    ("{/a: {status: 304, body: x}}", "internet.sites[0].paths./a.body", "never carries a body"),
    ("{/a: {redirect: {to: 'http://warn.test/'}, body: x}}", "internet.sites[0].paths./a.body", "own status"),
    ("{/a: {redirect: {to: 'http://warn.test/', hops: 3}}}", "internet.sites[0].paths./a.redirect.hops", "once"),
    ("{/a: {headers: {Content-Length: '9'}}}", "internet.sites[0].paths./a.headers.Content-Length", "sets this"),
    ("{/a: {redirect: {to: 'http://nowhere.test/'}}}", "internet.sites[0].paths./a.redirect.to", "not a site"),
])
def test_bad_paths_are_refused(paths: str, key: str, words: str) -> None:
    e = err(BASE.replace("    - name: a.test\n", f"    - name: a.test\n      paths: {paths}\n"))
    assert e.key == key and words in e.message, str(e)


def test_a_bodiless_status_loads_without_body() -> None:
    s = parse_scenario(BASE.replace("    - name: a.test\n", "    - name: a.test\n      response: {status: 204}\n"
                                    "      paths: {/n: {status: 304}}\n"))
    site = s.site("a.test")
    assert site.body == b"" and site.path("/n?x=1").body == b""


def test_declared_pages_become_fingerprints_the_analysis_uses() -> None:
    scenario = load_scenario(SCENARIO)
    declared = declared_fingerprints(scenario)
    assert [d["name"] for d in declared] == ["scenario iran line 32", "scenario iran line 38",
                                             "scenario warnisp line 53", "scenario warnisp line 64"]
    fps = load_fingerprints(declared=declared)
    page = next(r for r in scenario.isps[0].dpi_rules if r.blockpage).blockpage.page.decode()
    keys = {"requests": [{"response": {"body": page, "headers": {}}}], "x_status_code": 403,
            "queries": [], "x_resolved": {}}
    control = {"x_status_code": 200, "queries": [], "x_resolved": {}}
    verdict = analyse(keys, control, fps)
    assert verdict.verdict.value == "http.blockpage" and "scenario iran line 38" in verdict.why


def test_oracle_expects_what_the_pages_show() -> None:
    scenario = load_scenario(SCENARIO)
    exp = {k: e.verdict.value for k, e in expected_verdicts(scenario, scenario.site_addresses()).items()}
    assert exp[("iran", "http://persian.test/")] == "http.blockpage"  # Iran's 403 iframe page
    assert exp[("iran", "https://persian.test/")] == "ok"
    assert exp[("warnisp", "http://social.test/")] == "http.diff"  # a 302 to the warning page, followed
    assert exp[("warnisp", "http://torrent.test/")] == "http.blockpage"  # no headers, ended by the FIN
    assert exp[("iran", "http://banned.test/")] == "dns.bogon"  # 10.10.34.34, with its server
    assert exp[("warnisp", "http://banned.test/")] == "http.blockpage"  # a server inside the lab internet
    assert exp[("warnisp", "https://banned.test/")] == "dns.mismatch"  # nothing on 443 there
    assert exp[("iran", "http://news.test/secret")] == "http.reset"  # one path of a site
    assert exp[("iran", "https://news.test/ping")] == exp[("control", "https://news.test/cached")] == "ok"


def test_oracle_follows_paths() -> None:
    text = BASE.replace("    - name: a.test\n", "    - name: a.test\n      paths:\n"
                        "        /go: {redirect: {to: 'http://warn.test/'}}\n        /broken: {redirect: {location: 'http://'}}\n"
                        "        /info: {status: 101}\n") + (
        "isps:\n  - name: i\n    dpi:\n      rules:\n        - match: {http_host: warn.test}\n          action: reset\n"
        "targets: ['http://a.test/go', 'http://a.test/broken', 'http://a.test/info', 'http://a.test/']\n")
    s = parse_scenario(text)
    exp = {k: e.verdict.value for k, e in expected_verdicts(s, s.site_addresses()).items()}
    assert exp[("i", "http://a.test/go")] == "http.reset"  # the redirect leads into the censored site
    assert exp[("i", "http://a.test/")] == "ok"
    assert exp[("control", "http://a.test/broken")] == exp[("control", "http://a.test/info")] == "site_down"


def test_compiler_puts_pages_in_the_router_and_the_middlebox() -> None:
    scenario = load_scenario(SCENARIO)
    plan = compile_lab(scenario, servers=[])
    bp = json.loads(plan.files["iran/blockpage.json"])
    assert base64.b64decode(bp["pages"]["10.10.34.34"]).startswith(b"HTTP/1.1 200 OK\r\n")
    router = plan.hosts["iran.gw"]
    assert ("ip", "addr", "add", "10.10.34.34/32", "dev", "lo") in router.setup
    assert any(s.name == "blockpage" for s in router.services)
    rules = json.loads(plan.files["iran/dpi.json"])["rules"]
    assert base64.b64decode(rules[0]["page"]).startswith(b"HTTP/1.1 403 Forbidden\r\nConnection: close\r\n\r\n<html>")
    assert "iran/blockpage.json" not in plan.files or "warnisp/blockpage.json" in plan.files


def test_middlebox_injects_the_declared_page() -> None:
    page = Blockpage(403, (("Connection", "close"),), b"<iframe src='http://10.10.34.34'></iframe>")
    rule = Rule(Match(http_host="a.test"), "blockpage", blockpage=page)
    e = Engine(dpi_config(Isp("i", dpi_rules=(rule,)), isp_addresses(1), {"a.test": IPv4Address("198.18.1.1")}))
    req = b"GET / HTTP/1.1\r\nHost: a.test\r\n\r\n"
    d = e.process(build_tcp("10.1.0.2", "198.18.1.1", 40000, 80, 1001, 5001, TCP_PSH | TCP_ACK, req))
    assert d.verdict == KILL and parse_ipv4(d.send[0]).payload == page.response()


PORT_SHIFT = 21000  # unprivileged ports: no root needed


def raw_get(path: str) -> bytes:
    return http_get("127.0.0.5", "a.test", path, 80 + PORT_SHIFT)


def test_origin_answers_paths_and_bodiless_statuses(tmp_path: Path) -> None:
    body = tmp_path / "gone.body"
    body.write_bytes(b"<p>gone</p>")
    site = origin.site_config({
        "name": "a.test", "address": "127.0.0.5", "pem": "", "body_size": 1000, "https": False, "quic": False,
        "status": 204, "headers": [["X-Site", "a"]],
        "paths": [{"path": "/gone", "status": 410, "headers": [["Content-Type", "text/plain"]], "body_path": str(body)},
                  {"path": "/old", "status": 301, "redirect": {"to": "http://b.test/", "location": None}},
                  {"path": "/same", "status": 304, "headers": [["ETag", '"1"']]},
                  {"path": "/wait", "status": 102}]})

    async def main() -> list[bytes]:
        where = origin.addresses([site])[0]

        async def on_connect(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            await origin.serve_connection(r, w, where, "http", "10.1.0.2")
        server = await asyncio.start_server(on_connect, sock=listener("127.0.0.5", 80 + PORT_SHIFT))
        try:
            return list(await asyncio.gather(*(asyncio.to_thread(raw_get, p)
                                               for p in ("/gone?x=1", "/old", "/same", "/wait", "/"))))
        finally:
            server.close()
    gone, old, same, wait, root = asyncio.run(main())
    assert gone.startswith(b"HTTP/1.1 410 ") and b"Content-Type: text/plain" in gone and gone.endswith(b"<p>gone</p>")
    assert b"text/html" not in gone.split(b"\r\n\r\n")[0]  # the path's header replaced the origin's
    assert old.startswith(b"HTTP/1.1 301 ") and b"Location: http://b.test/" in old
    assert same.startswith(b"HTTP/1.1 304 ") and b'ETag: "1"' in same and b"Content-Length" not in same
    assert same.endswith(b"\r\n\r\n")
    assert wait.startswith(b"HTTP/1.1 102 ") and wait.endswith(b"\r\n\r\n")  # and then the connection closes
    # The site's own 204 (not a path): no body, no Content-Length, its header.
    assert root.startswith(b"HTTP/1.1 204 ") and b"Content-Length" not in root and b"X-Site: a" in root
    assert root.endswith(b"\r\n\r\n")
