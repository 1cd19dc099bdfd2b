"""`python -m gateway`: serves the Platform API with uvicorn (gateway/server.py)."""

from __future__ import annotations

import sys

from gateway import server
from gateway.app import create_app
from services.runtime.config import get_settings
from services.runtime.production import UnsafeConfiguration


def main() -> None:
    settings = get_settings()
    try:
        app = create_app(settings)
    except UnsafeConfiguration as exc:
        sys.exit(f"gate4: {exc}")
    server.serve(
        server.uvicorn_config(
            app, settings.gateway_host, settings.gateway_port, settings.shutdown_grace_seconds
        )
    )


if __name__ == "__main__":
    main()
