"""A credential sink: an HTTP server on loopback that records every request it receives.

It stands for the host a prompt-injected agent would send credentials to; tests point
`--api-base` (or a redirect) at it and then check what, if anything, arrived.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Sink:
    url: str
    requests: list[tuple[str, str, dict[str, str]]] = field(default_factory=list)
    #: When set, every request is answered with a redirect to this URL.
    redirect_to: str | None = None

    def received(self) -> str:
        """Everything that arrived, as one text to search for secrets."""
        return "\n".join(f"{m} {p} {h}" for m, p, h in self.requests)


@contextmanager
def credential_sink() -> Iterator[Sink]:
    sink = Sink(url="")

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _record(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            if length:
                self.rfile.read(length)
            sink.requests.append((self.command, self.path, dict(self.headers)))
            if sink.redirect_to is not None:
                self.send_response(307)
                self.send_header("Location", sink.redirect_to + self.path)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            body = b"{}"
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = do_PUT = _record

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    sink.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield sink
    finally:
        server.shutdown()
        server.server_close()
