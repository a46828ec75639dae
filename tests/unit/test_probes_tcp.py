"""TcpProbe against real listeners on 127.0.0.1."""

from __future__ import annotations

import threading

import pytest
from test_probes_support import LOOPBACK, DnsServer, free_tcp_port, make_context, run, tcp_server

from netlab.target import Target
from probes.errors import TargetRefused
from probes.tcp import TcpProbe

pytestmark = pytest.mark.usefixtures("loopback_only")


def idle(conn: object, stop: threading.Event) -> None:
    pass


def test_connects_to_resolved_address(dns_server: DnsServer) -> None:
    with tcp_server(idle) as server:
        target = Target.parse(f"http://ok.test:{server.port}/")
        keys = run(TcpProbe().run(target, make_context(dns_server.port)))
    assert keys["failure"] is None and keys["x_failed_stage"] is None
    assert keys["x_addresses"] == [LOOPBACK]
    assert len(keys["queries"]) == 1
    [entry] = keys["tcp_connect"]
    assert entry["ip"] == LOOPBACK and entry["port"] == server.port
    assert entry["status"] == {"failure": None, "success": True, "blocked": False}
    assert entry["transaction_id"] != keys["queries"][0]["transaction_id"]


def test_every_address_gets_an_entry(dns_server: DnsServer) -> None:
    with tcp_server(idle) as server:
        # Only 127.0.0.1 may be contacted here, so "several addresses" is the same one twice.
        target = Target.parse(f"http://ok.test:{server.port}/")
        keys = run(TcpProbe(addresses=[LOOPBACK, LOOPBACK]).run(target, make_context(dns_server.port)))
    assert [e["status"]["success"] for e in keys["tcp_connect"]] == [True, True]


def test_refused(dns_server: DnsServer) -> None:
    target = Target.parse(f"http://ok.test:{free_tcp_port()}/")
    keys = run(TcpProbe().run(target, make_context(dns_server.port)))
    [entry] = keys["tcp_connect"]
    assert entry["status"] == {"failure": "connection_refused", "success": False, "blocked": False}
    assert keys["failure"] == "connection_refused"
    assert keys["x_failed_stage"] == "tcp"


def test_given_addresses_skip_dns(dns_server: DnsServer) -> None:
    with tcp_server(idle) as server:
        target = Target.parse(f"http://ok.test:{server.port}/")
        keys = run(TcpProbe(addresses=[LOOPBACK]).run(target, make_context(dns_server.port)))
    assert keys["queries"] == []
    assert dns_server.queries == []
    assert keys["tcp_connect"][0]["status"]["success"] is True


def test_dns_failure_stops_before_connecting(dns_server: DnsServer) -> None:
    keys = run(TcpProbe().run(Target.parse("http://nx.test/"), make_context(dns_server.port)))
    assert keys["x_failed_stage"] == "dns"
    assert keys["failure"] == "dns_nxdomain_error"
    assert keys["tcp_connect"] == []


def test_global_address_is_refused(dns_server: DnsServer) -> None:
    target = Target.parse("http://ok.test/")
    with pytest.raises(TargetRefused, match="globally routable"):
        run(TcpProbe(addresses=["93.184.216.34"]).run(target, make_context(dns_server.port)))
    with pytest.raises(TargetRefused, match="globally routable"):
        run(TcpProbe().run(Target.parse("http://global.test/"), make_context(dns_server.port)))


def test_global_ip_literal_target_is_refused(dns_server: DnsServer) -> None:
    with pytest.raises(TargetRefused, match="globally routable"):
        run(TcpProbe().run(Target.parse("http://8.8.8.8/"), make_context(dns_server.port)))
