"""What a probe type measures, and the keys its measurements owe the verdict logic.

The oracle (netlab.oracle) derives each probe type's expected verdicts from its ``Capabilities``:
censorship at a stage the probe never reaches is invisible to it (a dns-only probe expects ``ok``
where a firewall resets TCP), and only the probes that ask the public resolver see on-path DNS
interference. The probe contract (``PROBE_CONTRACT_VERSION``, docs/writing-a-probe.md) names the
test keys the analysis reads; a measurement without one is refused by the worker, naming the key,
instead of turning into a wrong verdict.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from netlab.errors import UsageError
from netlab.target import Target

#: The stages of a fetch, in data-path order (x_failed_stage takes these values).
STAGES = ("dns", "tcp", "tls", "http")

#: Redirects a fetch follows before it fails: Go's net/http default, which OONI keeps (probes.redirects
#: follows at most this many; the oracle predicts with the same number).
MAX_REDIRECTS = 10
#: The probes' default cap, in seconds, on one whole HTTP exchange (ProbeContext.http_total_timeout,
#: a scenario's probe setting of that name overrides it; the oracle knows which fetches it cuts).
HTTP_TOTAL_TIMEOUT = 60.0
#: The probes' default TCP connect timeout, in seconds (ProbeContext.connect_timeout; the oracle knows
#: which shaping delays no handshake survives).
CONNECT_TIMEOUT = 2.0
#: The quic probe's default handshake timeout (ProbeContext.quic_timeout; OONI's simplequicping waits 3 s).
QUIC_TIMEOUT = 3.0

#: Version of the keys a probe's test keys must carry (docs/writing-a-probe.md, "The contract").
PROBE_CONTRACT_VERSION = 1

# Keys the verdict logic (harness.analysis) reads, by what the probe measures. Every probe resolves
# the target (the oracle's first stage), so the DNS keys are always due.
CONTRACT_KEYS: dict[str, tuple[str, ...]] = {
    "always": ("queries", "x_resolved", "x_failed_stage", "failure"),
    "http": ("requests", "x_status_code", "x_title", "x_body_length"),
    "throughput": ("x_body_seconds",),
}


class ContractError(UsageError):
    """A probe's measurement lacks keys of the probe contract, or the probe declares no capabilities."""


@dataclass(frozen=True, slots=True)
class Capabilities:
    """Declared by every probe type as its class attribute ``capabilities``."""

    #: The stages the probe reaches, in order from "dns": ("dns",), ("dns", "tcp"), ... The TLS stage
    #: applies to https targets only; an http target goes from tcp straight to http.
    stages: tuple[str, ...]
    #: Also asks the lab's public resolver directly (engine "udp"): sees on-path DNS injection and drops.
    public_dns: bool = False
    #: Follows redirects, each hop measured from DNS up: sees censorship of the sites they lead to.
    redirects: bool = False
    #: Times the body download (x_body_seconds): sees throttling.
    throughput: bool = False
    #: Target schemes it measures; a target of another scheme is not measured (nor expected).
    schemes: tuple[str, ...] = ("http", "https")
    #: Target ports it measures; None: any.
    ports: tuple[int, ...] | None = None
    #: Fetches over QUIC (HTTP/3 on UDP) instead of TCP: its "tcp" and "tls" stages are the QUIC
    #: handshake, which UDP rules, QUIC rules of the middlebox and a site's `quic: false` decide.
    quic: bool = False

    def __post_init__(self) -> None:
        if not self.stages or self.stages != STAGES[:len(self.stages)]:
            raise ContractError(f"capabilities: stages {self.stages!r} must be a prefix of {STAGES!r}")
        if (self.redirects or self.throughput) and "http" not in self.stages:
            raise ContractError("capabilities: redirects and throughput need the http stage")

    def measures(self, target: Target) -> bool:
        """Is ``target`` within what the probe measures (scheme and port)?"""
        return target.scheme in self.schemes and (self.ports is None or target.port in self.ports)

    def reaches(self, stage: str, target: Target) -> bool:
        """Does the probe get as far as ``stage`` on ``target`` (when nothing stops it earlier)?"""
        if stage == "tls" and not target.is_https:
            return False
        return stage in self.stages

    def sends_data(self, target: Target) -> bool:
        """Does the probe send application data on its TCP flow to ``target`` (a ClientHello or a
        request)? Only then can a DPI rule, or a residual block, act on the flow."""
        return self.reaches("tls" if target.is_https else "http", target)

    @property
    def fetches_page(self) -> bool:
        return "http" in self.stages

    def meet(self, other: Capabilities) -> Capabilities:
        """What both see: the shorter stage list, each ability only where both have it."""
        stages = self.stages if len(self.stages) <= len(other.stages) else other.stages
        ports = self.ports if other.ports is None else other.ports if self.ports is None else \
            tuple(p for p in self.ports if p in other.ports)
        return Capabilities(stages=stages, public_dns=self.public_dns and other.public_dns,
                            redirects=self.redirects and other.redirects,
                            throughput=self.throughput and other.throughput,
                            schemes=tuple(s for s in self.schemes if s in other.schemes), ports=ports,
                            quic=self.quic and other.quic)

    def blind_spots(self) -> list[str]:
        """What this probe cannot see, in words (harness probes list, docs)."""
        out = []
        if self.quic:
            out.append("censorship of TCP and TLS over TCP (it fetches over QUIC, HTTP/3 on UDP, only)")
        deepest = self.stages[-1]
        later = STAGES[STAGES.index(deepest) + 1:]
        if later:
            out.append(f"censorship at the {', '.join(later)} stage(s) (it stops after {deepest})")
        if not self.public_dns:
            out.append("on-path DNS interference with the public resolver (it asks the ISP's resolver only)")
        if self.fetches_page and not self.redirects:
            out.append("censorship of the sites a redirect leads to")
        if self.fetches_page and not self.throughput:
            out.append("throttling")
        return out

    def required_keys(self) -> tuple[str, ...]:
        """The test keys of the probe contract this probe's measurements must carry."""
        keys = list(CONTRACT_KEYS["always"])
        if self.fetches_page:
            keys += CONTRACT_KEYS["http"]
        if self.throughput:
            keys += CONTRACT_KEYS["throughput"]
        return tuple(keys)

    def missing_keys(self, test_keys: dict[str, Any]) -> list[str]:
        return [k for k in self.required_keys() if k not in test_keys]

    def to_json(self) -> dict[str, Any]:
        return {"contract": PROBE_CONTRACT_VERSION, "stages": list(self.stages), "public_dns": self.public_dns,
                "redirects": self.redirects, "throughput": self.throughput, "schemes": list(self.schemes),
                "ports": list(self.ports) if self.ports is not None else None, "quic": self.quic}

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> Capabilities:
        try:
            return cls(stages=tuple(doc["stages"]), public_dns=bool(doc.get("public_dns")),
                       redirects=bool(doc.get("redirects")), throughput=bool(doc.get("throughput")),
                       schemes=tuple(doc.get("schemes") or ("http", "https")),
                       ports=tuple(doc["ports"]) if doc.get("ports") is not None else None,
                       quic=bool(doc.get("quic")))
        except (KeyError, TypeError) as exc:
            raise ContractError(f"probe capabilities {doc!r} are not valid ({exc})") from None


#: The web probe's: every stage, both resolvers, redirects and throughput. What the oracle assumed
#: for every probe before probes declared capabilities; also what foreign web_connectivity
#: measurements (OONI's own probe) are scored with.
WEB = Capabilities(stages=STAGES, public_dns=True, redirects=True, throughput=True)


def capabilities_of(probe: Any) -> Capabilities:
    """A probe class's declared capabilities, or ContractError naming the probe."""
    caps = getattr(probe, "capabilities", None)
    if not isinstance(caps, Capabilities):
        name = getattr(probe, "name", None) or getattr(probe, "__name__", repr(probe))
        raise ContractError(f"probe {name!r} declares no capabilities: probe contract v{PROBE_CONTRACT_VERSION} "
                            "wants a class attribute `capabilities = Capabilities(stages=(...), ...)` "
                            "(netlab.capabilities; docs/writing-a-probe.md)")
    return caps
