from __future__ import annotations

import argparse

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


def test_cli_error_becomes_one_line_and_its_exit_code(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    class Boom:
        NAME = "boom"
        HELP = "always fails"

        @staticmethod
        def register(parser: argparse.ArgumentParser) -> None:
            def handler(_args: argparse.Namespace) -> int:
                raise CliError("it broke")

            parser.set_defaults(handler=handler)

    # Registering a group is one entry in GROUPS.
    monkeypatch.setattr(cli_main, "GROUPS", (*cli_main.GROUPS, Boom))
    assert cli_main.main(["boom"]) == EXIT_FAILURE
    captured = capsys.readouterr()
    assert captured.err == "gate4: error: it broke\n"
    assert captured.out == ""
