"""One exception tree per package (issue 14): whatever netlab, probes or harness defines as an
exception derives from that package's base (NetlabError, ProbeError, HarnessError), as dnspython's
exceptions derive from DNSException."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import pytest

from harness.errors import HarnessError
from netlab.errors import NetlabError
from probes.errors import ProbeError

BASES = {"netlab": NetlabError, "probes": ProbeError, "harness": HarnessError}
# Entry points run as programs or need optional dependencies that a unit run may not have.
SKIP = ("harness.__main__", "harness.pytest_plugin", "netlab.backends.compose")


def _modules(package: str):
    pkg = importlib.import_module(package)
    for info in pkgutil.walk_packages(pkg.__path__, f"{package}."):
        if info.name in SKIP or info.name.endswith("__main__"):
            continue
        try:
            yield importlib.import_module(info.name)
        except ImportError:  # a service module needing a library only a lab host has
            continue


@pytest.mark.parametrize("package", sorted(BASES))
def test_every_exception_under_its_package_base(package):
    base = BASES[package]
    strays = []
    for module in _modules(package):
        for name, cls in inspect.getmembers(module, inspect.isclass):
            if cls.__module__ != module.__name__ or not issubclass(cls, BaseException):
                continue
            if not issubclass(cls, base):
                strays.append(f"{module.__name__}.{name}")
    assert not strays, f"not under {base.__name__}: {strays}"


def test_harness_errors_keep_their_exit_status_classes():
    from harness.errors import AnalysisCrashed, CallError, ResultsError
    from netlab.errors import LabError, UsageError

    assert issubclass(CallError, UsageError) and issubclass(AnalysisCrashed, LabError)
    assert issubclass(ResultsError, NetlabError)
    assert issubclass(HarnessError, NetlabError)
