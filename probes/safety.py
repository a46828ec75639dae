"""Guards that keep probes inside the lab.

Two rules, checked right before a socket sends its first packet (``probes.streams``,
``probes.dns``, ``probes.quic``) and on every target a probe is handed:

- the address must be an IP literal that is not globally routable (the lab's address plan), so no
  code path can reach the internet whatever a resolver answers;
- unless it is a loopback address, the calling thread must be inside a lab host: a network
  namespace that netlab made (``/run/netns/nl-<lab>.<host>``, on the Docker host for a netns lab,
  inside the lab's container for a compose lab), or one of the DPI tests' topology (``nldpi-*``).
  Private and test-net addresses are also what the machine's own networks use, so the first rule
  alone would let a probe started by hand on the host (``python -m probes.worker``) send to
  whatever answers there. Lab namespaces have no route out of the lab, which is what makes their
  addresses safe to contact.
"""

from __future__ import annotations

import os
import threading

from netlab.names import NETNS_DIR, PREFIX, SEPARATOR, TOPOLOGY_PREFIX, lab_of
from netlab.target import Target, host_is_ip, in_address_plan, is_loopback
from probes.context import ProbeContext
from probes.errors import TargetRefused

# The network namespace of the calling thread (setns changes one thread, not the process).
_OWN_NETNS = "/proc/thread-self/ns/net"


class _Answer(threading.local):
    """Per thread: the lab host its namespace is ("" for none), once looked up. A stat of /proc per
    socket cost a worker 1.4% of its time. Probe threads do not change namespace: the helpers that
    do (netlab.backends.namespaces) enter one and end with it, so a thread's answer holds."""

    namespace: str | None = None


_answer = _Answer()


def lab_namespace() -> str | None:
    """The lab host's namespace (``nl-<lab>.<host>``, or ``nldpi-*``) the calling thread is in, or None."""
    if _answer.namespace is None:
        try:
            own = os.stat(_OWN_NETNS)
        except OSError:  # no /proc: nothing shows we are inside a lab
            return None
        _answer.namespace = _find_namespace((own.st_dev, own.st_ino))
    return _answer.namespace or None


def _find_namespace(key: tuple[int, int]) -> str:
    try:
        names = os.listdir(NETNS_DIR)
    except OSError:
        return ""
    for name in names:
        if lab_of(name) is None and not name.startswith(TOPOLOGY_PREFIX):
            continue
        try:
            st = os.stat(os.path.join(NETNS_DIR, name))
        except OSError:
            continue
        if (st.st_dev, st.st_ino) == key:
            return name
    return ""


def _refusal(address: str) -> str | None:
    """Why ``address`` (an IP literal) may not be contacted from here, or None if it may."""
    if not in_address_plan(address):
        return "globally routable address, outside the lab"
    if is_loopback(address) or lab_namespace() is not None:
        return None
    return (f"this process is not inside a lab host (a network namespace {NETNS_DIR}/{PREFIX}<lab>"
            f"{SEPARATOR}<host>), so it may contact loopback addresses only; run probes through "
            "`harness run` or `harness exec`")


def ensure_address_allowed(address: str, purpose: str) -> None:
    """Raise ``TargetRefused`` unless ``address`` is an IP literal this process may contact."""
    if not host_is_ip(address):
        # Only IP literals are ever handed to the socket layer: a name would go through the
        # host's own resolver, which may talk to the real internet.
        raise TargetRefused(f"refusing to contact {address!r} ({purpose}): not an IP address")
    why = _refusal(address)
    if why:
        raise TargetRefused(f"refusing to contact {address} ({purpose}): {why}")


def ensure_target_allowed(target: Target, ctx: ProbeContext) -> None:
    """Raise ``TargetRefused`` unless the target's host is a lab name or an IP literal this process
    may contact."""
    if host_is_ip(target.host):
        why = _refusal(target.host)
        if why:
            raise TargetRefused(f"refusing {target.url}: {target.host}: {why}")
        return
    if target.host not in ctx.lab_names:
        raise TargetRefused(f"refusing {target.url}: {target.host!r} is not a site this lab serves")
