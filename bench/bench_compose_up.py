"""How long `--backend compose` takes to bring a lab up, beside the netns backend in the same run.

    python bench/bench_compose_up.py                    # 20 ISPs, 10 sites: up and down on both backends
    python bench/bench_compose_up.py --isps 5 --repeat 3
    python bench/bench_compose_up.py --verdicts         # also run the campaign on both: same verdicts?

The scenario is bench/run.py's generated one (each ISP with a resolver rule). The lab image is
built (or found in the cache) before anything is timed. "up" is Backend.up from the call to a lab
whose every service answers, as `harness run` waits for it; "down" is until every trace is gone.
With --verdicts each round also says how many verdicts were off the oracle on each backend: under
heavy load a timing verdict (throttled) can flip on either one, and the count says which.
Needs root and a Docker Engine. Every lab it brings up is removed at the end.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from run import load, scenario_text  # noqa: E402

from harness.campaign import CampaignConfig  # noqa: E402
from harness.runner import measure_and_score  # noqa: E402
from netlab.backends import get_backend  # noqa: E402
from netlab.compile import compile_lab  # noqa: E402

LAB = "pf-bcu"  # lab names: <LAB><n|c><round>


def one_round(backend: str, scenario, name: str, out: Path | None) -> dict:  # type: ignore[no-untyped-def]
    plan = compile_lab(scenario, name)
    t0 = time.perf_counter()
    lab = get_backend(backend).up(plan)
    up = time.perf_counter() - t0
    verdicts, mismatches = None, None
    try:
        faults = lab.dead_services()
        if out is not None:
            outcome = measure_and_score(lab, scenario, out, CampaignConfig(), backend=backend)
            verdicts = outcome.verdicts if outcome.scored is not None else None
            mismatches = len(outcome.scored.score.mismatches) if outcome.scored is not None else None
    finally:
        t0 = time.perf_counter()
        lab.down()
        down = time.perf_counter() - t0
    return {"up": up, "down": down, "hosts": len(plan.hosts), "faults": [str(f) for f in faults],
            "verdicts": verdicts, "mismatches": mismatches}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--isps", type=int, default=20)
    ap.add_argument("--sites", type=int, default=10)
    ap.add_argument("--repeat", type=int, default=1, help="rounds per backend (the median is printed)")
    ap.add_argument("--verdicts", action="store_true", help="run the campaign on both and compare verdicts")
    ap.add_argument("--json", type=Path, help="write the figures here too")
    args = ap.parse_args(argv)

    from netlab.deploy.images import build_image

    build_image()  # a cache hit after the first build; never part of a time below
    tmp = Path(tempfile.mkdtemp(prefix="bench-compose-up-"))
    scenario = load(scenario_text(LAB, sites=args.sites, isps=args.isps), tmp, LAB)
    runs: dict[str, list[dict]] = {"netns": [], "compose": []}
    for r in range(args.repeat):
        for backend in runs:  # alternating, so both see the machine in the same state
            out = tmp / f"{backend}{r}" if args.verdicts else None
            res = one_round(backend, scenario, f"{LAB}{backend[0]}{r}", out)
            runs[backend].append(res)
            scored = "" if res["mismatches"] is None else f"  {res['mismatches']} verdict(s) off the oracle"
            print(f"round {r + 1}: {backend:7s} up {res['up']:6.2f}s  down {res['down']:5.2f}s  "
                  f"({res['hosts']} hosts){scored}{'  FAULTS: ' + '; '.join(res['faults']) if res['faults'] else ''}",
                  flush=True)
    up = {b: statistics.median(x["up"] for x in rs) for b, rs in runs.items()}
    down = {b: statistics.median(x["down"] for x in rs) for b, rs in runs.items()}
    print(f"\n{args.isps} ISPs, {args.sites} sites, median of {args.repeat}: "
          f"compose up {up['compose']:.2f}s (down {down['compose']:.2f}s), "
          f"baseline netns up {up['netns']:.2f}s (down {down['netns']:.2f}s); "
          f"compose/netns {up['compose'] / up['netns']:.1f}x")
    same = None
    if args.verdicts:
        pairs = [(n["verdicts"], c["verdicts"]) for n, c in zip(runs["netns"], runs["compose"], strict=True)]
        same = all(n is not None and n == c for n, c in pairs)
        print(f"verdicts: {len(pairs[0][0] or {})} per run, compose {'==' if same else '!='} netns in every round")
        for r, (n, c) in enumerate(pairs):
            differ = sorted(k for k in (n or {}).keys() | (c or {}).keys() if (n or {}).get(k) != (c or {}).get(k))
            for k in differ[:10]:
                print(f"  round {r + 1} {k[0]} {k[1]}: netns {(n or {}).get(k)}, compose {(c or {}).get(k)}")
    if args.json:
        args.json.write_text(json.dumps({"isps": args.isps, "sites": args.sites, "repeat": args.repeat,
                                         "up": up, "down": down, "same_verdicts": same,
                                         "rounds": {b: [{k: v for k, v in x.items() if k != "verdicts"} for x in rs]
                                                    for b, rs in runs.items()}}, indent=1))
    faults = any(x["faults"] for rs in runs.values() for x in rs)
    return 1 if faults or same is False else 0


if __name__ == "__main__":
    raise SystemExit(main())
