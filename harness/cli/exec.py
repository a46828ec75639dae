"""harness exec: run any program inside a running lab, as a vantage (or any host) sees the network."""

from __future__ import annotations

import argparse

from rich.console import Console

from harness import inlab
from harness.cli import verb_help
from harness.cli.common import lab_name
from netlab.errors import UsageError

EPILOG = """examples:
  harness exec demo isp-a -- dig news.test                  the ISP's resolver answers (NXDOMAIN at isp-a)
  harness exec demo isp-a -- curl -sS https://www.blog.test/
  harness exec demo isp-b -- openssl s_client -connect social.test:443 -servername social.test
  harness exec demo control -- curl -sS http://news.test/  the uncensored view
  harness exec demo isp-a.gw -- nft list ruleset            a router host

The program gets the vantage's resolver and routes, and trusts the lab CA: SSL_CERT_FILE,
CURL_CA_BUNDLE and REQUESTS_CA_BUNDLE name it, and HOME holds an NSS database (.pki/nssdb) that
trusts it, for Chromium and Firefox. Its exit status is the command's."""


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("exec", help=verb_help("exec"),
                       description="Run PROGRAM inside the running lab LAB, in the host of VANTAGE (an ISP "
                       "name or `control`; also a host such as `isp-a.gw` or `inet`, or a site name: the lab "
                       "internet), with that vantage's resolver and the lab CA trusted. Works on both backends.",
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("lab", type=lab_name, help="lab name (see `harness status`)")
    p.add_argument("vantage", help="an ISP name, `control`, a host or a site of the lab")
    p.add_argument("argv", nargs=argparse.REMAINDER, metavar="-- PROGRAM [ARG...]")
    p.set_defaults(func=run)


def run(args: argparse.Namespace, console: Console) -> int:
    argv = args.argv[1:] if args.argv[:1] == ["--"] else args.argv
    if not argv:
        raise UsageError("name the program to run after `--` (harness exec LAB VANTAGE -- PROGRAM [ARG...])")
    lab = inlab.attach(args.lab)
    host = inlab.host_of(lab, args.vantage)
    return inlab.run(inlab.command(lab, host, argv))
