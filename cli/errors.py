"""Exit codes of `gate4` and the errors that carry them.

A command raises a `CliError` (or a subclass) with a message meant for a person; `cli.main`
prints it as `gate4: error: <CODE>: <message>` and exits with the error's exit code. The code
(UPPER_SNAKE, like the API's) lets a script or an SRE grep for what failed; an API error's
line starts with its HTTP status and code instead. `EXIT_CODES` is the one table of exit
codes: `gate4 --help` prints it, and new groups add their codes here.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
# Platform API answers (cli/apicommand.py maps each problem status and code to one of these).
EXIT_AUTH = 3
EXIT_NOT_FOUND = 4
EXIT_CONFLICT = 5
EXIT_RISK_REJECTED = 6
EXIT_KILL_SWITCH = 7
EXIT_UNAVAILABLE = 8
EXIT_INTERRUPTED = 130

# Codes of `gate4`'s own error lines and evidence (an API error line carries the API's code).
FAILED = "FAILED"
USAGE = "USAGE"
#: No answer from the gateway at all.
GATEWAY_UNREACHABLE = "GATEWAY_UNREACHABLE"
#: A read of the SRE tools not sent because GET /readyz shows the service behind it down.
DEPENDENCY_DOWN = "DEPENDENCY_DOWN"
TRACE_NOT_FOUND = "TRACE_NOT_FOUND"
PROCESS_FAILED = "PROCESS_FAILED"
SECRET_IN_BUNDLE = "SECRET_IN_BUNDLE"  # noqa: S105 - a code, not a secret
AUDIT_CHAIN_BROKEN = "AUDIT_CHAIN_BROKEN"
TRIAGE_UNDETERMINED = "TRIAGE_UNDETERMINED"
CLI_CODES = frozenset(
    {
        FAILED,
        USAGE,
        GATEWAY_UNREACHABLE,
        DEPENDENCY_DOWN,
        TRACE_NOT_FOUND,
        PROCESS_FAILED,
        SECRET_IN_BUNDLE,
        AUDIT_CHAIN_BROKEN,
        TRIAGE_UNDETERMINED,
    }
)

EXIT_CODES: dict[int, str] = {
    EXIT_OK: "success",
    EXIT_FAILURE: "failure (a process died, a port is taken, a dependency is unreachable, the "
    "API's 500 or 501, ...)",
    EXIT_USAGE: "usage: bad arguments or configuration, or refused in this environment; "
    "the API's 400 (VALIDATION_FAILED, ...)",
    EXIT_AUTH: "auth: 401 UNAUTHENTICATED or 403 (FORBIDDEN, TENANT_MISMATCH, USER_MISMATCH)",
    EXIT_NOT_FOUND: "not found: 404 NOT_FOUND (unknown id, or another tenant's)",
    EXIT_CONFLICT: "conflict: 409 (STATE_CONFLICT, IDEMPOTENCY_IN_PROGRESS) or 422 "
    "IDEMPOTENCY_KEY_REUSED",
    EXIT_RISK_REJECTED: "risk rejection: 422 RISK_LIMIT_BREACHED (see outcome); nothing executed",
    EXIT_KILL_SWITCH: "kill switch: 423 KILL_SWITCH_ENGAGED; side effects blocked until release",
    EXIT_UNAVAILABLE: "unavailable: 503, 504, 429 or the gateway unreachable; retry later with the "
    "same --idempotency-key",
    EXIT_INTERRUPTED: "interrupted by Ctrl-C before the command finished",
}


class CliError(Exception):
    """A failure reported to the user as one line, without a traceback."""

    exit_code: int = EXIT_FAILURE
    code: str = FAILED

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code

    def line(self) -> str:
        """The error line's text after `gate4: error: `."""
        return f"{self.code}: {self.message}"


class UsageError(CliError):
    """Bad arguments or configuration: nothing was done."""

    exit_code = EXIT_USAGE
    code = USAGE


def exit_codes_epilog() -> str:
    lines = ["exit codes:"]
    lines += [f"  {code:<4} {meaning}" for code, meaning in sorted(EXIT_CODES.items())]
    return "\n".join(lines)
