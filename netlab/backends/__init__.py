"""Backends realise a LabPlan: ``netns`` (Linux network namespaces) and ``compose`` (Docker)."""

from __future__ import annotations

from netlab.backends.base import Backend, LabState, RunningLab
from netlab.errors import LabError

BACKENDS = ("netns", "compose")


def get_backend(name: str) -> Backend:
    if name == "netns":
        from netlab.backends.netns import NetnsBackend

        return NetnsBackend()
    if name == "compose":
        try:
            from netlab.backends.compose import ComposeBackend
        except ImportError as exc:
            raise LabError(f"the compose backend is not available: {exc}") from None
        return ComposeBackend()
    raise LabError(f"unknown backend {name!r}; expected one of: {', '.join(BACKENDS)}")


__all__ = ["BACKENDS", "Backend", "LabState", "RunningLab", "get_backend"]
