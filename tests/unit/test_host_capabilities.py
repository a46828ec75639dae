"""compile_lab is pure: what the machine can do (netem) is an argument, probed by the backend."""

from __future__ import annotations

import subprocess
from unittest import mock

from netlab.backends.base import Backend
from netlab.compile import compile_lab
from netlab.hostcaps import HostCapabilities
from netlab.loader import parse_scenario

DELAY = """
version: 1
name: delay
internet:
  sites: [{name: slow.test}]
isps:
  - name: laggy
    shaping:
      - match: {site: slow.test}
        delay: 100ms
        loss: 1%
targets: [https://slow.test/]
"""


def _tc_lines(plan) -> list[str]:
    return [" ".join(cmd) for h in plan.hosts.values() for cmd in h.setup if cmd and cmd[0] == "tc"]


def test_compile_runs_no_program():
    scenario = parse_scenario(DELAY, source="delay.yaml")
    with mock.patch.object(subprocess, "run", side_effect=AssertionError("compile_lab ran a program")), \
            mock.patch.object(subprocess, "Popen", side_effect=AssertionError("compile_lab ran a program")):
        compile_lab(scenario, "pure", host=HostCapabilities(netem=True))
        compile_lab(scenario, "pure")


def test_netem_comes_from_the_argument():
    scenario = parse_scenario(DELAY, source="delay.yaml")
    with_netem = compile_lab(scenario, "caps", host=HostCapabilities(netem=True))
    without = compile_lab(scenario, "caps")  # default: assume nothing
    assert any(" netem " in line for line in _tc_lines(with_netem))
    assert not any(" netem " in line for line in _tc_lines(without))
    assert any("shaper" in s.name for h in without.hosts.values() for s in h.services)
    assert compile_lab(scenario, "caps", host=HostCapabilities()).files.keys() == without.files.keys()


def test_backends_probe_once_per_process():
    from netlab.backends import kernel

    with mock.patch.object(kernel, "netem_available", return_value=True) as probe:
        kernel.probe_host.cache_clear()
        try:
            assert Backend.host_capabilities(mock.Mock()) == HostCapabilities(netem=True)
            assert Backend.host_capabilities(mock.Mock()) == HostCapabilities(netem=True)
            assert probe.call_count == 1
        finally:
            kernel.probe_host.cache_clear()
