"""The probe interface and probe discovery.

A probe type is a class with a ``name``, a ``version``, the OONI ``test_name`` its measurements
carry, its ``capabilities`` (what it measures: netlab.capabilities; the oracle derives its
expected verdicts from them) and one ``async run(target, ctx)`` that returns OONI-style test keys
with at least the keys of the probe contract (``Capabilities.required_keys``). Probe types are
found through the ``harness.probes`` entry-point group, so another package can add one without
editing this repository.
"""

from __future__ import annotations

import importlib
import logging
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any, ClassVar

from netlab.capabilities import Capabilities, ContractError, capabilities_of

if TYPE_CHECKING:
    from netlab.target import Target
    from probes.context import ProbeContext

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "harness.probes"

#: The probes this package ships, used when the package is not installed (no entry points).
BUILTIN_PROBES = {
    "dns": "probes.dns:DnsProbe",
    "tcp": "probes.tcp:TcpProbe",
    "tls": "probes.tls:TlsProbe",
    "http": "probes.http:HttpProbe",
    "web": "probes.web:WebProbe",
    "quic": "probes.quic:QuicProbe",
}


class Probe:
    """Base class of probe types.

    ``run`` must not let exceptions escape except ``probes.errors.TargetRefused``: network
    failures are results and go into the ``failure`` fields of the test keys.
    """

    name: ClassVar[str] = ""
    version: ClassVar[str] = "0.0.0"
    #: OONI test name of the measurements ("web_connectivity", "dnscheck", "urlgetter", ...).
    test_name: ClassVar[str] = "urlgetter"
    #: What the probe measures (stages, resolvers, redirects, throughput, schemes, ports). Required:
    #: a probe without it is refused (netlab.capabilities.capabilities_of).
    capabilities: ClassVar[Capabilities | None] = None

    async def run(self, target: Target, ctx: ProbeContext) -> dict[str, Any]:
        raise NotImplementedError


def probe_specs() -> dict[str, str]:
    """name -> "module:Class" for every known probe; installed entry points win over built-ins."""
    specs = dict(BUILTIN_PROBES)
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        specs[ep.name] = ep.value
    return specs


def import_probe(spec: str) -> type[Probe]:
    module_name, _, attr = spec.partition(":")
    obj: Any = importlib.import_module(module_name)
    for part in attr.split("."):
        obj = getattr(obj, part)
    if not (isinstance(obj, type) and callable(getattr(obj, "run", None))):
        raise TypeError(f"{spec} is not a probe class (needs an async run(target, ctx))")
    return obj


def load_probe(name: str) -> type[Probe]:
    """Import just one probe type (the worker uses this to keep its start-up cheap)."""
    specs = probe_specs()
    if name not in specs:
        raise KeyError(f"unknown probe {name!r}; known: {', '.join(sorted(specs))}")
    return import_probe(specs[name])


def installed_capabilities(name: str) -> Capabilities | None:
    """The capabilities the installed probe type ``name`` declares; None when it is not installed,
    does not import or declares none (its jobs then fail in the worker, which says why)."""
    try:
        return capabilities_of(load_probe(name))
    except (KeyError, ImportError, TypeError, ContractError):
        return None


def load_probes() -> dict[str, type[Probe]]:
    """Every available probe type by name. A plugin that fails to import is logged and skipped."""
    probes: dict[str, type[Probe]] = {}
    for name, spec in probe_specs().items():
        try:
            probes[name] = import_probe(spec)
        except Exception as exc:
            if name in BUILTIN_PROBES and spec == BUILTIN_PROBES[name]:
                raise  # our own probes must always load
            log.warning("skipping probe %r (%s): %s", name, spec, exc)
    return probes
