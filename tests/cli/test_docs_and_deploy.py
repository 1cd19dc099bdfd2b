"""The README, deploy/ and .ci/run stay true to the code they describe."""

from __future__ import annotations

import copy
import os
import re
from pathlib import Path
from typing import Any

import kubernetes_validate  # type: ignore[import-untyped]
import pytest
import yaml

from services.runtime.callers import ALLOWED_CALLERS
from services.runtime.config import IDENTITIES, SERVICES, Settings
from tests.support.k8s import OVERLAYS, rendered

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


#: Kubernetes versions the rendered overlays must be valid for (schemas bundled offline).
K8S_VERSIONS = ("1.30.0", "1.32.0")
PROCESSES = ("gateway", *SERVICES)


def by_kind(overlay: str) -> dict[str, dict[str, dict[str, Any]]]:
    kinds: dict[str, dict[str, dict[str, Any]]] = {}
    for doc in rendered(overlay):
        kinds.setdefault(doc["kind"], {})[doc["metadata"]["name"]] = doc
    return kinds


def test_every_deploy_yaml_file_parses() -> None:
    files = sorted((ROOT / "deploy").rglob("*.yaml"))
    assert files
    for path in files:
        assert list(yaml.safe_load_all(path.read_text())), path


def test_kustomizations_list_every_manifest() -> None:
    base = yaml.safe_load((K8S / "base" / "kustomization.yaml").read_text())
    manifests = {p.name for p in (K8S / "base").glob("*.yaml")} - {"kustomization.yaml"}
    assert set(base["resources"]) == manifests
    assert {p.name for p in K8S.iterdir()} == {"base", "overlays"}
    for overlay in OVERLAYS:
        folder = K8S / "overlays" / overlay
        kustomization = yaml.safe_load((folder / "kustomization.yaml").read_text())
        used = {*kustomization["resources"]}
        for generator in kustomization.get("configMapGenerator", []):
            used |= {entry.partition("=")[2] or entry for entry in generator["files"]}
        files = {p.name for p in folder.glob("*.yaml")} - {"kustomization.yaml"}
        assert "../../base" in used
        assert files <= used, f"{overlay}: {files - used} not in its kustomization"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlays_render_and_validate_against_the_kubernetes_schemas(overlay: str) -> None:
    docs = rendered(overlay)
    assert docs
    for doc in docs:
        assert doc["metadata"].get("namespace", "gate4") == "gate4"
        for version in K8S_VERSIONS:
            kubernetes_validate.validate(doc, version, strict=True)
    # The check is real: an unknown field is refused.
    deployment = next(d for d in docs if d["kind"] == "Deployment")
    broken = copy.deepcopy(deployment)
    broken["spec"]["template"]["spec"]["containers"][0]["readinessProbee"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, K8S_VERSIONS[0], strict=True)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_process_is_probed_drained_spread_and_budgeted(overlay: str) -> None:
    kinds = by_kind(overlay)
    (account,) = kinds["ServiceAccount"].values()
    assert account["automountServiceAccountToken"] is False
    for name in PROCESSES:
        deployment = kinds["Deployment"][f"gate4-{name}"]
        pod = deployment["spec"]["template"]["spec"]
        assert pod["serviceAccountName"] == account["metadata"]["name"]
        assert pod["automountServiceAccountToken"] is False
        assert {c["topologyKey"] for c in pod["topologySpreadConstraints"]} == {
            "topology.kubernetes.io/zone",
            "kubernetes.io/hostname",
        }
        (container,) = pod["containers"]
        module = "gateway" if name == "gateway" else f"services.{name}"
        assert container["command"] == ["python", "-m", module]
        assert "PLACEHOLDER" not in container["image"] and ":" in container["image"]
        # Endpoints drain before SIGTERM, and the drain ends before SIGKILL.
        pause = container["lifecycle"]["preStop"]["sleep"]["seconds"]
        assert pause + Settings().shutdown_grace_seconds < pod["terminationGracePeriodSeconds"]
        probe = container["readinessProbe"]
        if name == "gateway":
            # Ready while the gateway itself can serve: one service down answers 503 on its
            # own routes and keeps every gateway in rotation (tests/gateway/test_readyz.py).
            assert probe["httpGet"]["path"] == "/readyz?scope=gateway"
            assert probe["timeoutSeconds"] > 1  # the services' health deadline (1 s)
        else:
            default_addr = Settings.model_fields[f"{name}_addr"].default
            assert probe["grpc"]["port"] == int(default_addr.rsplit(":")[1])
        sources = {next(iter(ref.values()))["name"] for ref in container["envFrom"]}
        # Shared configuration and secrets, and this process's own identity only.
        assert sources == {"gate4-config", "gate4-secrets", f"gate4-{name}-identity"}
        budget = kinds["PodDisruptionBudget"][f"gate4-{name}"]
        assert budget["spec"]["selector"] == deployment["spec"]["selector"]
        service = kinds["Service"][f"gate4-{name}"]
        if name != "gateway":
            # Headless: DNS names every ready pod, for round_robin in the callers.
            assert service["spec"]["clusterIP"] == "None"


def test_prod_runs_replicas_and_scales_them() -> None:
    kinds = by_kind("prod")
    for name in PROCESSES:
        assert kinds["Deployment"][f"gate4-{name}"]["spec"]["replicas"] >= 2
        hpa = kinds["HorizontalPodAutoscaler"][f"gate4-{name}"]
        assert hpa["spec"]["scaleTargetRef"]["name"] == f"gate4-{name}"
        assert 2 <= hpa["spec"]["minReplicas"] < hpa["spec"]["maxReplicas"]
    assert "otel-collector" not in kinds["Deployment"]


def test_dev_runs_the_collector_and_every_process_sends_to_it() -> None:
    kinds = by_kind("dev")
    collector = kinds["Deployment"]["otel-collector"]
    service = kinds["Service"]["otel-collector"]
    assert service["spec"]["selector"] == collector["spec"]["selector"]["matchLabels"]
    (port,) = service["spec"]["ports"]
    endpoint = kinds["ConfigMap"]["gate4-config"]["data"]["OTEL_EXPORTER_OTLP_ENDPOINT"]
    assert endpoint == f"http://otel-collector:{port['port']}"
    (generated,) = [n for n in kinds["ConfigMap"] if n.startswith("otel-collector-")]
    volumes = collector["spec"]["template"]["spec"]["volumes"]
    assert {"name": "config", "configMap": {"name": generated}} in volumes
    config = yaml.safe_load(kinds["ConfigMap"][generated]["data"]["config.yaml"])
    local = yaml.safe_load((ROOT / "deploy" / "otel" / "collector.yaml").read_text())
    assert config["service"]["pipelines"] == local["service"]["pipelines"]
    assert config["receivers"] == local["receivers"]


def _selected(peer: dict[str, Any]) -> str:
    name: str = peer["podSelector"]["matchLabels"]["app.kubernetes.io/name"]
    return name.removeprefix("gate4-")


def test_network_policies_allow_only_the_calls_of_the_callers_table() -> None:
    callers: dict[str, set[str]] = {name: set() for name in SERVICES}
    for method, allowed in ALLOWED_CALLERS.items():
        service = method.split(".")[1]  # /gate4.<service>.v1.<Service>/<Rpc>
        callers[service] |= allowed
    policies = by_kind("prod")["NetworkPolicy"]
    deny = policies["gate4-default-deny"]["spec"]
    assert deny["podSelector"] == {} and set(deny["policyTypes"]) == {"Ingress", "Egress"}
    for name in PROCESSES:
        spec = policies[f"gate4-{name}"]["spec"]
        port = int(Settings().service_addr(name).rsplit(":")[1]) if name in SERVICES else None
        if name in SERVICES:
            (rule,) = spec["ingress"]
            assert {_selected(p) for p in rule["from"]} == callers[name], name
            assert [p["port"] for p in rule["ports"]] == [port]
        calls = {s for s, who in callers.items() if name in who}
        peers = {_selected(p) for rule in spec["egress"] for p in rule.get("to", [])}
        assert peers == calls, name
        for rule in spec["egress"]:
            if "to" in rule:
                (target,) = rule["to"]
                expected = Settings().service_addr(_selected(target)).rsplit(":")[1]
                assert [p["port"] for p in rule["ports"]] == [int(expected)]
    shared = policies["gate4-dns-and-database"]["spec"]
    ports = {p["port"] for rule in shared["egress"] for p in rule["ports"]}
    assert ports == {53, 5432}


def test_migrations_run_in_a_job_with_the_schema_owner_and_processes_skip_them() -> None:
    kinds = by_kind("prod")
    config = kinds["ConfigMap"]["gate4-config"]["data"]
    assert config["GATE4_MIGRATE_ON_START"] == "false"
    job = kinds["Job"]["gate4-migrate"]
    (container,) = job["spec"]["template"]["spec"]["containers"]
    assert container["command"] == ["python", "-m", "services.runtime.storage.migrations"]
    sources = {next(iter(ref.values()))["name"] for ref in container["envFrom"]}
    assert sources == {"gate4-config", "gate4-migrations"}
    for deployment in kinds["Deployment"].values():
        for c in deployment["spec"]["template"]["spec"]["containers"]:
            names = {next(iter(ref.values()))["name"] for ref in c.get("envFrom", [])}
            assert "gate4-migrations" not in names


def test_k8s_configuration_names_real_settings_and_secrets_are_placeholders() -> None:
    docs = rendered("prod")
    (config,) = [d for d in docs if d["kind"] == "ConfigMap"]
    secrets = {d["metadata"]["name"]: d["stringData"] for d in docs if d["kind"] == "Secret"}
    known = {f"GATE4_{name.upper()}" for name in Settings.model_fields}
    for key in [*config["data"], *(k for data in secrets.values() for k in data)]:
        assert key in known or key.startswith("OTEL_"), key
    Settings.model_validate(
        {k.removeprefix("GATE4_").lower(): v for k, v in config["data"].items() if k in known}
    )
    assert set(secrets) == {
        "gate4-secrets",
        "gate4-migrations",
        *(f"gate4-{n}-identity" for n in IDENTITIES),
    }
    assert set(secrets["gate4-secrets"]) == {"GATE4_DATABASE_URL"}
    assert set(secrets["gate4-migrations"]) == {"GATE4_DATABASE_URL"}
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
