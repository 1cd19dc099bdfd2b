"""`gate4`: the platform's command line (the console script's entry point).

Each command group is a module under cli/ exposing NAME, HELP and `register(parser)`;
`register` adds the group's subcommands and sets `handler` (Namespace -> exit code) on each.
Adding a group is writing its module and listing it in GROUPS; exit codes live in
cli/errors.py (EXIT_CODES), which `gate4 --help` prints.

Only the chosen group's module is imported: `gate4 trace` must not pay for SQLAlchemy and
Alembic (`gate4 dev`) when an SRE runs it during an outage. `gate4 --help` reads them all.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence
from typing import Protocol, cast

from cli.errors import EXIT_INTERRUPTED, EXIT_USAGE, CliError, exit_codes_epilog

Handler = Callable[[argparse.Namespace], int]


class CommandGroup(Protocol):
    NAME: str
    HELP: str

    def register(self, parser: argparse.ArgumentParser) -> None: ...


#: The command groups in the order `gate4 --help` lists them: name -> module.
GROUPS: dict[str, str] = {
    "sessions": "cli.sessions",
    "turns": "cli.turns",
    "deployments": "cli.deployments",
    "orders": "cli.orders",
    "risk": "cli.risk",
    "killswitch": "cli.killswitch",
    "audit": "cli.audit",
    "trace": "cli.trace",
    "triage": "cli.triage",
    "incident": "cli.incident",
    "apikeys": "cli.apikeys",
    "dev": "cli.dev",
}


def load_group(name: str) -> CommandGroup:
    return cast(CommandGroup, importlib.import_module(GROUPS[name]))


def build_parser(chosen: str | None = None) -> argparse.ArgumentParser:
    """The whole command line; with `chosen`, only that group is loaded (the others are
    names that argparse knows but never parses)."""
    parser = argparse.ArgumentParser(
        prog="gate4",
        description="Gate4 Platform command line.",
        epilog=exit_codes_epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    groups = parser.add_subparsers(dest="group", metavar="GROUP", required=True)
    for name in GROUPS:
        if chosen is not None and name != chosen:
            groups.add_parser(name)
            continue
        group = load_group(name)
        group_parser = groups.add_parser(
            group.NAME,
            help=group.HELP,
            description=group.HELP[:1].upper() + group.HELP[1:] + ".",
            epilog=exit_codes_epilog(),
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        group.register(group_parser)
    return parser


def chosen_group(argv: Sequence[str]) -> str | None:
    """The group the command line names, when it names one (its first word)."""
    return argv[0] if argv and argv[0] in GROUPS else None


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(chosen_group(argv))
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse exits 2 on usage errors, 0 after --help
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    handler: Handler = args.handler
    try:
        return handler(args)
    except CliError as exc:
        print(f"gate4: error: {exc.line()}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("gate4: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
