"""The garbage collector's settings for the lab's long-running Python processes.

A probe worker, a lab service or ``harness run`` allocates thousands of small dicts and lists per
measurement or connection, nearly all freed by reference counting, few ever in a cycle. With the
interpreter's default thresholds (a young collection every 700 allocations) the collector runs
hundreds of times a second and, each time a measurement's objects live on through its DNS window,
rescans them. In a probe worker that was about 5% of its CPU (the median of paired rounds, 1000
targets each, bench-style, tuned against untuned on the same lab).

``tune()`` freezes what exists when it is called (the imported modules: never garbage, never
scanned again) and makes young collections rarer. Cycles are still collected, a little later.
"""

from __future__ import annotations

import gc

#: Container allocations between young collections (default 700), and collections of the younger
#: generation between collections of the next (default 10 and 10).
THRESHOLDS = (50_000, 20, 20)


def tune() -> None:
    """Call once the process has imported what it runs, before its main loop."""
    gc.freeze()
    gc.set_threshold(*THRESHOLDS)
