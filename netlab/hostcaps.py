"""What the machine a lab runs on can do, as far as the compiler cares: an input of compile_lab,
probed once by the backend (netlab.backends.kernel), so compiling stays pure and testable."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["HostCapabilities"]


@dataclass(frozen=True)
class HostCapabilities:
    """``netem``: the kernel has the netem qdisc (shaping's delay and loss as tc; without it the
    shaper middlebox emulates them). The default assumes nothing: every plan it gives runs anywhere."""

    netem: bool = False
