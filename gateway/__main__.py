"""`python -m gateway`: serves the Platform API with uvicorn."""

from __future__ import annotations

import uvicorn

from gateway.app import create_app
from services.runtime.config import get_settings


def main() -> None:
    settings = get_settings()
    uvicorn.run(
        create_app(settings),
        host=settings.gateway_host,
        port=settings.gateway_port,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=int(settings.shutdown_grace_seconds) or None,
        lifespan="on",
    )


if __name__ == "__main__":
    main()
