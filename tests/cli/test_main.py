from __future__ import annotations

import argparse
import re
import subprocess
import sys
import types
from pathlib import Path

import pytest

from cli import main as cli_main
from cli.apicommand import exit_code_for
from cli.errors import (
    CLI_CODES,
    EXIT_CODES,
    EXIT_CONFLICT,
    EXIT_FAILURE,
    EXIT_OK,
    EXIT_RISK_REJECTED,
    EXIT_USAGE,
    CliError,
)
from services.runtime import errors, outcomes

ROOT = Path(__file__).resolve().parents[2]
LANE_PAGE = ROOT / "docs" / "portal" / "platform" / "gate4-openclaw-client-lane.md"
CODE_RE = re.compile(r"\b[A-Z][A-Z0-9_]{3,}\b")
STATUS_RE = re.compile(r"\b([45]\d\d)\b")


def test_help_lists_groups_and_every_exit_code(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main.main(["--help"]) == EXIT_OK
    out = capsys.readouterr().out
    assert "dev" in out
    assert "exit codes:" in out
    for code, meaning in EXIT_CODES.items():
        assert f"{code:<4} {meaning}" in out


def _documented_exits() -> dict[int, str]:
    """The exit-code table of the client-lane page: exit code -> meaning."""
    rows = LANE_PAGE.read_text().split("**Exit codes**", 1)[1].split("\n\n", 2)[1]
    table = [line.strip("|").split("|") for line in rows.splitlines()[2:]]
    return {int(cells[0]): cells[1].strip() for cells in table}


def _label(meaning: str) -> str:
    """What an exit code is called: its meaning up to the first colon, parenthesis or "by"."""
    return re.split(r":| \(| by ", meaning, maxsplit=1)[0]


def _misdocumented(exit_code: int, meaning: str) -> list[str]:
    """What `meaning` claims of exit_code that the CLI's mapping (cli/apicommand.py) of the
    API's errors (services/runtime/errors.py) does not do."""
    wrong = []
    for code in CODE_RE.findall(meaning):
        if code in CLI_CODES or code in outcomes.ALL:
            continue  # the CLI's own codes, and the outcomes a refusal names
        error = errors.error_class(code)
        if error is None:
            wrong.append(f"{exit_code}: {code} is no error code of services/runtime/errors.py")
        elif exit_code_for(error.http_status, code) != exit_code:
            wrong.append(f"{exit_code}: {code} ({error.http_status}) exits otherwise")
    for status in map(int, STATUS_RE.findall(meaning)):
        # A 422 exits after its code (named next to it), any other status after itself.
        if status != 422 and exit_code_for(status, "") != exit_code:
            wrong.append(f"{exit_code}: status {status} exits otherwise")
    return wrong


def test_documented_codes() -> None:
    """The exit codes `gate4 --help` prints (EXIT_CODES) and the client-lane page's table
    are the same codes with the same meanings, and every API error code and status either
    names maps to that exit code through the CLI's status mapping and the error hierarchy."""
    documented = _documented_exits()
    assert sorted(documented) == sorted(EXIT_CODES)
    assert {e: _label(m) for e, m in documented.items()} == {
        e: _label(m) for e, m in EXIT_CODES.items()
    }
    wrong = [
        problem
        for source in (EXIT_CODES, documented)
        for exit_code, meaning in source.items()
        for problem in _misdocumented(exit_code, meaning)
    ]
    assert wrong == []
    # A 422 exits after its code: a reused key is a conflict, not a risk rejection.
    assert exit_code_for(422, errors.IdempotencyKeyReused.code) == EXIT_CONFLICT
    assert exit_code_for(422, errors.RiskLimitBreached.code) == EXIT_RISK_REJECTED


@pytest.mark.parametrize("argv", [[], ["dev"], ["nope"], ["dev", "nope"]])
def test_missing_or_unknown_command_is_a_usage_error(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli_main.main(argv) == EXIT_USAGE
    assert "usage: gate4" in capsys.readouterr().err


def test_cli_error_becomes_one_line_naming_its_code_and_its_exit_code(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    boom = types.ModuleType("tests.cli.boom_group")
    boom.NAME = "boom"  # type: ignore[attr-defined]
    boom.HELP = "always fails"  # type: ignore[attr-defined]

    def register(parser: argparse.ArgumentParser) -> None:
        def handler(_args: argparse.Namespace) -> int:
            raise CliError("it broke", code="BOOM")

        parser.set_defaults(handler=handler)

    boom.register = register  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, boom.__name__, boom)
    # Registering a group is one entry in GROUPS.
    monkeypatch.setattr(cli_main, "GROUPS", {**cli_main.GROUPS, "boom": boom.__name__})
    assert cli_main.main(["boom"]) == EXIT_FAILURE
    captured = capsys.readouterr()
    assert captured.err == "gate4: error: BOOM: it broke\n"
    assert captured.out == ""


def test_a_usage_error_names_its_code(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main.main(["trace", "bad id"]) == EXIT_USAGE
    assert capsys.readouterr().err.startswith("gate4: error: USAGE: REQUEST_ID must be")


@pytest.mark.parametrize("group", ["trace", "triage", "incident"])
def test_a_command_imports_only_what_it_needs(group: str) -> None:
    """The SRE tools start quickly during an outage: no SQLAlchemy, Alembic or gateway."""
    probe = (
        "import sys\n"
        "from cli.main import main\n"
        f"code = main([{group!r}, '--help'])\n"
        "heavy = sorted(m for m in ('sqlalchemy', 'alembic', 'starlette', 'gateway', "
        "'cli.dev', 'cli.credentials') if m in sys.modules)\n"
        "print('heavy:', ','.join(heavy))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "heavy:"
