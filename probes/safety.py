"""Guards that keep probes inside the lab.

Every socket the probes open goes through ``ensure_address_allowed`` right before it sends its
first packet (see ``probes.streams`` and ``probes.dns``), so no code path can reach a globally
routable address, whatever a resolver answers.
"""

from __future__ import annotations

from netlab.target import Target, host_is_ip, in_address_plan
from probes.context import ProbeContext
from probes.errors import TargetRefused


def ensure_address_allowed(address: str, purpose: str) -> None:
    """Raise ``TargetRefused`` unless ``address`` is an IP literal inside the lab's address plan."""
    if not host_is_ip(address):
        # Only IP literals are ever handed to the socket layer: a name would go through the
        # host's own resolver, which may talk to the real internet.
        raise TargetRefused(f"refusing to contact {address!r} ({purpose}): not an IP address")
    if not in_address_plan(address):
        raise TargetRefused(
            f"refusing to contact {address} ({purpose}): globally routable address, outside the lab"
        )


def ensure_target_allowed(target: Target, ctx: ProbeContext) -> None:
    """Raise ``TargetRefused`` unless the target's host is a lab name or an in-plan IP literal."""
    if host_is_ip(target.host):
        if not in_address_plan(target.host):
            raise TargetRefused(
                f"refusing {target.url}: {target.host} is a globally routable address, outside the lab"
            )
        return
    if target.host not in ctx.lab_names:
        raise TargetRefused(f"refusing {target.url}: {target.host!r} is not a site this lab serves")
