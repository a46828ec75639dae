"""The quic probe against the lab's HTTP/3 origin (netlab.services.h3) on loopback: OONI's record
shapes, and the failures a censor or a broken site causes (timeout, ICMP refusal, wrong name)."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import pytest
import trustme

from netlab.capabilities import Capabilities
from netlab.services import h3
from netlab.services.origin import SiteConfig, SiteHandler
from netlab.target import Target
from probes.base import load_probe
from probes.context import ProbeContext
from probes.quic import QuicProbe, measure_address
from probes.trace import Trace


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    d = tmp_path_factory.mktemp("quic-pki")
    ca = trustme.CA()
    leaf = ca.issue_cert("site.test", "other.test")
    pem = d / "site.pem"
    pem.write_bytes(b"".join(b.bytes() for b in leaf.cert_chain_pems) + leaf.private_key_pem.bytes())
    ca.cert_pem.write_to_path(str(d / "ca.pem"))
    return str(pem), str(d / "ca.pem")


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def context(ca: str, **kw: object) -> ProbeContext:
    return ProbeContext(vantage="test", resolver="127.0.0.1", public_resolver=None, ca_file=ca, **kw)


async def _with_server(pem: str, port: int, coro):  # type: ignore[no-untyped-def]
    handler = SiteHandler(SiteConfig(name="site.test", pem=pem, body_size=70_000, addresses=["127.0.0.1"]))
    server = await h3.serve_site("127.0.0.1", [(["site.test"], pem)], lambda _host: handler, port=port)
    try:
        return await coro
    finally:
        server.close()


def test_handshake_and_get_in_oonis_shape(pki: tuple[str, str]) -> None:
    pem, ca = pki
    port = free_udp_port()
    trace = Trace()
    target = Target.parse(f"https://site.test:{port}/")
    handshake, request, facts = asyncio.run(_with_server(pem, port, measure_address(target, "127.0.0.1",
                                                                                    context(ca), trace)))
    assert handshake["network"] == "udp" and handshake["address"] == f"127.0.0.1:{port}"
    assert handshake["failure"] is None and handshake["negotiated_protocol"] == "h3"
    assert handshake["server_name"] == "site.test" and handshake["tls_version"] == "TLSv1.3"
    assert handshake["cipher_suite"].startswith("TLS_AES_") and handshake["peer_certificates"]
    assert request is not None and request["network"] == "udp" and request["alpn"] == "h3"
    assert request["response"]["code"] == 200 and request["response"]["headers"]["alt-svc"] == h3.ALT_SVC
    assert facts == {"failure": None, "stage": None, "status": 200, "body_length": 70_000,
                     "title": "site.test — lab origin"}
    ops = [e["operation"] for e in trace.network_events]
    assert ops[0] == "quic_handshake_start" and "quic_handshake_done" in ops
    assert {"write_to", "read_from"} <= set(ops) and {e["proto"] for e in trace.network_events} == {"udp"}


def test_no_answer_is_a_generic_timeout(pki: tuple[str, str]) -> None:
    _, ca = pki
    silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # reads and never answers: a dropped Initial
    silent.bind(("127.0.0.1", 0))
    try:
        target = Target.parse(f"https://site.test:{silent.getsockname()[1]}/")
        handshake, request, facts = asyncio.run(measure_address(target, "127.0.0.1", context(ca, quic_timeout=0.5),
                                                                Trace()))
    finally:
        silent.close()
    assert handshake["failure"] == "generic_timeout_error" and request is None
    assert facts == {"failure": "generic_timeout_error", "stage": "quic"}
    assert handshake["peer_certificates"] == [] and handshake["negotiated_protocol"] == ""


def test_icmp_port_unreachable_is_connection_refused(pki: tuple[str, str]) -> None:
    _, ca = pki
    target = Target.parse(f"https://site.test:{free_udp_port()}/")
    handshake, _, facts = asyncio.run(measure_address(target, "127.0.0.1", context(ca), Trace()))
    assert handshake["failure"] == "connection_refused" and facts["stage"] == "quic"


def test_a_name_the_certificate_does_not_cover(pki: tuple[str, str]) -> None:
    pem, ca = pki
    port = free_udp_port()
    target = Target.parse(f"https://wrong.test:{port}/")
    handshake, _, _ = asyncio.run(_with_server(pem, port, measure_address(target, "127.0.0.1", context(ca), Trace())))
    assert handshake["failure"] == "ssl_invalid_certificate"


def test_a_split_client_hello_and_quic_v2_still_connect(pki: tuple[str, str]) -> None:
    pem, ca = pki
    for kw in ({"quic_split_hello": True}, {"quic_version": 2}):
        port = free_udp_port()
        target = Target.parse(f"https://other.test:{port}/")
        handshake, _, facts = asyncio.run(_with_server(pem, port, measure_address(target, "127.0.0.1",
                                                                                  context(ca, **kw), Trace())))
        assert handshake["failure"] is None and facts["status"] == 200, kw


def test_the_probe_type_is_registered_with_its_capabilities() -> None:
    assert load_probe("quic") is QuicProbe
    caps = QuicProbe.capabilities
    assert isinstance(caps, Capabilities) and caps.quic and caps.schemes == ("https",)
    assert Capabilities.from_json(caps.to_json()) == caps
    assert set(caps.required_keys()) <= {"queries", "x_resolved", "x_failed_stage", "failure", "requests",
                                         "x_status_code", "x_title", "x_body_length"}


def test_server_configuration_reads_the_labs_pem(pki: tuple[str, str]) -> None:
    pem, _ = pki
    config = h3.server_configuration(pem)
    assert config.certificate is not None and config.private_key is not None
    with pytest.raises(ValueError):
        h3.server_configuration(str(Path(pki[1])))  # a certificate without a key
