"""Exit codes of `gate4` and the errors that carry them.

A command raises a `CliError` (or a subclass) with a message meant for a person; `cli.main`
prints it as `gate4: error: <message>` and exits with the error's code. `EXIT_CODES` is the
one table of codes: `gate4 --help` prints it, and new groups add their codes here.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

EXIT_CODES: dict[int, str] = {
    EXIT_OK: "success",
    EXIT_FAILURE: "failure (a process died, a port is taken, a dependency is unreachable, ...)",
    EXIT_USAGE: "usage: bad arguments or configuration, or refused in this environment",
    EXIT_INTERRUPTED: "interrupted by Ctrl-C before the command finished",
}


class CliError(Exception):
    """A failure reported to the user as one line, without a traceback."""

    exit_code: int = EXIT_FAILURE

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class UsageError(CliError):
    """Bad arguments or configuration: nothing was done."""

    exit_code = EXIT_USAGE


def exit_codes_epilog() -> str:
    lines = ["exit codes:"]
    lines += [f"  {code:<4} {meaning}" for code, meaning in sorted(EXIT_CODES.items())]
    return "\n".join(lines)
