"""Drives HTTP load with wrk (a C load generator, from Debian's packages) and reads its figures.

wrk costs far less CPU per request than any Python client, so on two cores the figures
describe the platform rather than the load generator. A generated Lua script spreads the
requests over a list of paths, gives each request a unique Idempotency-Key when asked,
alternates the order side (`__SIDE__` in the body), and prints the summary as one JSON line.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

MARKER = "WRK-JSON "
SIDE = "__SIDE__"

_SCRIPT = """
math.randomseed(os.time())
local method = [==[{method}]==]
local paths = {{{paths}}}
local headers = {{{headers}}}
local body = {body}
local keyed = {keyed}
local prefix = "bench-" .. tostring(math.random(1, 1000000000))
local counter = 0

request = function()
  counter = counter + 1
  local path = paths[(counter % #paths) + 1]
  local payload = body
  if payload ~= nil then
    payload = (string.gsub(payload, "{side}", counter % 2 == 0 and "buy" or "sell"))
  end
  if keyed then
    headers["Idempotency-Key"] = prefix .. "-" .. counter
  end
  return wrk.format(method, path, headers, payload)
end

done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{marker}{{"requests":%d,"duration_us":%d,"non2xx":%d,"connect":%d,"read":%d,' ..
    '"write":%d,"timeout":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,"max_us":%d}}\\n',
    summary.requests, summary.duration, e.status, e.connect, e.read, e.write, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max))
end
"""


class WrkMissing(RuntimeError):
    """wrk is not installed (`make bench` installs it from Debian's packages)."""


@dataclass(frozen=True)
class Load:
    """What each request of a scenario looks like."""

    method: str
    paths: Sequence[str]
    headers: Mapping[str, str] = field(default_factory=dict)
    body: str | None = None
    #: A unique Idempotency-Key on every request.
    keyed: bool = False


@dataclass(frozen=True)
class Result:
    requests: int
    seconds: float
    non2xx: int
    socket_errors: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float

    @property
    def rate(self) -> float:
        """Answers per second that were 2xx (non-2xx and socket errors do not count)."""
        good = self.requests - self.non2xx - self.socket_errors
        return max(good, 0) / self.seconds if self.seconds > 0 else 0.0


def _lua(text: str) -> str:
    return f"[==[{text}]==]"


def script(load: Load) -> str:
    headers = dict(load.headers)
    if load.body is not None:
        headers.setdefault("Content-Type", "application/json")
    return _SCRIPT.format(
        method=load.method,
        paths=", ".join(_lua(p) for p in load.paths),
        headers=", ".join(f"[ {_lua(k)} ] = {_lua(v)}" for k, v in headers.items()),
        body=_lua(load.body) if load.body is not None else "nil",
        keyed="true" if load.keyed else "false",
        side=SIDE,
        marker=MARKER,
    )


def executable() -> str:
    found = shutil.which("wrk")
    if found is None:
        raise WrkMissing("wrk is not installed: `make bench` installs it (apt-get install wrk)")
    return found


def run(base_url: str, load: Load, *, seconds: float, connections: int) -> Result:
    """One wrk run against base_url (one thread, `connections` keep-alive connections)."""
    with tempfile.TemporaryDirectory(prefix="gate4-wrk-") as folder:
        path = Path(folder) / "load.lua"
        path.write_text(script(load))
        duration = max(1, round(seconds))
        completed = subprocess.run(  # noqa: S603 - our own arguments, no shell
            [
                executable(),
                "-t1",
                f"-c{connections}",
                f"-d{duration}s",
                "--timeout",
                "10s",
                "-s",
                str(path),
                base_url,
            ],
            capture_output=True,
            text=True,
            timeout=duration + 60,
            check=False,
        )
    line = next((x for x in completed.stdout.splitlines() if x.startswith(MARKER)), None)
    if completed.returncode != 0 or line is None:
        raise RuntimeError(
            f"wrk failed ({completed.returncode}): {completed.stderr.strip() or completed.stdout}"
        )
    data = json.loads(line.removeprefix(MARKER))
    return Result(
        requests=int(data["requests"]),
        seconds=data["duration_us"] / 1e6,
        non2xx=int(data["non2xx"]),
        socket_errors=sum(int(data[k]) for k in ("connect", "read", "write", "timeout")),
        p50_ms=data["p50_us"] / 1000,
        p90_ms=data["p90_us"] / 1000,
        p99_ms=data["p99_us"] / 1000,
        max_ms=data["max_us"] / 1000,
    )
