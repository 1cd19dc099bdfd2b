"""`python -m gateway`: serves the Platform API with uvicorn."""

from __future__ import annotations

import sys

import uvicorn

from gateway.app import create_app
from services.runtime.config import get_settings
from services.runtime.production import UnsafeConfiguration


def main() -> None:
    settings = get_settings()
    try:
        app = create_app(settings)
    except UnsafeConfiguration as exc:
        sys.exit(f"gate4: {exc}")
    uvicorn.run(
        app,
        host=settings.gateway_host,
        port=settings.gateway_port,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=int(settings.shutdown_grace_seconds) or None,
        lifespan="on",
    )


if __name__ == "__main__":
    main()
