"""The image's rules that a generic linter does not know (make test runs hadolint for the rest):
built from uv.lock, one non-root runtime stage without build tools, pinned bases, and a build
context that holds what the wheel needs and nothing local."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
BUILD_TOOLS = re.compile(
    r"\b(gcc|g\+\+|clang|make|build-essential|apt-get|apk|pip install|uv (sync|pip)|/uv\b)"
)


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments left out."""
    joined = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    out = []
    for line in joined.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            out.append((keyword.upper(), rest.strip()))
    return out


def stages() -> list[list[tuple[str, str]]]:
    found: list[list[tuple[str, str]]] = []
    for keyword, rest in instructions():
        if keyword == "FROM":
            found.append([])
        if found:
            found[-1].append((keyword, rest))
    return found


def test_the_bases_are_pinned_releases() -> None:
    args = dict(
        rest.split("=", 1) for keyword, rest in instructions() if keyword == "ARG" and "=" in rest
    )
    assert re.fullmatch(r"python:3\.\d+\.\d+-slim-\w+", args["PYTHON_IMAGE"])
    assert re.fullmatch(r"ghcr\.io/astral-sh/uv:\d+\.\d+\.\d+", args["UV_IMAGE"])
    python_minor = args["PYTHON_IMAGE"].split(":")[1].rsplit(".", 1)[0]
    assert python_minor in (ROOT / "pyproject.toml").read_text().split("requires-python")[1]


def test_the_build_stage_installs_from_the_lock_file() -> None:
    build = next(s for s in stages() if s[0][1].endswith(" AS build"))
    copied = " ".join(rest for keyword, rest in build if keyword == "COPY")
    assert "uv.lock" in copied
    syncs = [rest for keyword, rest in build if keyword == "RUN" and "uv sync" in rest]
    assert len(syncs) == 2
    for command in syncs:
        assert "--frozen" in command and "--no-dev" in command
    assert "--no-editable" in syncs[-1]  # the project itself as a package, not a source link


def test_the_runtime_stage_is_non_root_without_build_tools() -> None:
    all_stages = stages()
    assert len(all_stages) >= 3  # uv, build, runtime
    final = all_stages[-1]
    assert final[0] == ("FROM", "${PYTHON_IMAGE} AS runtime")
    users = [rest for keyword, rest in final if keyword == "USER"]
    assert users, "the runtime stage names its user"
    assert users[-1].split(":")[0] not in ("0", "root")
    for keyword, rest in final:
        if keyword in ("RUN", "COPY"):
            assert not BUILD_TOOLS.search(rest), rest
    copies = [rest for keyword, rest in final if keyword == "COPY"]
    assert copies == ["--from=build /app/.venv /app/.venv"]
    assert any(keyword == "HEALTHCHECK" for keyword, _ in final)
    cmd = [rest for keyword, rest in final if keyword == "CMD"]
    assert cmd == ['["python", "-m", "gateway"]']
    assert not any(keyword == "ENTRYPOINT" for keyword, _ in final)  # the command picks


def test_the_build_context_holds_the_package_and_nothing_local() -> None:
    ignored = {
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert {".git", ".venv", "var", ".cache", "**/__pycache__"} <= ignored
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    needed = [
        "pyproject.toml",
        "uv.lock",
        project["project"]["readme"],
        *project["tool"]["hatch"]["build"]["targets"]["wheel"]["packages"],
    ]
    for path in needed:
        assert (ROOT / path).exists(), path
        parts = Path(path).parts
        prefixes = {"/".join(parts[: i + 1]) for i in range(len(parts))}
        assert not prefixes & ignored, f"{path} is left out of the build context"
