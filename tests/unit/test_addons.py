"""Servers declared by probe packages (netlab.addons): declarations, the compiler's services, the oracle."""

from __future__ import annotations

import json

import pytest

from netlab.addons import Declared, Server, ServerError, check_servers, serves
from netlab.compile import compile_lab
from netlab.loader import parse_scenario
from netlab.oracle import control_fault
from netlab.target import Target

SCENARIO = """
version: 1
name: addons
internet:
  sites: [{name: dns.test}, {name: open.test}]
isps: [{name: isp-a}]
targets: [https://dns.test:853/, https://dns.test/dns-query, https://open.test/]
"""
DOT = Declared("dot", Server(name="dot", module="fauxisp_dot", port=853))
DOH = Declared("doh", Server(name="doh", module="fauxisp_doh", port=443, sites="targets", path="/dns-query",
                             ready="file"))


def scenario(text: str = SCENARIO):  # type: ignore[no-untyped-def]
    return parse_scenario(text, "addons.yaml")


def test_declarations_are_checked() -> None:
    for bad in ({"name": "origin"}, {"name": "Bad"}, {"module": "not a module"}, {"port": 53}, {"port": 70000},
                {"sites": "some"}, {"path": "dns-query"}, {"ready": "later"}):
        with pytest.raises(ServerError):
            Server(**{"name": "x", "module": "m", "port": 853, **bad})  # type: ignore[arg-type]
    assert check_servers([DOT, Declared("dot2", DOT.server)]) == [DOT]  # one server shared by two probe types
    with pytest.raises(ServerError, match="both take port 853"):
        check_servers([DOT, Declared("x", Server(name="other", module="m", port=853))])
    with pytest.raises(ServerError, match="different servers named"):
        check_servers([DOT, Declared("x", Server(name="dot", module="m", port=854))])


def test_compiled_only_when_a_target_asks() -> None:
    plan = compile_lab(scenario(), servers=[])
    assert [s.name for s in plan.hosts["inet"].services] == ["nsd", "nsd-tld", "nsd-auth", "resolver", "origin"]
    no_dot = scenario(SCENARIO.replace("https://dns.test:853/, ", ""))
    plan = compile_lab(no_dot, servers=[DOT])
    assert "dot" not in [s.name for s in plan.hosts["inet"].services] and plan.server_probes == []


def test_servers_become_services_of_the_internet_host() -> None:
    plan = compile_lab(scenario(), servers=[DOT, DOH])
    services = {s.name: s for s in plan.hosts["inet"].services}
    assert services["dot"].argv == ("python3", "-m", "fauxisp_dot", "--config", "@LAB@/inet/addons/dot.json")
    assert services["dot"].ready is not None and services["dot"].ready.kind == "tcp"
    assert services["dot"].ready.port == 853
    assert services["doh"].ready is not None and services["doh"].ready.path == "inet/addons/doh.ready"
    assert plan.server_probes == ["dot", "doh"]
    dot = json.loads(str(plan.files["inet/addons/dot.json"]))
    assert [s["name"] for s in dot["sites"]] == ["dns.test", "open.test"] and dot["upstream"] == "198.18.0.2"
    doh = json.loads(str(plan.files["inet/addons/doh.json"]))
    assert [s["name"] for s in doh["sites"]] == ["dns.test"]  # sites="targets": the ones a target names
    # The DoH server takes 443 of dns.test from the origin, not of open.test.
    origin = {s["name"]: s for s in json.loads(str(plan.files["inet/origin.json"]))["sites"]}
    assert not origin["dns.test"]["https"] and origin["dns.test"]["http"] and origin["open.test"]["https"]
    assert any("server of probe type 'doh'" in n for n in plan.notes)


def test_the_oracle_knows_what_answers(monkeypatch: pytest.MonkeyPatch) -> None:
    sc = scenario()
    monkeypatch.setattr("netlab.oracle.installed_servers", lambda: ())
    assert control_fault(sc, Target.parse("https://dns.test:853/")) == "nothing listens on port 853 of dns.test"
    monkeypatch.setattr("netlab.oracle.installed_servers", lambda: (DOT,))
    assert control_fault(sc, Target.parse("https://dns.test:853/")) is None
    assert serves(sc, "dns.test", 853, [DOT]) and serves(sc, "open.test", 853, [DOT])
    assert serves(sc, "dns.test", 443, [DOH]) and not serves(sc, "open.test", 443, [DOH])
    assert not serves(sc, "dns.test", 853, [])


def test_a_collision_matters_only_where_a_scenario_asks_for_both() -> None:
    rival = Declared("rival", Server(name="rival-dot", module="rival", port=853))
    quiet = scenario(SCENARIO.replace("https://dns.test:853/, ", ""))
    assert [s.name for s in compile_lab(quiet, servers=[DOT, rival]).hosts["inet"].services] == \
        ["nsd", "nsd-tld", "nsd-auth", "resolver", "origin"]
    with pytest.raises(ServerError, match="both take port 853"):
        compile_lab(scenario(), servers=[DOT, rival])
