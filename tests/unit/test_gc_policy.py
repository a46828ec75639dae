"""The lab's long-running processes tune the garbage collector (netlab.gc_policy) once imported."""

from __future__ import annotations

import json
import subprocess
import sys

from netlab import gc_policy

PROBE = ("import gc, json, sys; sys.argv = ['x']; {setup}; "
         "print(json.dumps([gc.get_threshold(), gc.get_freeze_count()]))")


def _state(setup: str) -> tuple[list[int], int]:
    out = subprocess.run([sys.executable, "-c", PROBE.format(setup=setup)], capture_output=True, text=True,
                         check=True).stdout
    threshold, frozen = json.loads(out)
    return threshold, frozen


def test_tune_freezes_what_is_imported_and_raises_the_thresholds() -> None:
    threshold, frozen = _state("from netlab import gc_policy; gc_policy.tune()")
    assert tuple(threshold) == gc_policy.THRESHOLDS
    assert frozen > 1000  # the interpreter's and netlab's objects, never scanned again

