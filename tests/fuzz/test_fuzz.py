"""Schemathesis against the live platform: every operation of the document, stateful links too.

The run reads the document the gateway serves, as it is when the test runs, and checks every
answer: no 5xx, status, content type, headers and body as the document says, schema-valid
requests accepted and schema-invalid ones refused, 405 with `Allow`, and the platform's own
correlation checks (tests/fuzz/hooks.py). Known tool artefacts are dropped there, each for a
stated reason; anything else fails the test with schemathesis's report.

`make test` runs a bounded number of examples per operation with a fixed seed;
`make fuzz` runs the same test with GATE4_FUZZ_EXAMPLES many more and a random seed.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

from gateway.openapi import HTTP_METHODS, SPEC, ApiContract
from tests.support.stack import LiveStack

ROOT = Path(__file__).resolve().parents[2]
CONFIG = Path(__file__).with_name("schemathesis.toml")
DEMO_POLICY = ROOT / "cli" / "demo-risk-policy.json"
#: Examples per operation and phase in `make test`; `make fuzz` sets many more.
EXAMPLES = int(os.environ.get("GATE4_FUZZ_EXAMPLES", "12"))
#: A fixed seed keeps `make test` reproducible; GATE4_FUZZ_SEED=random draws one.
SEED = os.environ.get("GATE4_FUZZ_SEED", "20261130")
PHASES = ("examples", "coverage", "fuzzing", "stateful")


def _seed() -> str:
    return str(random.SystemRandom().getrandbits(64)) if SEED == "random" else SEED


def _prepare_tenant(live_stack: LiveStack, tenant: str) -> dict[str, str]:
    """A tenant of the run's own, under the demo risk policy and with marks, so orders trade."""
    headers = live_stack.headers(tenant=tenant, user="fuzzer")
    with live_stack.client(headers) as client:
        policy = json.loads(DEMO_POLICY.read_text())
        put = client.put("/v1/risk/policy", json={"policy": policy, "reason": "fuzzing"})
        assert put.status_code == 200, put.text
        marks = [{"instrument": i, "price": "100"} for i in policy["instruments"]["allowed"]]
        fed = client.post("/v1/sandbox/marks", json={"marks": marks})
        assert fed.status_code == 200, fed.text
    return headers


def _documented_operations() -> int:
    paths: dict[str, Any] = ApiContract().document["paths"]
    return sum(1 for item in paths.values() for method in item if method in HTTP_METHODS)


def test_the_platform_answers_every_generated_request_as_its_document_says(
    live_stack: LiveStack, tmp_path: Path
) -> None:
    headers = _prepare_tenant(live_stack, f"fuzz-{uuid.uuid4().hex[:8]}")
    report = tmp_path / "report.json"
    seed = _seed()
    command = [
        sys.executable,
        "-m",
        "schemathesis.cli",
        "--config-file",
        str(CONFIG),
        "run",
        # The file the gateway serves: loaded from its URL, schemathesis would leave out the
        # operation that serves it.
        str(SPEC),
        "--url",
        live_stack.url,
        "--max-examples",
        str(EXAMPLES),
        "--seed",
        seed,
        "--phases",
        ",".join(PHASES),
        "--report",
        "json",
        "--report-json-path",
        str(report),
        "--no-color",
        *(arg for name, value in headers.items() for arg in ("-H", f"{name}: {value}")),
    ]
    started = time.monotonic()
    proc = subprocess.run(
        command,
        cwd=tmp_path,  # schemathesis's own state stays out of the repository
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=3600,
        check=False,
    )
    elapsed = time.monotonic() - started
    output = proc.stdout[-20000:] + proc.stderr[-4000:]
    assert report.exists(), f"schemathesis wrote no report (exit {proc.returncode})\n{output}"
    result = json.loads(report.read_text())
    cases = result["test_cases"]
    links = next((line.strip() for line in proc.stdout.splitlines() if "API Links:" in line), "")
    print(
        f"schemathesis: {cases['generated']} cases, {EXAMPLES} examples per operation, "
        f"seed {seed}, {elapsed:.1f}s; {links}"
    )

    assert result["exit_code"] == 0 and not result["failures"] and not result["errors"], output
    operations = result["operations"]
    assert operations["tested"] == operations["selected"] == _documented_operations(), operations
    assert operations["errored"] == operations["skipped"] == 0, operations
    for phase in PHASES:
        assert result["phases"][phase]["status"] == "success", (phase, result["phases"][phase])
    # The run went past the gateway's validation: commands were accepted and carried out.
    accepted = sum(
        phase["accepted"] for rates in result["valid_rates"].values() for phase in rates.values()
    )
    assert accepted > 0, result["valid_rates"]
    with httpx.Client(base_url=live_stack.url, headers=headers, timeout=10) as client:
        assert client.get("/readyz").status_code == 200
