"""Faults tests put on a live platform's processes, always undone."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from contextlib import contextmanager

from cli.devstack import ManagedProcess


@contextmanager
def paused(process: ManagedProcess) -> Iterator[None]:
    """The process hung (SIGSTOP) for the block, and always continued (SIGCONT) afterwards:
    its sockets stay open, so callers wait rather than fail at once."""
    assert process.proc is not None
    pid = process.proc.pid
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(pid, signal.SIGCONT)
