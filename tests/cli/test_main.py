from __future__ import annotations

import argparse
import subprocess
import sys
import types

import pytest

from cli import main as cli_main
from cli.errors import EXIT_CODES, EXIT_FAILURE, EXIT_OK, EXIT_USAGE, CliError


def test_help_lists_groups_and_every_exit_code(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main.main(["--help"]) == EXIT_OK
    out = capsys.readouterr().out
    assert "dev" in out
    assert "exit codes:" in out
    for code, meaning in EXIT_CODES.items():
        assert f"{code:<4} {meaning}" in out


def test_documented_codes() -> None:
    assert (EXIT_OK, EXIT_FAILURE, EXIT_USAGE) == (0, 1, 2)


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
