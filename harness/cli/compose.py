"""harness compose: write the Compose file of a scenario's lab."""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.console import Console

from harness.cli import verb_help
from harness.cli.run import check_probe
from harness.compose_file import compose_yaml
from netlab.backends.kernel import probe_host
from netlab.compile import compile_lab
from netlab.loader import load_scenario
from netlab.names import check_lab_name


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("compose", help=verb_help("compose"),
                       description="Write the scenario's lab as a Compose file: `docker compose up "
                       "--exit-code-from score` brings it up, measures, and leaves the verdicts in ./results.",
                       epilog="examples:\n  harness compose scenarios/demo.yaml -o docker-compose.yml\n"
                       "  harness compose scenarios/gfw-like.yaml -o lab/gfw/compose.yml\n"
                       "  harness compose examples/dot-probe/scenario.yaml --probe dot -o lab/dot/compose.yml",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("scenario")
    p.add_argument("-o", "--output", type=Path, default=Path("docker-compose.yml"))
    p.add_argument("--name", help="lab name (default: the scenario's name)")
    p.add_argument("--probe", default="web", help="probe type the campaign runs (default: web); a third-party "
                   "one installed here is mounted into the containers")
    p.set_defaults(func=run)


def run(args: argparse.Namespace, console: Console) -> int:
    scenario = load_scenario(args.scenario)
    check_probe(args.probe)
    plan = compile_lab(scenario, check_lab_name(args.name or scenario.name), host=probe_host())
    out = args.output.resolve()
    out.write_text(compose_yaml(plan, Path(args.scenario).resolve(), out.parent, args.probe))
    console.print(f"wrote {args.output}: `docker compose -f {args.output} up --exit-code-from score`")
    return 0
