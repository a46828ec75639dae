"""Probing the running kernel for what the compiler needs to know (netlab.hostcaps), once per
process: backends hand the result to compile_lab, which itself never touches the system."""

from __future__ import annotations

import functools
import os
import subprocess

from netlab.hostcaps import HostCapabilities

__all__ = ["netem_available", "probe_host"]


@functools.cache
def probe_host() -> HostCapabilities:
    return HostCapabilities(netem=netem_available())


@functools.cache
def netem_available() -> bool:
    """Whether this kernel has the netem qdisc, tried on a dummy link in a throwaway netns."""
    ns = f"nlprobe-netem-{os.getpid()}"
    try:
        subprocess.run(["ip", "netns", "add", ns], check=True, capture_output=True)
    except (OSError, subprocess.CalledProcessError):
        return False
    try:
        r = subprocess.run(["ip", "-n", ns, "link", "add", "d0", "type", "dummy"], capture_output=True)
        if r.returncode:
            return False
        netem = subprocess.run(
            ["tc", "-n", ns, "qdisc", "add", "dev", "d0", "root", "netem", "delay", "1ms"],
            capture_output=True, text=True,
        )
        return netem.returncode == 0
    finally:
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)
