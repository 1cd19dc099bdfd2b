"""Credentials files: the `export NAME=value` lines `gate4 dev credentials` prints and
`gate4 dev up` writes to var/dev-credentials.env, read back without a shell.

Kept apart from cli/settings.py so that reading one costs an API command no more than
`shlex` (no pydantic, no SQLAlchemy).
"""

from __future__ import annotations

import shlex
from pathlib import Path


def read_env_file(path: Path) -> dict[str, str]:
    """The `export NAME=value` lines of a credentials file; empty when there is none."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    values: dict[str, str] = {}
    for line in text.splitlines():
        if line.startswith("export ") and "=" in line:
            name, _, quoted = line.removeprefix("export ").partition("=")
            try:
                words = shlex.split(quoted)
            except ValueError:
                continue
            values[name.strip()] = words[0] if words else ""
    return values
