"""What a shell makes of the lines the CLI prints to be sourced."""

from __future__ import annotations

import os
import subprocess


def source_env(text: str) -> dict[str, str]:
    """What bash sees after sourcing text: proves the lines really are sourceable."""
    names = [
        line.split("=", 1)[0].removeprefix("export ")
        for line in text.splitlines()
        if line.startswith("export ")
    ]
    script = "set -eu\n" + text + "\n" + "".join(f'printf "%s\\0" "${n}"\n' for n in names)
    out = subprocess.run(
        ["bash", "-c", script], capture_output=True, check=True, env={"PATH": os.defpath}
    ).stdout
    values = out.decode().split("\0")[:-1]
    assert len(values) == len(names)
    return dict(zip(names, values, strict=True))
