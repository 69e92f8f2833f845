"""Lint the chart and validate every rendered object against the Kubernetes API schemas.

kubernetes-validate ships the OpenAPI-derived JSON schemas of the core API groups only. The
ServiceMonitor is a Prometheus Operator custom resource with no schema there; it is checked
structurally below instead (group/version, a selector that matches the proxy Service, an
endpoint naming a port that Service has).
"""

from __future__ import annotations

import copy

import pytest

from tests.helm.conftest import (
    CHART_DIR,
    KUBE_VERSION,
    Rendered,
    helm_module,
    kube_validate_module,
    production_values,
)

CUSTOM_RESOURCES = {("monitoring.coreos.com/v1", "ServiceMonitor")}


@pytest.mark.parametrize("values_name", ["default", "production"])
def test_lint_strict_has_no_warnings(values_name: str) -> None:
    helm = helm_module()
    values = production_values() if values_name == "production" else None
    report = helm.lint(CHART_DIR, values, strict=True, kube_version=f"v{KUBE_VERSION}")
    assert report["total_charts_linted"] == 1
    assert report["errors"] == []
    serious = [m for m in report["messages"] if m["severity"] >= 2]
    assert serious == []


@pytest.mark.parametrize("kube_version", ["1.27.0", KUBE_VERSION])
def test_every_object_validates_strictly(each_render: Rendered, kube_version: str) -> None:
    """From the chart's minimum kubeVersion (1.27) to the version the tests target."""
    kv = kube_validate_module()
    validated = 0
    for obj in each_render.objects:
        if (obj["apiVersion"], obj["kind"]) in CUSTOM_RESOURCES:
            continue
        try:
            kv.validate(obj, kube_version, strict=True)
        except kv.ValidationError as exc:
            where = ".".join(str(p) for p in exc.path)
            pytest.fail(f"{obj['kind']}/{obj['metadata']['name']}: {where}: {exc.message}")
        validated += 1
    assert validated >= 8


def test_validator_catches_an_unknown_field(default_render: Rendered) -> None:
    """Strict schemas reject a field the API lacks, so the test above has teeth."""
    kv = kube_validate_module()
    deployment = copy.deepcopy(default_render.get("Deployment", "sealgate"))
    deployment["spec"]["template"]["spec"]["containers"][0]["securityContxt"] = {}
    with pytest.raises(kv.ValidationError):
        kv.validate(deployment, KUBE_VERSION, strict=True)


def test_expected_objects_default(default_render: Rendered) -> None:
    kinds = {(o["kind"], o["metadata"]["name"]) for o in default_render.objects}
    assert kinds == {
        ("ConfigMap", "sealgate-config"),
        ("ConfigMap", "sealgate-policy"),
        ("Deployment", "sealgate"),
        ("Deployment", "sealgate-vllm"),
        ("NetworkPolicy", "sealgate-default-deny"),
        ("NetworkPolicy", "sealgate-proxy"),
        ("NetworkPolicy", "sealgate-vllm"),
        ("PodDisruptionBudget", "sealgate"),
        ("Pod", "sealgate-test-identity"),
        ("Secret", "sealgate-vllm-api-key"),
        ("Service", "sealgate"),
        ("Service", "sealgate-vllm"),
        ("ServiceAccount", "sealgate"),
    }


def test_expected_objects_production(production_render: Rendered) -> None:
    kinds = {o["kind"] for o in production_render.objects}
    assert {"HorizontalPodAutoscaler", "ServiceMonitor", "PodDisruptionBudget"} <= kinds
    # The database URL comes from an existing Secret; the one the chart makes is vLLM's key.
    assert [s["metadata"]["name"] for s in production_render.of_kind("Secret")] == [
        "sealgate-vllm-api-key"]
    hpa = production_render.get("HorizontalPodAutoscaler", "sealgate")
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "sealgate",
    }
    assert hpa["spec"]["minReplicas"] == 3
    # With an HPA the Deployment leaves replicas to it.
    assert "replicas" not in production_render.get("Deployment", "sealgate")["spec"]
    # Behind the ingress, clients are told apart by its X-Forwarded-For: otherwise one client
    # could spend every client's identity budget.
    proxy = production_render.get("Deployment", "sealgate")["spec"]["template"]["spec"]["containers"][0]
    assert {e["name"]: e.get("value") for e in proxy["env"]}["SEALGATE_TRUSTED_PROXIES"]


def test_service_monitor_targets_the_proxy_service(production_render: Rendered) -> None:
    (monitor,) = production_render.of_kind("ServiceMonitor")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    service = production_render.get("Service", "sealgate")
    selector = monitor["spec"]["selector"]["matchLabels"]
    assert selector.items() <= service["metadata"]["labels"].items()
    port_names = {p["name"] for p in service["spec"]["ports"]}
    for endpoint in monitor["spec"]["endpoints"]:
        assert endpoint["port"] in port_names
        assert endpoint["path"] == "/metrics"
    assert monitor["spec"]["namespaceSelector"]["matchNames"] == ["sealgate"]


def test_service_monitor_off_by_default(default_render: Rendered) -> None:
    assert default_render.of_kind("ServiceMonitor") == []
    assert default_render.of_kind("HorizontalPodAutoscaler") == []
