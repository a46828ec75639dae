"""DnsProbe against real UDP DNS servers on 127.0.0.1."""

from __future__ import annotations

import base64

import dns.message
import pytest
from test_probes_support import LOOPBACK, DnsServer, free_udp_port, make_context, run

from netlab.target import Target
from probes.dns import DnsProbe
from probes.errors import TargetRefused

pytestmark = pytest.mark.usefixtures("loopback_only")


def probe(host: str, port: int, **overrides: object) -> dict:
    ctx = make_context(port, **overrides)
    return run(DnsProbe().run(Target.parse(f"https://{host}/"), ctx))


def test_answer(dns_server: DnsServer) -> None:
    keys = probe("ok.test", dns_server.port)
    assert keys["dns_experiment_failure"] is None
    assert keys["x_resolved"]["system"] == [LOOPBACK]
    assert keys["x_dns_responses"] == {"system": 1}
    [entry] = keys["queries"]
    assert entry["engine"] == "system"
    assert entry["resolver_address"] == f"{LOOPBACK}:{dns_server.port}"
    assert entry["query_type"] == "A"
    assert entry["hostname"] == "ok.test"
    assert entry["failure"] is None
    assert entry["rcode"] == 0
    assert entry["answers"] == [{"answer_type": "A", "ipv4": LOOPBACK, "ttl": 60}]
    assert isinstance(entry["transaction_id"], int)
    assert 0 <= entry["t0"] <= entry["t"]
    raw = dns.message.from_wire(base64.b64decode(entry["raw_response"]))
    assert raw.answer[0][0].address == LOOPBACK


def test_cname_chain(dns_server: DnsServer) -> None:
    keys = probe("cname.test", dns_server.port)
    answers = keys["queries"][0]["answers"]
    # As OONI writes them: the addresses, then one CNAME answer naming the canonical name.
    assert answers[0]["ipv4"] == LOOPBACK
    assert answers[1] == {"answer_type": "CNAME", "hostname": "ok.test.", "ttl": 30}
    assert keys["x_resolved"]["system"] == [LOOPBACK]


@pytest.mark.parametrize(
    ("host", "failure", "rcode"),
    [
        ("nx.test", "dns_nxdomain_error", 3),
        ("fail.test", "dns_servfail_error", 2),
        ("refused.test", "dns_refused_error", 5),
        ("empty.test", "dns_no_answer", 0),
    ],
)
def test_failing_rcodes(dns_server: DnsServer, host: str, failure: str, rcode: int) -> None:
    keys = probe(host, dns_server.port)
    assert keys["dns_experiment_failure"] == failure
    [entry] = keys["queries"]
    assert entry["failure"] == failure
    assert entry["rcode"] == rcode
    assert entry["answers"] == []
    assert keys["x_resolved"]["system"] == []


def test_injected_pair_is_recorded(dns_server: DnsServer) -> None:
    keys = probe("injected.test", dns_server.port)
    first, second = keys["queries"]
    assert first["answers"][0]["ipv4"] == "10.10.34.34"  # the forged answer won the race
    assert second["answers"][0]["ipv4"] == LOOPBACK
    assert first["transaction_id"] == second["transaction_id"]
    assert first["t"] <= second["t"]
    assert keys["x_dns_responses"]["system"] == 2
    # A stub resolver acts on the first response.
    assert keys["x_resolved"]["system"] == ["10.10.34.34"]


def test_garbage_and_wrong_id_are_ignored(dns_server: DnsServer) -> None:
    keys = probe("garbage.test", dns_server.port)
    [entry] = keys["queries"]
    assert entry["failure"] is None
    assert keys["x_dns_responses"]["system"] == 1


def test_no_answer_is_a_timeout(dns_server: DnsServer) -> None:
    keys = probe("silent.test", dns_server.port, dns_timeout=0.3)
    [entry] = keys["queries"]
    assert entry["failure"] == "generic_timeout_error"
    assert entry["rcode"] is None and entry["raw_response"] is None
    assert keys["dns_experiment_failure"] == "generic_timeout_error"
    assert entry["t"] >= 0.3


def test_nothing_listening_is_connection_refused() -> None:
    keys = probe("ok.test", free_udp_port(), dns_timeout=1.0)
    assert keys["dns_experiment_failure"] == "connection_refused"


def test_public_resolver_is_queried_too(dns_server: DnsServer) -> None:
    keys = probe("ok.test", dns_server.port, public_resolver=LOOPBACK)
    engines = [entry["engine"] for entry in keys["queries"]]
    assert engines == ["system", "udp"]
    assert keys["x_resolved"] == {"system": [LOOPBACK], "public": [LOOPBACK]}
    assert keys["x_dns_responses"] == {"system": 1, "public": 1}
    assert keys["queries"][0]["transaction_id"] != keys["queries"][1]["transaction_id"]
    assert dns_server.queries == ["ok.test", "ok.test"]


def test_ip_literal_needs_no_lookup(dns_server: DnsServer) -> None:
    keys = probe(LOOPBACK, dns_server.port)
    assert keys["queries"] == []
    assert keys["x_resolved"]["system"] == [LOOPBACK]
    assert dns_server.queries == []


def test_name_outside_the_lab_is_refused(dns_server: DnsServer) -> None:
    with pytest.raises(TargetRefused, match="not a site this lab serves"):
        probe("example.com", dns_server.port)
    assert dns_server.queries == []


def test_global_resolver_is_refused(dns_server: DnsServer) -> None:
    # loopback_only would also stop the packet; the probe must refuse before trying.
    with pytest.raises(TargetRefused, match="globally routable"):
        probe("ok.test", dns_server.port, resolver="8.8.8.8")
    with pytest.raises(TargetRefused, match="globally routable"):
        probe("ok.test", dns_server.port, public_resolver="1.1.1.1")
    assert dns_server.queries == []
