"""How the gateway is served: uvicorn with httptools, on the event loop of every process.

`python -m gateway` and the benchmark's route ceiling (bench/ceilings.py) both serve through
here, so the ceiling measures the stack the gateway actually runs on.
"""

from __future__ import annotations

import contextlib
import sys

import uvicorn
from starlette.types import ASGIApp

from services.runtime import eventloop

#: uvicorn's parser written in C (llhttp), rather than the pure-Python h11.
HTTP = "httptools"
#: What uvicorn would build its loop with; `serve` runs it on services/runtime/eventloop.py,
#: the same uvloop loop the services' grpc.aio servers and clients run on.
LOOP = "uvloop"
#: uvicorn's exit status when the server did not start (the port is taken, say).
STARTUP_FAILURE = 3


def uvicorn_config(
    app: ASGIApp, host: str, port: int, graceful_seconds: float = 0
) -> uvicorn.Config:
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        http=HTTP,
        loop=LOOP,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=int(graceful_seconds) or None,
        lifespan="on",
    )


def serve(config: uvicorn.Config) -> None:
    """Serves until SIGINT or SIGTERM, as `uvicorn.run` does, on the platform's loop."""
    server = uvicorn.Server(config)
    # Ctrl-C: uvicorn has drained already, then re-raised the signal.
    with contextlib.suppress(KeyboardInterrupt):
        eventloop.run(server.serve())
    if not server.started:
        sys.exit(STARTUP_FAILURE)
