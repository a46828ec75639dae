"""Verdict accuracy of the demo over N consecutive runs (each its own lab): python bench/demo_repeat.py 10"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from harness.runner import run_scenario


def main() -> int:
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 10
    scenario = Path(__file__).resolve().parents[1] / "scenarios" / "demo.yaml"
    total = correct = 0
    first = None
    flakes = 0
    with tempfile.TemporaryDirectory() as d:
        for i in range(runs):
            t0 = time.perf_counter()
            o = run_scenario(scenario, out=Path(d) / str(i), name=f"rep{i}")
            assert o.scored is not None
            rows = o.scored.score.rows
            total += len(rows)
            correct += sum(r.matches for r in rows)
            first = first or o.verdicts
            flakes += sum(1 for k, v in o.verdicts.items() if first.get(k) != v)
            print(f"run {i + 1}: {sum(r.matches for r in rows)}/{len(rows)} match, up {o.up_seconds:.2f}s, "
                  f"campaign {o.campaign.seconds:.2f}s, down {o.down_seconds:.2f}s, "
                  f"total {time.perf_counter() - t0:.2f}s", flush=True)
    print(f"accuracy over {runs} runs: {correct}/{total} = {correct / total:.1%}; "
          f"verdicts differing from run 1: {flakes}")
    return 0 if correct == total and not flakes else 1


if __name__ == "__main__":
    raise SystemExit(main())
