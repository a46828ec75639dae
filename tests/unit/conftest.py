"""Fixtures shared by the unit tests (defined in test_probes_support): a guard that lets tests
talk to 127.0.0.1 only, loopback DNS servers and a lab-like PKI, by parameter name."""

from test_probes_support import dns_server, loopback_only, pki

__all__ = ["dns_server", "loopback_only", "pki"]
