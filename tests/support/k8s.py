"""The Kubernetes objects deploy/k8s renders, for the tests that check them."""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

K8S = Path(__file__).resolve().parents[2] / "deploy" / "k8s"
OVERLAYS = ("dev", "prod")


@functools.cache
def rendered(overlay: str) -> tuple[dict[str, Any], ...]:
    """What `kubectl kustomize` renders for an overlay (skips, or fails under CI=true,
    without kubectl)."""
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("kubectl is needed to render deploy/k8s")
        pytest.skip("kubectl is not installed")
    out = subprocess.run(
        [kubectl, "kustomize", str(K8S / "overlays" / overlay)],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    return tuple(d for d in yaml.safe_load_all(out) if d is not None)


def named(overlay: str) -> dict[tuple[str, str], dict[str, Any]]:
    """(kind, name) -> object."""
    return {(d["kind"], d["metadata"]["name"]): d for d in rendered(overlay)}


def container_env(overlay: str, container: dict[str, Any]) -> tuple[dict[str, str], dict[str, str]]:
    """(everything a container's envFrom and env give it, just its Secrets' part)."""
    objects = named(overlay)
    env: dict[str, str] = {}
    secret_env: dict[str, str] = {}
    for ref in container["envFrom"]:
        kind, target = next(iter(ref.items()))
        doc = objects["Secret" if kind == "secretRef" else "ConfigMap", target["name"]]
        data: dict[str, Any] = doc.get("data") or doc.get("stringData") or {}
        values = {k: str(v) for k, v in data.items()}
        env.update(values)
        if kind == "secretRef":
            secret_env.update(values)
    env.update({e["name"]: str(e["value"]) for e in container.get("env", [])})
    return env, secret_env
