"""ProbeContext serialisation, probe discovery and the target guards."""

from __future__ import annotations

import json

import pytest

import probes.safety
from netlab.target import Target
from probes.base import BUILTIN_PROBES, Probe, load_probe, load_probes
from probes.context import ProbeContext
from probes.errors import ProbeError, TargetRefused
from probes.safety import ensure_address_allowed, ensure_target_allowed, lab_namespace


def context(**overrides: object) -> ProbeContext:
    values: dict[str, object] = {
        "vantage": "isp-a",
        "resolver": "10.1.0.53",
        "public_resolver": "198.18.0.53",
        "ca_file": "/lab/ca.pem",
        "lab_names": ["News.Test.", "shop.test"],
    }
    values.update(overrides)
    return ProbeContext(**values)  # type: ignore[arg-type]


def test_context_defaults() -> None:
    ctx = context()
    assert (ctx.dns_timeout, ctx.connect_timeout, ctx.tls_timeout, ctx.http_timeout) == (2.0, 2.0, 3.0, 5.0)
    assert ctx.dns_window == 0.3
    assert ctx.body_limit == 1024 * 1024
    assert ctx.dns_port == 53
    assert ctx.lab_names == frozenset({"news.test", "shop.test"})


def test_context_json_round_trip() -> None:
    ctx = context(probe_asn=64500, dns_port=5353)
    data = json.loads(json.dumps(ctx.to_dict()))
    assert data["lab_names"] == ["news.test", "shop.test"]
    assert ProbeContext.from_dict(data) == ctx


def test_context_rejects_unknown_fields() -> None:
    data = context().to_dict() | {"resolvr": "10.0.0.1"}
    with pytest.raises(ValueError, match="resolvr"):
        ProbeContext.from_dict(data)


def test_builtin_probes_are_discovered() -> None:
    probes = load_probes()
    assert set(BUILTIN_PROBES) <= set(probes)
    for name in BUILTIN_PROBES:
        assert issubclass(probes[name], Probe)
        assert probes[name].name == name
    assert probes["web"].test_name == "web_connectivity"
    assert probes["dns"].test_name == "dnscheck"
    assert {probes[n].test_name for n in ("tcp", "tls", "http")} == {"urlgetter"}


def test_load_probe() -> None:
    assert load_probe("dns").name == "dns"
    with pytest.raises(KeyError, match="unknown probe"):
        load_probe("nope")


@pytest.fixture
def inside_a_lab_host(monkeypatch: pytest.MonkeyPatch) -> None:
    """As if this thread ran in a lab host's namespace (tests/lab checks the real one)."""
    monkeypatch.setattr(probes.safety, "lab_namespace", lambda: "nl-t.isp-a")


def test_target_guard(inside_a_lab_host: None) -> None:
    ctx = context()
    ensure_target_allowed(Target.parse("https://news.test/"), ctx)
    ensure_target_allowed(Target.parse("http://198.18.0.10/"), ctx)
    ensure_target_allowed(Target.parse("http://10.0.0.1/"), ctx)
    with pytest.raises(TargetRefused, match="not a site this lab serves"):
        ensure_target_allowed(Target.parse("https://www.news.test/"), ctx)
    with pytest.raises(TargetRefused, match="globally routable"):
        ensure_target_allowed(Target.parse("https://8.8.8.8/"), ctx)
    assert issubclass(TargetRefused, ProbeError)


def test_address_guard(inside_a_lab_host: None) -> None:
    for allowed in ("127.0.0.1", "10.1.2.3", "198.18.5.5", "192.168.1.1", "fd00::1"):
        ensure_address_allowed(allowed, "test")
    for refused in ("8.8.8.8", "93.184.216.34", "2001:4860:4860::8888", "224.0.0.1", "0.0.0.0"):
        with pytest.raises(TargetRefused):
            ensure_address_allowed(refused, "test")
    with pytest.raises(TargetRefused, match="not an IP address"):
        ensure_address_allowed("news.test", "test")


def test_outside_a_lab_host_only_loopback_may_be_contacted() -> None:
    # This test runs in the machine's own namespace, whose private and test-net addresses may
    # answer: a probe started here by hand must not send to them.
    assert lab_namespace() is None
    for allowed in ("127.0.0.1", "127.8.0.1", "::1"):
        ensure_address_allowed(allowed, "test")
    for refused in ("198.51.100.7", "10.1.2.3", "192.168.1.1", "fd00::1"):
        with pytest.raises(TargetRefused, match="not inside a lab host"):
            ensure_address_allowed(refused, "test")
    with pytest.raises(TargetRefused, match="not inside a lab host"):
        ensure_target_allowed(Target.parse("https://198.51.100.7/"), context())
    ensure_target_allowed(Target.parse("http://127.0.0.1:8080/"), context())
    with pytest.raises(TargetRefused, match="globally routable"):
        ensure_address_allowed("8.8.8.8", "test")
