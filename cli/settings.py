"""Settings as the CLI sees them: the same GATE4_* variables the processes read."""

from __future__ import annotations

from pathlib import Path

from pydantic import ValidationError

from cli.errors import UsageError
from services.runtime.config import Settings


def load_settings(var_dir: Path | None = None) -> Settings:
    """Reads GATE4_*; an explicit var dir (a --var-dir flag) wins over GATE4_VAR_DIR."""
    try:
        if var_dir is None:
            return Settings()
        return Settings(var_dir=var_dir)
    except ValidationError as exc:
        problems = "; ".join(
            f"GATE4_{'_'.join(str(p) for p in err['loc']).upper()}: {err['msg']}"
            for err in exc.errors()
        )
        raise UsageError(f"invalid configuration: {problems}") from exc


def require_dev(settings: Settings, command: str) -> None:
    """Dev commands mint tokens with the configured secret: never against production."""
    if settings.env != "dev":
        raise UsageError(
            f"`gate4 {command}` is for local development only and refuses to run with "
            f"GATE4_ENV={settings.env}"
        )


def http_base(host: str, port: int) -> str:
    """The URL a local client dials for a server listening on host:port."""
    if host in ("", "0.0.0.0", "::", "[::]"):  # noqa: S104 - mapping a wildcard to loopback
        host = "127.0.0.1"
    elif ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"http://{host}:{port}"
