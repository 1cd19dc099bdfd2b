"""`gate4`: the platform's command line (the console script's entry point).

Each command group is a module under cli/ exposing NAME, HELP and `register(parser)`;
`register` adds the group's subcommands and sets `handler` (Namespace -> exit code) on each.
Adding a group is writing its module and listing it in GROUPS; exit codes live in
cli/errors.py (EXIT_CODES), which `gate4 --help` prints.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from typing import Protocol

from cli import (
    audit,
    deployments,
    dev,
    incident,
    killswitch,
    orders,
    risk,
    sessions,
    trace,
    triage,
    turns,
)
from cli.errors import EXIT_INTERRUPTED, EXIT_USAGE, CliError, exit_codes_epilog

Handler = Callable[[argparse.Namespace], int]


class CommandGroup(Protocol):
    NAME: str
    HELP: str

    def register(self, parser: argparse.ArgumentParser) -> None: ...


GROUPS: tuple[CommandGroup, ...] = (
    sessions,
    turns,
    deployments,
    orders,
    risk,
    killswitch,
    audit,
    trace,
    triage,
    incident,
    dev,
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gate4",
        description="Gate4 Platform command line.",
        epilog=exit_codes_epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    groups = parser.add_subparsers(dest="group", metavar="GROUP", required=True)
    for group in GROUPS:
        group_parser = groups.add_parser(
            group.NAME,
            help=group.HELP,
            description=group.HELP[:1].upper() + group.HELP[1:] + ".",
            epilog=exit_codes_epilog(),
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        group.register(group_parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse exits 2 on usage errors, 0 after --help
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    handler: Handler = args.handler
    try:
        return handler(args)
    except CliError as exc:
        print(f"gate4: error: {exc.message}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("gate4: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
