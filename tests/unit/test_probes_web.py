"""WebProbe: the dns -> tcp -> tls -> http chain, stage by stage, and the measurement envelope."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime

import pytest
from test_probes_support import (
    LOOPBACK,
    PAGE,
    DnsServer,
    Pki,
    after_request,
    during_handshake,
    free_tcp_port,
    http_response,
    make_context,
    run,
    serve,
    tcp_server,
)

from netlab.target import Target
from probes.errors import TargetRefused
from probes.measurement import measurement_envelope
from probes.web import WebProbe

pytestmark = pytest.mark.usefixtures("loopback_only")

WEB_KEYS = {
    "agent", "socksproxy", "queries", "tcp_connect", "tls_handshakes", "requests",
    "dns_experiment_failure", "http_experiment_failure", "failure", "x_failed_stage", "x_addresses",
    "x_resolved", "x_dns_responses", "x_status_code", "x_body_length", "x_body_seconds", "x_title",
    "x_body_stall_seconds",
    "x_body_sha256", "network_events",
}


def web(url: str, dns_port: int, pki: Pki, **overrides: object) -> dict:
    ctx = make_context(dns_port, ca_file=str(pki.ca_file), public_resolver=LOOPBACK, **overrides)
    return run(WebProbe().run(Target.parse(url), ctx))


def test_success_over_https(pki: Pki, dns_server: DnsServer) -> None:
    with tcp_server(serve(http_response(PAGE), tls=Pki.server_context(pki.valid))) as server:
        keys = web(f"https://news.test:{server.port}/", dns_server.port, pki)
    assert set(keys) == WEB_KEYS
    assert keys["x_failed_stage"] is None
    assert keys["dns_experiment_failure"] is None and keys["http_experiment_failure"] is None
    assert keys["x_addresses"] == [LOOPBACK]
    assert keys["x_resolved"] == {"system": [LOOPBACK], "public": [LOOPBACK]}
    assert [q["engine"] for q in keys["queries"]] == ["system", "udp"]
    assert keys["queries"][0]["tags"] == ["classic", "depth=0"]
    assert keys["queries"][1]["tags"] == ["depth=0"]
    for step in ("tcp_connect", "tls_handshakes", "requests"):
        assert len(keys[step]) == 1
        # web_connectivity 0.5 tags every endpoint flow with whether it could fetch the page.
        assert keys[step][0]["tags"] == ["classic", "tcptls_experiment", "depth=0", "fetch_body=true"]
    assert keys["requests"][0]["response"]["code"] == 200
    assert keys["x_status_code"] == 200
    assert keys["x_title"] == "Lab & News Today"
    assert keys["x_body_length"] == len(PAGE)
    json.dumps(keys, allow_nan=False)  # test keys are plain JSON


def test_dns_stage(pki: Pki, dns_server: DnsServer) -> None:
    keys = web("https://nx.test/", dns_server.port, pki)
    assert keys["x_failed_stage"] == "dns"
    assert keys["dns_experiment_failure"] == "dns_nxdomain_error"
    assert keys["http_experiment_failure"] is None
    assert keys["tcp_connect"] == [] and keys["requests"] == []


def test_tcp_stage(pki: Pki, dns_server: DnsServer) -> None:
    keys = web(f"https://news.test:{free_tcp_port()}/", dns_server.port, pki)
    assert keys["x_failed_stage"] == "tcp"
    assert keys["http_experiment_failure"] == "connection_refused"
    assert keys["tls_handshakes"] == [] and keys["requests"] == []


def test_tls_stage(pki: Pki, dns_server: DnsServer) -> None:
    with tcp_server(during_handshake("reset")) as server:
        keys = web(f"https://news.test:{server.port}/", dns_server.port, pki)
    assert keys["x_failed_stage"] == "tls"
    assert keys["http_experiment_failure"] == "connection_reset"
    assert keys["requests"] == []


def test_tls_interception(pki: Pki, dns_server: DnsServer) -> None:
    with tcp_server(serve(http_response(PAGE), tls=Pki.server_context(pki.unknown_ca))) as server:
        keys = web(f"https://news.test:{server.port}/", dns_server.port, pki)
    assert keys["x_failed_stage"] == "tls"
    assert keys["http_experiment_failure"] == "ssl_unknown_authority"
    assert keys["tls_handshakes"][0]["peer_certificates"]


def test_http_stage(pki: Pki, dns_server: DnsServer) -> None:
    with tcp_server(after_request("reset")) as server:
        keys = web(f"http://news.test:{server.port}/", dns_server.port, pki)
    assert keys["x_failed_stage"] == "http"
    assert keys["http_experiment_failure"] == "connection_reset"
    assert keys["tls_handshakes"] == []
    assert keys["requests"][0]["failure"] == "connection_reset"


def test_ip_literal_target(pki: Pki, dns_server: DnsServer) -> None:
    with tcp_server(serve(http_response(PAGE), tls=Pki.server_context(pki.valid))) as server:
        keys = web(f"https://{LOOPBACK}:{server.port}/", dns_server.port, pki)
    assert keys["queries"] == [] and dns_server.queries == []
    assert keys["x_failed_stage"] is None
    assert keys["tls_handshakes"][0]["server_name"] == LOOPBACK


def test_global_answer_is_refused_before_connecting(pki: Pki, dns_server: DnsServer) -> None:
    with pytest.raises(TargetRefused, match=r"93\.184\.216\.34"):
        web("https://global.test/", dns_server.port, pki)


def test_envelope(pki: Pki, dns_server: DnsServer) -> None:
    with tcp_server(serve(http_response(PAGE), tls=Pki.server_context(pki.valid))) as server:
        url = f"https://news.test:{server.port}/"
        ctx = make_context(dns_server.port, ca_file=str(pki.ca_file))
        start = datetime.now(UTC)
        keys = run(WebProbe().run(Target.parse(url), ctx))
    envelope = measurement_envelope(WebProbe(), Target.parse(url), ctx, keys, start, 0.25)
    assert envelope["test_name"] == "web_connectivity"
    assert envelope["test_version"] == WebProbe.version
    assert envelope["data_format_version"] == "0.2.0"
    assert envelope["input"] == url
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", envelope["measurement_start_time"])
    assert envelope["test_start_time"] == envelope["measurement_start_time"]
    assert envelope["probe_asn"] == "AS64500" and envelope["resolver_asn"] == "AS64500"
    assert envelope["probe_cc"] == "ZZ"
    assert envelope["resolver_ip"] == LOOPBACK
    assert envelope["software_name"] == "fauxisp"
    assert envelope["test_runtime"] == 0.25
    assert envelope["test_keys"] is keys
    assert envelope["options"] == [] and envelope["test_helpers"] == {}
    assert envelope["annotations"]["vantage"] == "test"
    assert "web_connectivity" in envelope["measurement_uid"]
    assert "_webconnectivity_ZZ_64500_" in envelope["report_id"]
    for key in ("probe_ip", "probe_network_name", "resolver_network_name", "extensions", "software_version"):
        assert key in envelope
