"""TlsProbe against real TLS servers on 127.0.0.1 with trustme certificates."""

from __future__ import annotations

import base64

import pytest
import trustme
from test_probes_support import LOOPBACK, DnsServer, Pki, during_handshake, make_context, run, serve, tcp_server

from netlab.target import Target
from probes.tls import TlsProbe

pytestmark = pytest.mark.usefixtures("loopback_only")


def handshake_with(cert: trustme.LeafCert, pki: Pki, dns_port: int) -> dict:
    with tcp_server(serve(b"", tls=Pki.server_context(cert))) as server:
        target = Target.parse(f"https://news.test:{server.port}/")
        return run(TlsProbe().run(target, make_context(dns_port, ca_file=str(pki.ca_file))))


def test_valid_certificate(pki: Pki, dns_server: DnsServer) -> None:
    keys = handshake_with(pki.valid, pki, dns_server.port)
    assert keys["failure"] is None and keys["x_failed_stage"] is None
    [entry] = keys["tls_handshakes"]
    assert entry["failure"] is None
    assert entry["network"] == "tcp"
    assert entry["address"].startswith(f"{LOOPBACK}:")
    assert entry["server_name"] == "news.test"
    assert entry["tls_version"] == "TLSv1.3"
    assert entry["cipher_suite"].startswith("TLS_")
    assert entry["negotiated_protocol"] == "http/1.1"
    assert entry["no_tls_verify"] is False
    assert entry["peer_certificates"][0]["format"] == "base64"
    assert base64.b64decode(entry["peer_certificates"][0]["data"]) == Pki.leaf_der(pki.valid)
    # The handshake rides on the connection: same transaction id.
    assert entry["transaction_id"] == keys["tcp_connect"][0]["transaction_id"]


@pytest.mark.parametrize(
    ("cert_name", "failure"),
    [
        ("wrong_name", "ssl_invalid_hostname"),
        ("unknown_ca", "ssl_unknown_authority"),
        ("expired", "ssl_invalid_certificate"),
    ],
)
def test_invalid_certificates_keep_the_chain(pki: Pki, dns_server: DnsServer, cert_name: str,
                                              failure: str) -> None:
    cert = getattr(pki, cert_name)
    keys = handshake_with(cert, pki, dns_server.port)
    assert keys["failure"] == failure
    assert keys["x_failed_stage"] == "tls"
    [entry] = keys["tls_handshakes"]
    assert entry["failure"] == failure
    assert entry["tls_version"] == "" and entry["cipher_suite"] == ""
    # The certificate the (intercepting) server presented is the evidence: keep it.
    assert base64.b64decode(entry["peer_certificates"][0]["data"]) == Pki.leaf_der(cert)


@pytest.mark.parametrize(
    ("action", "failure"),
    [
        ("reset", "connection_reset"),
        ("close", "eof_error"),
        ("alert", "ssl_failed_handshake"),
        ("silent", "generic_timeout_error"),
    ],
)
def test_handshake_interference(pki: Pki, dns_server: DnsServer, action: str, failure: str) -> None:
    with tcp_server(during_handshake(action)) as server:
        target = Target.parse(f"https://news.test:{server.port}/")
        ctx = make_context(dns_server.port, ca_file=str(pki.ca_file), tls_timeout=0.5)
        keys = run(TlsProbe().run(target, ctx))
    [entry] = keys["tls_handshakes"]
    assert entry["failure"] == failure
    assert entry["peer_certificates"] == []
    assert keys["x_failed_stage"] == "tls"


def test_missing_ca_file_is_a_failure_not_a_crash(pki: Pki, dns_server: DnsServer) -> None:
    with tcp_server(serve(b"", tls=Pki.server_context(pki.valid))) as server:
        target = Target.parse(f"https://news.test:{server.port}/")
        keys = run(TlsProbe().run(target, make_context(dns_server.port, ca_file="/nonexistent/ca.pem")))
    assert keys["tls_handshakes"][0]["failure"].startswith("unknown_failure:")
