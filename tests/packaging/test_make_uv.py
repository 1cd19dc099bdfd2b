"""`make uv` on a system Python that refuses `pip install --user` (PEP 668).

Debian, Ubuntu and Fedora mark their Python "externally managed": pip refuses `--user`
installs with `error: externally-managed-environment`. pip skips that check inside a venv, so
a venv cannot play such a Python; a `python3` on PATH that answers `-m pip install --user`
with pip's own refusal, and runs the real interpreter for anything else, does. `make uv` must
then create the venv .cache/uv-bootstrap, pip-install uv there, and point UV at it.

pip installs "uv" offline from a wheel built here: a stand-in whose `uv` prints a marker.
`make -C <tmp> -f <Makefile>` keeps .cache/ in the test's folder, not the checkout's.
"""

from __future__ import annotations

import base64
import hashlib
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MAKEFILE = ROOT / "Makefile"
MARKER = "stand-in uv 0.0.0"

# What pip prints on an externally managed Python (abridged).
REFUSAL = """\
error: externally-managed-environment

This environment is externally managed
To install Python packages system-wide, try apt install
    python3-xyz, where xyz is the package you are trying to
    install."""

FAKE_PYTHON = """\
#!/bin/sh
# A system Python under PEP 668: pip refuses --user installs; the rest is the real python.
echo "python3 $*" >> "{calls}"
case " $* " in
  *" -m pip install "*"--user"*) printf '%s\n' '{refusal}' >&2; exit 1 ;;
  *" -m venv "*) if [ -n "$FAKE_VENV_FAILS" ]; then
      echo "ensurepip is not available" >&2; exit 1
    fi ;;
esac
exec "{python}" "$@"
"""

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")


def _stand_in_uv_wheel(folder: Path) -> Path:
    """A py3-none-any wheel named uv whose console script `uv` prints MARKER."""
    files = {
        "stand_in_uv.py": f"def main() -> None:\n    print({MARKER!r})\n",
        "uv-0.0.0.dist-info/METADATA": "Metadata-Version: 2.1\nName: uv\nVersion: 0.0.0\n",
        "uv-0.0.0.dist-info/WHEEL": (
            "Wheel-Version: 1.0\nGenerator: tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
        ),
        "uv-0.0.0.dist-info/entry_points.txt": "[console_scripts]\nuv = stand_in_uv:main\n",
    }
    record = []
    for name, text in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=")
        record.append(f"{name},sha256={digest.decode()},{len(text.encode())}")
    record.append("uv-0.0.0.dist-info/RECORD,,")
    files["uv-0.0.0.dist-info/RECORD"] = "\n".join(record) + "\n"
    folder.mkdir(parents=True, exist_ok=True)
    wheel = folder / "uv-0.0.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        for name, text in files.items():
            archive.writestr(name, text)
    return wheel


def _externally_managed_env(tmp_path: Path) -> dict[str, str]:
    """PATH holds only the refusing python3 (no uv anywhere), HOME is empty, pip is offline."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "python3"
    fake.write_text(
        FAKE_PYTHON.format(calls=tmp_path / "calls.log", refusal=REFUSAL, python=sys.executable)
    )
    fake.chmod(0o755)
    wheelhouse = _stand_in_uv_wheel(tmp_path / "wheels").parent
    (tmp_path / "home").mkdir()
    (tmp_path / "project").mkdir()
    return {
        "PATH": str(bin_dir),
        "HOME": str(tmp_path / "home"),
        "PIP_NO_INDEX": "1",
        "PIP_FIND_LINKS": str(wheelhouse),
        "PIP_DISABLE_PIP_VERSION_CHECK": "1",
        "LANG": os.environ.get("LANG", "C.UTF-8"),
    }


def _make(tmp_path: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    make = shutil.which("make")
    assert make is not None
    return subprocess.run(
        [make, "--no-print-directory", "-C", str(tmp_path / "project"), "-f", str(MAKEFILE), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )


def test_make_uv_falls_back_to_a_project_venv_when_pip_refuses_user_installs(
    tmp_path: Path,
) -> None:
    env = _externally_managed_env(tmp_path)

    done = _make(tmp_path, env, "uv")

    assert done.returncode == 0, done.stdout + done.stderr
    calls = (tmp_path / "calls.log").read_text()
    assert "-m pip install --user" in calls, "pip --user was tried first"
    assert "-m venv" in calls, "then a venv"
    assert "PEP 668" in done.stdout
    bootstrap = tmp_path / "project" / ".cache" / "uv-bootstrap"
    uv = bootstrap / "bin" / "uv"
    assert subprocess.run([uv], capture_output=True, text=True).stdout.strip() == MARKER
    assert not (tmp_path / "home" / ".local").exists(), "nothing went to the user site"

    # The other targets run $(UV): it names what was installed.
    shown = _make(tmp_path, env, "--eval", "print-uv: ; @echo $(UV)", "print-uv")
    assert shown.stdout.strip() == str(uv), shown.stderr

    # Installed once: a second `make uv` runs no python at all.
    (tmp_path / "calls.log").unlink()
    again = _make(tmp_path, env, "uv")
    assert again.returncode == 0, again.stderr
    assert not (tmp_path / "calls.log").exists()


def test_make_uv_shows_pips_refusal_when_the_fallback_fails_too(tmp_path: Path) -> None:
    env = {**_externally_managed_env(tmp_path), "FAKE_VENV_FAILS": "1"}

    done = _make(tmp_path, env, "uv")

    assert done.returncode != 0
    assert "externally-managed-environment" in done.stderr
    assert "ensurepip is not available" in done.stderr
