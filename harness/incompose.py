"""The two jobs of a `docker compose up` run that live outside the lab hosts.

``python3 -m harness.incompose lab SCENARIO --lab NAME --lab-dir /lab BRIDGE...``: compile the
scenario into the lab folder (configs, certificates, hosts.json, each vantage's job file), open
the lab bridges within themselves (netlab.services.fabric) and hold them until stopped.
``python3 -m harness.incompose score SCENARIO --lab-dir /lab --results /results``: wait for every
vantage's measurements, then write the results folder and print the verdict table and score.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from harness.campaign import DEFAULT_CONCURRENCY, parse_result, tag_measurement, vantage_context
from harness.report import print_report
from harness.results import score_results, write_run_info, write_verdicts
from netlab.backends.base import write_lab_files
from netlab.compile import compile_lab
from netlab.loader import load_scenario
from netlab.oracle import has_residual, residual_waves
from netlab.services import fabric

WAIT_SECONDS = 900.0


def lab(args: argparse.Namespace) -> int:
    scenario = load_scenario(args.scenario)
    plan = compile_lab(scenario, args.lab)
    lab_dir = Path(args.lab_dir)
    write_lab_files(plan, lab_dir, str(lab_dir))
    (lab_dir / "jobs").mkdir()
    for name, v in plan.vantages.items():
        isp = next((i for i in scenario.isps if i.name == name), None)
        ordered = [t for wave in residual_waves(scenario.targets, plan.site_addresses) for t in wave]
        # Residual blocking depends on which flow to a server comes first: measure one at a time.
        concurrency = 1 if isp is not None and has_residual(isp) else DEFAULT_CONCURRENCY
        header = {"context": vantage_context(v.to_dict(), scenario, f"{lab_dir}/{plan.ca_file}", {}),
                  "concurrency": concurrency}
        lines = [json.dumps(header)] + [json.dumps({"id": i, "probe": "web", "url": t.url})
                                        for i, t in enumerate(ordered)]
        (lab_dir / "jobs" / f"{name}.jsonl").write_text("\n".join(lines) + "\n")
    (lab_dir / "run-info.json").write_text(json.dumps({
        "lab": plan.lab, "vantages": list(plan.vantages),
        "site_addresses": {k: str(a) for k, a in plan.site_addresses.items()}}))
    return fabric.main(["--lab", args.lab, "--lab-dir", str(lab_dir), *args.bridges])


def score(args: argparse.Namespace) -> int:
    scenario = load_scenario(args.scenario)
    lab_dir, out = Path(args.lab_dir), Path(args.results)
    deadline = time.monotonic() + WAIT_SECONDS
    while not (lab_dir / "run-info.json").exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    info = json.loads((lab_dir / "run-info.json").read_text())
    print(f"score: waiting for the measurements of {', '.join(info['vantages'])}", flush=True)
    while not all((lab_dir / "done" / v).exists() for v in info["vantages"]):
        faults = list((lab_dir / "faults").glob("*")) if (lab_dir / "faults").exists() else []
        if faults or time.monotonic() > deadline:
            print(f"lab fault: {', '.join(f.name for f in faults) or 'timed out'}", flush=True)
            return 3
        time.sleep(0.2)  # a poll interval with a deadline
    out.mkdir(parents=True, exist_ok=True)
    count = 0
    with open(out / "measurements.jsonl", "wb") as sink:
        for vantage in info["vantages"]:
            for raw in (lab_dir / "out" / f"{vantage}.jsonl").read_bytes().splitlines():
                _, measurement = parse_result(raw)
                if measurement is not None:
                    sink.write(tag_measurement(vantage, measurement))
                    count += 1
    write_run_info(out, scenario, {"lab": info["lab"], "backend": "docker compose", "scenario_name": scenario.name,
                                   "probe": "web", "shard": [1, 1], "vantages": info["vantages"],
                                   "site_addresses": info["site_addresses"], "measurements": count})
    scored = score_results([out])
    write_verdicts(out, scored)
    from harness.cli.common import console

    con = console()
    print_report(con, scored)
    with open(out / "verdicts.txt", "w") as f:
        from rich.console import Console

        print_report(Console(file=f, width=160, color_system=None), scored)
    return 1 if scored.score.mismatches else 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="job", required=True)
    p = sub.add_parser("lab")
    p.add_argument("scenario")
    p.add_argument("--lab", required=True)
    p.add_argument("--lab-dir", default="/lab")
    p.add_argument("bridges", nargs="+")
    p.set_defaults(func=lab)
    p = sub.add_parser("score")
    p.add_argument("scenario")
    p.add_argument("--lab-dir", default="/lab")
    p.add_argument("--results", default="/results")
    p.set_defaults(func=score)
    args = ap.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
