"""The typed contracts between the lab compiler and the in-lab services (netlab.services.configs,
the add-on servers' ServerConfig, hosts.json's LabHosts): what the compiler writes is what the
service parses, and the one page answerer the blockpage server and the interceptor share."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import replace
from ipaddress import IPv4Network, IPv6Network
from pathlib import Path
from typing import Protocol

from netlab.compile import compile_lab
from netlab.loader import load_scenario
from netlab.plan import LabHosts
from netlab.services._serve import answer_page
from netlab.services.addon import ServerConfig, SiteEntry
from netlab.services.configs import (
    BlockpageConfig,
    DpiConfig,
    InterceptConfig,
    OriginConfig,
    ProxyConfig,
    ShaperConfig,
    WhoamiConfig,
    middlebox_config_from_json,
)

ROOT = Path(__file__).resolve().parents[2]


class ConfigFile(Protocol):
    def to_json(self) -> str: ...


PARSERS: dict[str, Callable[[str], ConfigFile]] = {
    "origin.json": OriginConfig.from_json, "proxy.json": ProxyConfig.from_json, "whoami.json": WhoamiConfig.from_json,
    "blockpage.json": BlockpageConfig.from_json, "intercept.json": InterceptConfig.from_json,
    "dpi.json": DpiConfig.from_json}


def test_every_config_the_compiler_writes_parses_and_writes_back_the_same() -> None:
    seen = set()
    for name in ("demo", "interception", "paths-blockpages", "shared-hosting", "dns-hierarchy", "misbehaving",
                 "gfw-quic-2024", "shaping-names", "dual-stack"):
        plan = compile_lab(load_scenario(ROOT / "scenarios" / f"{name}.yaml"), "x")
        for path, text in plan.files.items():
            kind = path.rsplit("/", 1)[-1]
            if kind not in PARSERS:
                continue
            assert isinstance(text, str)
            assert PARSERS[kind](text).to_json() == text, path
            seen.add(kind)
    assert seen == set(PARSERS)


def test_blockpage_pages_travel_as_bytes() -> None:
    config = BlockpageConfig(pages={"10.10.34.34": b"HTTP/1.1 403 Forbidden\r\n\r\n\xff"}, ready_file=None)
    assert BlockpageConfig.from_json(config.to_json()) == config


def test_addon_server_config_round_trips(tmp_path: Path) -> None:
    config = ServerConfig(name="dot", port=853, upstream="198.51.100.2", ready_file="/lab/dot.ready",
                          sites=[SiteEntry("dns.test", "203.0.113.5", "/lab/pki/dns.test.pem")], ca="/lab/ca.pem")
    (tmp_path / "dot.json").write_text(config.to_json())
    assert ServerConfig.load(tmp_path / "dot.json") == config


def test_hosts_json_round_trips() -> None:
    plan = compile_lab(load_scenario(ROOT / "scenarios" / "demo.yaml"), "x")
    hosts = LabHosts(plan.lab, dict(plan.hosts), list(plan.links))
    again = LabHosts.from_json(hosts.to_json())
    assert again.to_json() == hosts.to_json()
    assert again.links == hosts.links and set(again.hosts) == set(plan.hosts)


def test_answer_page_answers_a_head_and_a_client_that_stops_early() -> None:
    page = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi"

    async def fetch(request: bytes, close_early: bool) -> bytes:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                await answer_page(reader, writer, page)
            finally:
                writer.close()

        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        async with server:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(request)
            if close_early:
                writer.write_eof()  # the head never ends: the page comes at the end of the stream
            await writer.drain()
            got = await asyncio.wait_for(reader.read(), 5)
            writer.close()
            return got

    assert asyncio.run(fetch(b"GET / HTTP/1.1\r\nHost: a.test\r\n\r\n", False)) == page
    assert asyncio.run(fetch(b"GET / HTTP/1.1\r\n", True)) == page


def test_every_shipped_middlebox_config_parses_and_writes_back_the_same() -> None:
    """dpi.json of every shipped scenario, and shaper.json of every one with shaping rules given
    delay and loss (the shaper runs without netem only): the service's parser and the compiler's
    serialiser agree on every key."""
    seen = set()
    for path in sorted([*ROOT.glob("scenarios/*.yaml"), *ROOT.glob("qa/*.yaml")]):
        scenario = load_scenario(path)
        isps = tuple(replace(i, shaping=tuple(replace(r, delay_ms=50, loss=0.5) for r in i.shaping))
                     for i in scenario.isps)
        for plan in (compile_lab(scenario, "x"), compile_lab(replace(scenario, isps=isps), "x")):
            for name, text in plan.files.items():
                if name.endswith(("/dpi.json", "/shaper.json")):
                    assert isinstance(text, str)
                    config = middlebox_config_from_json(text)
                    assert type(config) is (ShaperConfig if name.endswith("shaper.json") else DpiConfig)
                    assert config.to_json() == text, name
                    seen.add(name.rsplit("/", 1)[-1])
    assert seen == {"dpi.json", "shaper.json"}


def test_middlebox_config_carries_pages_keywords_and_networks_typed() -> None:
    plan = compile_lab(load_scenario(ROOT / "scenarios" / "paths-blockpages.yaml"), "x")
    configs = [DpiConfig.from_json(t) for n, t in plan.files.items() if n.endswith("/dpi.json") and isinstance(t, str)]
    rules = [r for c in configs for r in c.rules]
    assert any(r.page is not None and r.page.startswith(b"HTTP/1.1 ") for r in rules)
    assert all(isinstance(n, IPv4Network | IPv6Network) for r in rules for grp in r.servers for n in grp)
