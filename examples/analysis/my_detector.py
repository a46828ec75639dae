"""An analysis program `harness score RESULTS --analysis CMD` can score (docs/scoring-detectors.md).

Wrap your own detection function in these few lines: measurements (OONI JSON) in, one JSON line
per measurement out, keyed by its measurement_uid. Run it yourself on a results folder with

    harness score results/demo --analysis "python3 examples/analysis/my_detector.py"

and the harness scores every call against the lab's ground truth (precision and recall per
technique, every mismatch with its rule and measurement).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable
from typing import Any


def detect(m: dict[str, Any]) -> dict[str, Any]:
    """Stand-in for your logic: OONI's own blocking/accessible keys, as the lab wrote them. Return
    {"verdict": "dns.nxdomain"} (a lab verdict) or {"blocking": ..., "accessible": ...} (OONI's)."""
    keys = m["test_keys"]
    return {"blocking": keys.get("blocking"), "accessible": keys.get("accessible")}


def main() -> int:
    if len(sys.argv) > 1:  # a path (`--analysis "... {}"`), else stdin
        with open(sys.argv[1], encoding="utf-8") as source:
            return judge(source)
    return judge(sys.stdin)


def judge(lines: Iterable[str]) -> int:
    for line in lines:
        if line.strip():
            m = json.loads(line)
            print(json.dumps({"measurement_uid": m["measurement_uid"], **detect(m)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
