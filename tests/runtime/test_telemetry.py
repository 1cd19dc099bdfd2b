"""Local span files roll over by size, and the folder is kept under its total."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from services.runtime.telemetry import ROLLED_RE, SpanFile

LINE = "x" * 99 + "\n"  # 100 bytes


def test_a_span_file_rolls_over_at_its_size_and_keeps_every_line(tmp_path: Path) -> None:
    spans = SpanFile(tmp_path, "risk.42", max_bytes=1000, total_bytes=10_000)
    for _ in range(25):
        spans.write(LINE)
    spans.flush()
    spans.close()
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["risk.42.jsonl", "risk.42.r1.jsonl", "risk.42.r2.jsonl"]
    assert all(p.stat().st_size <= 1000 for p in tmp_path.iterdir())
    lines = sum(len(p.read_text().splitlines()) for p in tmp_path.iterdir())
    assert lines == 25


def test_the_oldest_closed_files_go_first_and_open_files_stay(tmp_path: Path) -> None:
    live, gone, own = os.getppid(), _exited_pid(), f"risk.{os.getpid()}"
    # A live process's file, an old rolled-over file and the file of a process that is gone.
    other = tmp_path / f"audit.{live}.jsonl"
    other.write_text(LINE * 5)
    old = tmp_path / "gateway.3.r1.jsonl"
    old.write_text(LINE * 5)
    os.utime(old, (1, 1))
    dead = tmp_path / f"risk.{gone}.jsonl"
    dead.write_text(LINE * 5)
    os.utime(dead, (2, 2))
    export = tmp_path / "collector.json"  # not a span file of ours: never touched
    export.write_text(LINE * 5)
    spans = SpanFile(tmp_path, own, max_bytes=500, total_bytes=1600)
    for _ in range(15):
        spans.write(LINE)
    spans.close()
    names = {p.name for p in tmp_path.iterdir()}
    assert old.name not in names and dead.name not in names  # the oldest closed ones first
    open_files = {other.name, f"{own}.jsonl"}
    assert open_files | {export.name} <= names  # open files and foreign ones stay
    span_files = [p for p in tmp_path.iterdir() if p.suffix == ".jsonl"]
    assert sum(p.stat().st_size for p in span_files) <= 1600 + 500
    assert all(ROLLED_RE.search(p.name) for p in span_files if p.name not in open_files)


def _exited_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid
