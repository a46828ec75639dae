"""Exceptions of the probes package."""

from __future__ import annotations


class ProbeError(Exception):
    """A probe cannot run at all (as opposed to a network failure, which is a measurement result)."""


class TargetRefused(ProbeError):
    """The probe would have to contact something outside the lab.

    Raised for a target whose name the lab does not serve, or whose address is outside the
    address plan, and for any address a probe is about to send a packet to that is not in the
    address plan. This is the probes' half of the lab's safety rule: never send a packet to a
    globally routable address.
    """


class DnsResponseError(Exception):
    """A DNS response arrived but gave no usable IPv4 address.

    ``rcode`` is the response code (0 = NOERROR, in which case the answer had no A record).
    ``failures.failure_string`` turns it into OONI's ``dns_*`` failure strings.
    """

    def __init__(self, rcode: int, hostname: str = "") -> None:
        self.rcode = rcode
        self.hostname = hostname
        super().__init__(f"DNS response for {hostname or '?'} has rcode {rcode} and no A answer")
