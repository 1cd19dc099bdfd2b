"""The README, deploy/ and .ci/run stay true to the code they describe."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import yaml

from services.runtime.config import IDENTITIES, SERVICES, Settings

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
OTEL_VARS = (
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_TRACES_SAMPLER",
    "OTEL_TRACES_SAMPLER_ARG",
    "OTEL_BSP_SCHEDULE_DELAY",
)


def readme_rows() -> dict[str, list[str]]:
    rows: dict[str, list[str]] = {}
    for line in (ROOT / "README.md").read_text().splitlines():
        match = re.match(r"^\| `([A-Z0-9_]+)` \|(.*)\|$", line)
        if match:
            rows[match.group(1)] = [cell.strip() for cell in match.group(2).split("|")]
    return rows


def test_readme_documents_every_setting_with_its_default() -> None:
    rows = readme_rows()
    for name, field in Settings.model_fields.items():
        env = f"GATE4_{name.upper()}"
        assert env in rows, f"README Configuration lacks {env}"
        default = rows[env][0]
        if name == "jwt_secret" or name.endswith("_service_token"):
            assert default == "dev-only value"
        elif field.default in ("", None):
            assert default == "*(empty)*", env
        else:
            assert default == f"`{field.default}`", env
    for env in OTEL_VARS:
        assert env in rows, f"README lacks {env}"


def k8s_documents() -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = []
    for path in sorted(K8S.glob("*.yaml")):
        docs += [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    return docs


def test_every_deploy_yaml_file_parses() -> None:
    files = sorted((ROOT / "deploy").rglob("*.yaml"))
    assert files
    for path in files:
        assert list(yaml.safe_load_all(path.read_text())), path


def test_kustomization_lists_every_manifest() -> None:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    manifests = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(kustomization["resources"]) == manifests


def test_k8s_has_a_ready_probed_deployment_and_a_service_per_process() -> None:
    docs = [d for d in k8s_documents() if d.get("kind") != "Kustomization"]
    by_kind: dict[str, dict[str, dict[str, Any]]] = {}
    for doc in docs:
        assert {"apiVersion", "kind", "metadata"} <= doc.keys()
        by_kind.setdefault(doc["kind"], {})[doc["metadata"]["name"]] = doc
    for name in (*SERVICES, "gateway"):
        deployment = by_kind["Deployment"][f"gate4-{name}"]
        assert f"gate4-{name}" in by_kind["Service"]
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        module = "gateway" if name == "gateway" else f"services.{name}"
        assert container["command"] == ["python", "-m", module]
        probe = container["readinessProbe"]
        if name == "gateway":
            assert probe["httpGet"]["path"] == "/readyz"
        else:
            default_addr = Settings.model_fields[f"{name}_addr"].default
            assert probe["grpc"]["port"] == int(default_addr.rsplit(":")[1])
        sources = {next(iter(ref.values()))["name"] for ref in container["envFrom"]}
        # Shared configuration and secrets, and this process's own identity only.
        assert sources == {"gate4-config", "gate4-secrets", f"gate4-{name}-identity"}


def test_k8s_configuration_names_real_settings_and_secrets_are_placeholders() -> None:
    docs = k8s_documents()
    (config,) = [d for d in docs if d["kind"] == "ConfigMap"]
    secrets = {d["metadata"]["name"]: d["stringData"] for d in docs if d["kind"] == "Secret"}
    known = {f"GATE4_{name.upper()}" for name in Settings.model_fields}
    for key in [*config["data"], *(k for data in secrets.values() for k in data)]:
        assert key in known or key.startswith("OTEL_"), key
    assert set(secrets) == {"gate4-secrets", *(f"gate4-{n}-identity" for n in IDENTITIES)}
    assert set(secrets["gate4-secrets"]) == {"GATE4_DATABASE_URL"}
    for name in IDENTITIES:  # one Secret per identity, holding that identity's token alone
        assert set(secrets[f"gate4-{name}-identity"]) == {f"GATE4_{name.upper()}_SERVICE_TOKEN"}
    for doc in (d for d in docs if d["kind"] == "Secret"):
        assert all("PLACEHOLDER" in value for value in doc["stringData"].values())
    assert config["data"]["GATE4_ENV"] == "prod"


def test_collector_receives_otlp_http_and_exports_to_file_and_debug() -> None:
    config = yaml.safe_load((ROOT / "deploy" / "otel" / "collector.yaml").read_text())
    assert config["receivers"]["otlp"]["protocols"]["http"]["endpoint"].endswith(":4318")
    assert {"file", "debug"} <= set(config["exporters"])
    traces = config["service"]["pipelines"]["traces"]
    assert traces["receivers"] == ["otlp"]
    assert set(traces["exporters"]) == {"file", "debug"}


def test_ci_script_runs_make_test() -> None:
    script = ROOT / ".ci" / "run"
    assert os.access(script, os.X_OK)
    text = script.read_text()
    assert "set -euo pipefail" in text
    assert text.rstrip().endswith("make test")
