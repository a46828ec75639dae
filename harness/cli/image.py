"""harness image build: the lab's container image, from a registry or from Debian's archive."""

from __future__ import annotations

import argparse

from rich.console import Console

from netlab import images


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("image", help="build the lab's container image (cached)",
                       description="Build censorlab/base, the image every lab container runs. Uses "
                       "images/Dockerfile where a registry is reachable, else debootstrap from the Debian "
                       "archive the host's apt uses, then docker import. A second build is a cache hit.",
                       epilog="examples:\n  harness image build\n  harness image build --offline --force",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("action", choices=("build",))
    p.add_argument("--offline", action="store_true", help="build from the Debian archive (no registry)")
    p.add_argument("--force", action="store_true", help="rebuild even if cached")
    p.set_defaults(func=run)


def run(args: argparse.Namespace, console: Console) -> int:
    argv = ["build", *(["--offline"] if args.offline else []), *(["--force"] if args.force else [])]
    return images.main(argv)
