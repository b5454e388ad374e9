"""infra/k8s: every overlay rendered by the real `kubectl kustomize`, every object validated.

Built-in kinds are checked by kubernetes-validate (strict: unknown fields are errors); the
Argo Rollouts kinds against the CRDs vendored in infra/k8s/schema (argo-rollouts v1.8.4), with
unknown fields refused the same way.
"""

from __future__ import annotations

import copy
import subprocess
from functools import cache
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from infra.manifest import Manifest

from .support import REPO, tool

OVERLAYS = ("dev", "prod")
KUBERNETES_VERSION = "1.33"
CRDS = {
    "Rollout": REPO / "infra" / "k8s" / "schema" / "rollout-crd.yaml",
    "AnalysisTemplate": REPO / "infra" / "k8s" / "schema" / "analysis-template-crd.yaml",
}


@cache
def render(overlay: str) -> tuple[dict[str, Any], ...]:
    kubectl = tool("kubectl", REPO / ".tools" / "bin" / "kubectl")
    done = subprocess.run(
        [kubectl, "kustomize", f"infra/k8s/overlays/{overlay}"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return tuple(d for d in yaml.safe_load_all(done.stdout) if d)


def _strict(schema: Any) -> Any:
    """The CRD schema with unknown fields refused where the API server would prune them."""
    if isinstance(schema, dict):
        schema = {k: _strict(v) for k, v in schema.items()}
        if "properties" in schema and not schema.get("x-kubernetes-preserve-unknown-fields"):
            schema.setdefault("additionalProperties", False)
        return schema
    if isinstance(schema, list):
        return [_strict(v) for v in schema]
    return schema


@cache
def crd_schema(kind: str) -> dict[str, Any]:
    crd = yaml.safe_load(CRDS[kind].read_text())
    version = next(v for v in crd["spec"]["versions"] if v["name"] == "v1alpha1")
    schema: dict[str, Any] = _strict(copy.deepcopy(version["schema"]["openAPIV3Schema"]))
    schema["properties"]["metadata"] = {"type": "object"}
    return schema


def validate(document: dict[str, Any]) -> None:
    if document["apiVersion"].startswith("argoproj.io/"):
        jsonschema.validate(document, crd_schema(document["kind"]))
    else:
        kubernetes_validate.validate(document, KUBERNETES_VERSION, strict=True)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_rendered_object_validates(overlay: str) -> None:
    documents = render(overlay)
    assert documents
    for document in documents:
        validate(document)


def test_validation_refuses_a_broken_object() -> None:
    rollout = copy.deepcopy(next(d for d in render("prod") if d["kind"] == "Rollout"))
    rollout["spec"]["strategy"]["canary"]["stepz"] = []
    with pytest.raises(jsonschema.ValidationError):
        validate(rollout)
    deployment = copy.deepcopy(next(d for d in render("dev") if d["kind"] == "Deployment"))
    deployment["spec"]["replicas"] = "two"
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(deployment)


def by_kind(overlay: str, kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in render(overlay) if d["kind"] == kind}


def test_prod_runs_rollouts_with_analysis_and_no_deployments(manifest: Manifest) -> None:
    rollouts = by_kind("prod", "Rollout")
    assert set(rollouts) == set(manifest.names)
    assert not by_kind("prod", "Deployment")
    templates = by_kind("prod", "AnalysisTemplate")
    for name, rollout in rollouts.items():
        canary = rollout["spec"]["strategy"]["canary"]
        assert canary["steps"][0] == {"setWeight": 2}
        assert canary["analysis"]["templates"][0]["templateName"] in templates
        env = rollout["spec"]["template"]["spec"]["containers"][0]["env"]
        assert env[0]["name"] == f"{manifest.get(name).prefix}_VERSION"
    for hpa in by_kind("prod", "HorizontalPodAutoscaler").values():
        assert hpa["spec"]["scaleTargetRef"]["kind"] == "Rollout"
        assert hpa["spec"]["scaleTargetRef"]["name"] in rollouts


def test_analysis_uses_the_metrics_the_services_export() -> None:
    (template,) = by_kind("prod", "AnalysisTemplate").values()
    queries = [m["provider"]["prometheus"]["query"] for m in template["spec"]["metrics"]]
    assert any("http_server_request_duration_seconds_count" in q for q in queries)
    assert any("http_server_request_duration_seconds_bucket" in q for q in queries)
    for query in queries:
        assert "servicekit_build_info" in query and "{{args.canary-hash}}" in query
        assert "{{args.stable-hash}}" in query and 'service="{{args.service}}"' in query


def _pods(overlay: str) -> dict[str, dict[str, Any]]:
    kind = "Rollout" if overlay == "prod" else "Deployment"
    return {n: d["spec"]["template"]["spec"] for n, d in by_kind(overlay, kind).items()}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_probes_resources_and_graceful_shutdown(overlay: str, manifest: Manifest) -> None:
    for name, pod in _pods(overlay).items():
        (container,) = pod["containers"]
        assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
        assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
        assert container["ports"][0]["containerPort"] == manifest.get(name).port
        assert container["resources"]["limits"]["memory"]
        assert container["resources"]["requests"]["cpu"]
        pause = int(container["lifecycle"]["preStop"]["exec"]["command"][-1].split("(")[1][:-1])
        configs = by_kind(overlay, "ConfigMap")
        config = configs[container["envFrom"][0]["configMapRef"]["name"]]["data"]
        drain = int(config["GRACEFUL_SHUTDOWN_SECONDS"])
        assert pod["terminationGracePeriodSeconds"] > pause + drain


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_autoscalers_and_disruption_budgets(overlay: str, manifest: Manifest) -> None:
    assert set(by_kind(overlay, "HorizontalPodAutoscaler")) == set(manifest.names)
    assert set(by_kind(overlay, "PodDisruptionBudget")) == set(manifest.names)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_network_policies_admit_only_callers(overlay: str, manifest: Manifest) -> None:
    policies = by_kind(overlay, "NetworkPolicy")
    assert policies["default-deny-ingress"]["spec"]["podSelector"] == {}
    for s in manifest:
        sources = policies[s.name]["spec"]["ingress"][0]["from"]
        open_to_all = any("ipBlock" in src for src in sources)
        assert open_to_all == s.gateway, s.name
        callers = {
            src["podSelector"]["matchLabels"]["app.kubernetes.io/name"]
            for src in sources
            if "podSelector" in src and "namespaceSelector" not in src
        }
        assert callers == (
            {c.name for c in manifest.callers_of(s.name)} if not s.gateway else set()
        )


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_config_reference_resolves(overlay: str) -> None:
    configs, secrets = by_kind(overlay, "ConfigMap"), by_kind(overlay, "Secret")
    for name, pod in _pods(overlay).items():
        for source in pod["containers"][0]["envFrom"]:
            if "configMapRef" in source:
                assert source["configMapRef"]["name"] in configs, name
            elif overlay == "dev":  # prod's Secrets come from the secret store
                assert source["secretRef"]["name"] in secrets, name


def test_dev_runs_its_own_postgres_and_redis_prod_none() -> None:
    assert set(by_kind("dev", "StatefulSet")) == {"postgres", "redis"}
    assert not by_kind("prod", "StatefulSet")
    for config in by_kind("dev", "ConfigMap").values():
        environment = [k for k in config.get("data", {}) if k.endswith("_ENVIRONMENT")]
        assert all(config["data"][k] == "development" for k in environment)
