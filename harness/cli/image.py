"""harness image build: the lab's container image, from a registry or from Debian's archive."""

from __future__ import annotations

import argparse

from rich.console import Console

from harness.cli import verb_help
from netlab.deploy import images


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("image", help=verb_help("image"),
                       description="Build fauxisp/base, the image every lab container runs. Uses "
                       "images/Dockerfile where a registry is reachable, else debootstrap from the Debian "
                       "archive the host's apt uses, then docker import. A second build is a cache hit.",
                       epilog="examples:\n  harness image build\n  harness image build --offline --force\n"
                       "  harness image build --with-project                 # fauxisp/lab: + project, "
                       "examples/dot-probe\n"
                       "  harness image build --with-project --plugin ../my-probe",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("action", choices=("build",))
    p.add_argument("--offline", action="store_true", help="build from the Debian archive (no registry)")
    p.add_argument("--force", action="store_true", help="rebuild even if cached")
    p.add_argument("--with-project", action="store_true",
                   help="also build fauxisp/lab: the base image with this project installed (files at "
                   "/opt/fauxisp) and probe plugins, for running campaigns from the image alone")
    p.add_argument("--plugin", action="append", default=[], metavar="PATH",
                   help="with --with-project: a probe plugin (project folder or wheel) to install; repeatable")
    p.set_defaults(func=run)


def run(args: argparse.Namespace, console: Console) -> int:
    argv = ["build", *(["--offline"] if args.offline else []), *(["--force"] if args.force else []),
            *(["--with-project"] if args.with_project else []), *(f"--plugin={p}" for p in args.plugin)]
    return images.main(argv)
