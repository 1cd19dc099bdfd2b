"""Smoke tests: each benchmark runs end to end with a handful of requests.

They prove the scripts work and produce well-formed figures; they assert nothing about
timings (a benchmark never passes or fails on wall-clock time).
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

import pytest

from bench import cli


@pytest.fixture
def bench_tmp(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """Points the benchmarks' temp dirs at an empty folder, to check they clean up."""
    folder = tmp_path / "tmp"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    return folder


def _run(argv: list[str], json_path: Path, capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    assert cli.main([*argv, "--json", str(json_path)]) == 0
    out = capsys.readouterr().out
    assert "Gate4 benchmarks" in out
    report: dict[str, Any] = json.loads(json_path.read_text())
    assert report["host"]["cpus"] >= 1
    return report


def _assert_well_formed(section: dict[str, Any], requests: int) -> None:
    rows = section["rows"]
    assert rows, section["title"]
    assert section["baseline"] in {row["name"] for row in rows}
    for row in rows:
        assert row["requests"] == requests, row
        assert row["errors"] == 0, row
        assert row["rate"] > 0, row
        assert 0 < row["p50_ms"] <= row["p90_ms"] <= row["p99_ms"] <= row["max_ms"], row
        assert isinstance(row["ratio"], float) and row["ratio"] > 0, row
    assert next(r for r in rows if r["name"] == section["baseline"])["ratio"] == 1.0


@pytest.mark.skipif(
    shutil.which("wrk") is None, reason="wrk is not installed (make bench installs it)"
)
def test_platform_benchmark_produces_figures_and_goals(
    bench_tmp: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    report = _run(
        [
            "platform",
            "--seconds",
            "1",
            "--warmup",
            "0",
            # More sessions than connections by far: a session takes one turn at a time.
            "--sessions",
            "16",
            "--connections",
            "2",
            "--no-untraced",
            "--no-postgres",
        ],
        tmp_path / "platform.json",
        capsys,
    )
    ceilings, platform = report["sections"]
    assert [r["name"] for r in ceilings["rows"]] == ["route", "route+1hop", "route+2hops"]
    assert [r["name"] for r in platform["rows"]] == [
        "healthz",
        "orders",
        "deployment-read",
        "order-read",
        "turn-help",
        "turn-status",
    ]
    for row in [*ceilings["rows"], *platform["rows"]]:
        assert row["requests"] > 0 and row["rate"] > 0, row
        assert row["errors"] == 0, row
        assert 0 < row["p50_ms"] <= row["p99_ms"] <= row["max_ms"], row
        assert row["ratio"] > 0, row
    assert {r["extra"]["ceiling"] for r in platform["rows"]} == {
        "route",
        "route+1hop",
        "route+2hops",
    }
    assert any(note.startswith("RSS after the run (MB): ") for note in platform["notes"])
    assert any(goal.startswith("goal: orders >= 0.75x") for goal in report["goals"])
    assert list(bench_tmp.iterdir()) == []


def test_storage_benchmark_produces_figures(
    bench_tmp: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    report = _run(
        ["storage", "--requests", "20", "--concurrency", "4"], tmp_path / "storage.json", capsys
    )
    sqlite, postgres = report["sections"]
    _assert_well_formed(sqlite, 20)
    if postgres["skipped"] is None:
        _assert_well_formed(postgres, 20)
    else:
        assert "PostgreSQL" in postgres["skipped"]
    for section in (sqlite, postgres):
        for row in section["rows"]:
            assert row["extra"]["rows_committed"] == 20
            assert row["extra"]["transactions"] >= 1
    group = next(r for r in sqlite["rows"] if r["name"] == "group-commit")
    assert group["extra"]["transactions"] <= 20
    assert list(bench_tmp.iterdir()) == []
