"""Exceptions of the probes package: every one derives from ``ProbeError`` (as dnspython's from
DNSException), so ``except ProbeError`` catches whatever the package raises and nothing else."""

from __future__ import annotations


class ProbeError(Exception):
    """Base of the probes package's exceptions. A network failure is never one of them: it is a
    measurement result (probes.failures turns exceptions into OONI failure strings)."""


class TargetRefused(ProbeError):
    """The probe cannot run at all: it would have to contact something outside the lab.

    Raised for a target whose name the lab does not serve, or whose address is outside the
    address plan, and for any address a probe is about to send a packet to that is not in the
    address plan. This is the probes' half of the lab's safety rule: never send a packet to a
    globally routable address.
    """


class DnsResponseError(ProbeError):
    """A DNS response arrived but gave no usable IPv4 address.

    ``rcode`` is the response code (0 = NOERROR, in which case the answer had no A record).
    ``failures.failure_string`` turns it into OONI's ``dns_*`` failure strings.
    """

    def __init__(self, rcode: int, hostname: str = "") -> None:
        self.rcode = rcode
        self.hostname = hostname
        super().__init__(f"DNS response for {hostname or '?'} has rcode {rcode} and no A answer")


class BadJob(ProbeError):
    """A worker's job line itself is wrong (not a probe failure)."""


class QuicFailure(ProbeError):
    """A QUIC connection ended with an OONI failure string already known."""

    def __init__(self, failure: str) -> None:
        super().__init__(failure)
        self.failure = failure
