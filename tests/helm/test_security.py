"""Security shape of the rendered chart: pod hardening, resources, secrets, network policy."""

from __future__ import annotations

import base64
import re
import tomllib
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import need
from tests.helm.conftest import Rendered

# A URL carrying credentials (scheme://user:secret@host) or a secret-looking name/value pair.
CREDENTIAL_URL = re.compile(r"[a-z][a-z0-9+.-]*://[^/\s:@]+:[^/\s@]+@", re.IGNORECASE)
SECRET_WORD = re.compile(r"passw(or)?d|secret|api[_-]?key|token", re.IGNORECASE)


def _containers(spec: dict[str, Any]) -> list[dict[str, Any]]:
    return [*spec.get("initContainers", []), *spec["containers"]]


def test_pods_run_non_root_with_runtime_default_seccomp(each_render: Rendered) -> None:
    for where, spec in each_render.pod_specs():
        pod = spec["securityContext"]
        assert pod["runAsNonRoot"] is True, where
        assert pod["runAsUser"] > 0, where
        assert pod["seccompProfile"] == {"type": "RuntimeDefault"}, where
        assert spec["automountServiceAccountToken"] is False, where
        # Service links would inject SEALGATE_* variables that shadow the config overrides.
        assert spec["enableServiceLinks"] is False, where


def test_containers_are_locked_down(each_render: Rendered) -> None:
    for where, spec in each_render.pod_specs():
        for container in _containers(spec):
            ctx = container["securityContext"]
            name = f"{where}/{container['name']}"
            assert ctx["runAsNonRoot"] is True, name
            assert ctx["readOnlyRootFilesystem"] is True, name
            assert ctx["allowPrivilegeEscalation"] is False, name
            assert ctx["privileged"] is False, name
            assert ctx["capabilities"] == {"drop": ["ALL"]}, name
            assert ctx["seccompProfile"] == {"type": "RuntimeDefault"}, name


def test_every_container_has_requests_and_limits(each_render: Rendered) -> None:
    for where, spec in each_render.pod_specs():
        for container in _containers(spec):
            resources = container["resources"]
            name = f"{where}/{container['name']}"
            for kind in ("requests", "limits"):
                assert {"cpu", "memory"} <= resources[kind].keys(), name


def test_vllm_gets_cc_gpus(each_render: Rendered) -> None:
    spec = each_render.get("Deployment", "sealgate-vllm")["spec"]["template"]["spec"]
    (vllm,) = spec["containers"]
    assert vllm["resources"]["limits"]["nvidia.com/gpu"] >= 1
    assert spec["nodeSelector"]["nvidia.com/cc.mode"] == "on"
    args = vllm["args"]
    assert args[0] == "serve"
    assert "--disable-log-requests" in args or "--no-enable-log-requests" in args
    assert args[args.index("--host") + 1] == "0.0.0.0"
    assert args[args.index("--port") + 1] == "8000"
    assert "--tensor-parallel-size" in args
    env = {e["name"]: e.get("value", e.get("valueFrom")) for e in vllm["env"]}
    assert env["HF_HUB_OFFLINE"] == "1"


def test_proxy_uses_opa_sidecar_on_loopback(each_render: Rendered) -> None:
    spec = each_render.get("Deployment", "sealgate")["spec"]["template"]["spec"]
    containers = {c["name"]: c for c in spec["containers"]}
    opa = containers["opa"]
    assert opa["image"].startswith("openpolicyagent/opa")
    assert opa["args"][:4] == ["run", "--server", "--addr", "127.0.0.1:8181"]
    # OPA reads no policy files: it holds only what the proxy installs (the bundle it loaded
    # and attests), so an edit of the policy volume cannot reach decisions under an old digest.
    assert not any(a.startswith("/") or a == "--watch" for a in opa["args"])
    assert "volumeMounts" not in opa
    env = {e["name"]: e.get("value") for e in containers["proxy"]["env"]}
    assert env["SEALGATE_POLICY_ENGINE"] == "opa"
    assert env["SEALGATE_OPA_URL"] == "http://127.0.0.1:8181"
    assert containers["proxy"]["args"] == [
        "serve",
        "--config",
        "/etc/sealgate/sealgate.toml",
        "--host",
        "0.0.0.0",
        "--port",
        "8080",
    ]


def test_model_route_points_at_the_vllm_service(each_render: Rendered) -> None:
    config = tomllib.loads(each_render.get("ConfigMap", "sealgate-config")["data"]["sealgate.toml"])
    assert config["backends"] == {"vllm": {"type": "vllm", "url": "http://sealgate-vllm:8000/v1",
                                           "api_key_env": "UPSTREAM_API_KEY_VLLM"}}
    assert config["models"] == {
        "llama-3.1-8b-instruct": {"backend": "vllm", "retention_tier": "attested-zero"}
    }


def test_rendered_config_loads_in_the_proxy(each_render: Rendered, tmp_path: Path) -> None:
    """The ConfigMap and the pod's literal SEALGATE_* variables are what Settings accepts."""
    try:
        from proxy.config import Settings
    except ImportError as exc:
        need(False, f"proxy.config unavailable: {exc}")
    config = tmp_path / "sealgate.toml"
    config.write_text(each_render.get("ConfigMap", "sealgate-config")["data"]["sealgate.toml"])
    env = {k: v for k, v in _proxy_env(each_render).items() if isinstance(v, str)}
    settings = Settings.load(config, env=env)
    assert settings.deployment_mode == "production"
    assert settings.evidence_provider == "configfs-tsm"
    assert settings.policy_engine == "opa"
    assert settings.opa_url == "http://127.0.0.1:8181"
    assert str(settings.data_dir) == "/var/lib/sealgate"
    (route,) = settings.models.values()
    assert settings.backends[route.backend].kind == "vllm"
    assert str(route.retention_tier) == "attested-zero"


@pytest.mark.parametrize("kind", ["openai", "vllm"])
def test_extra_backends_with_a_key_and_a_timeout_load_in_the_proxy(
        render: Any, tmp_path: Path, kind: str) -> None:
    try:
        from proxy.config import Settings
    except ImportError as exc:
        need(False, f"proxy.config unavailable: {exc}")
    rendered: Rendered = render({"backends": {"other": {
        "type": kind, "url": "https://llm.example.net/v1", "timeoutS": 45,
        "apiKeySecret": {"name": "other-key", "key": "token"}}}})
    config = tmp_path / "sealgate.toml"
    config.write_text(rendered.get("ConfigMap", "sealgate-config")["data"]["sealgate.toml"])
    env = _proxy_env(rendered)
    variable = next(name for name, value in env.items()
                    if isinstance(value, dict)
                    and value.get("secretKeyRef", {}).get("name") == "other-key")
    options = Settings.load(config, env={}).backends["other"].options
    assert (options.api_key_env, options.timeout_s) == (variable, 45.0)


def test_an_openai_backend_can_salt_the_prefix_cache_per_tenant(render: Any, tmp_path: Path) -> None:
    try:
        from proxy.config import Settings
    except ImportError as exc:
        need(False, f"proxy.config unavailable: {exc}")
    rendered: Rendered = render({"backends": {
        "salted": {"type": "openai", "url": "http://vllm-b:8000/v1", "cacheSalt": True},
        "plain": {"type": "openai", "url": "http://other:8000/v1"}}})
    config = tmp_path / "sealgate.toml"
    config.write_text(rendered.get("ConfigMap", "sealgate-config")["data"]["sealgate.toml"])
    backends = Settings.load(config, env={}).backends
    assert backends["salted"].options.cache_salt is True
    assert backends["plain"].options.cache_salt is False


def test_no_plaintext_secrets_in_configmaps_or_env(each_render: Rendered) -> None:
    for cm in each_render.of_kind("ConfigMap"):
        for key, text in cm.get("data", {}).items():
            assert not CREDENTIAL_URL.search(text), f"ConfigMap {cm['metadata']['name']}/{key}"
    for where, spec in each_render.pod_specs():
        for container in _containers(spec):
            for var in container.get("env", []):
                value = var.get("value", "")
                assert not CREDENTIAL_URL.search(value), f"{where}: {var['name']}"
                assert not SECRET_WORD.search(var["name"]) or "valueFrom" in var, var["name"]


def test_database_urls_come_from_a_secret(production_render: Rendered) -> None:
    """The audit log and the shared state (tenants, keys, accounts) use one PostgreSQL."""
    spec = production_render.get("Deployment", "sealgate")["spec"]["template"]["spec"]
    proxy = next(c for c in spec["containers"] if c["name"] == "proxy")
    for name in ("SEALGATE_AUDIT_URL", "SEALGATE_DATABASE_URL"):
        (var,) = [e for e in proxy["env"] if e["name"] == name]
        assert "value" not in var
        assert var["valueFrom"] == {"secretKeyRef": {"name": "sealgate-audit-db", "key": "url"}}


def test_production_runs_in_kata_without_the_host_tsm(production_render: Rendered) -> None:
    spec = production_render.get("Deployment", "sealgate")["spec"]["template"]["spec"]
    assert spec["runtimeClassName"] == "kata-cc"
    # Under Kata the pod VM's own kernel provides configfs-tsm; the host's must not leak in.
    assert all("hostPath" not in v for v in spec["volumes"])
    env = {e["name"]: e.get("value") for e in spec["containers"][0]["env"]}
    assert env["SEALGATE_EVIDENCE_PROVIDER"] == "configfs-tsm"
    assert env["SEALGATE_DEPLOYMENT_MODE"] == "production"


def test_default_mounts_host_tsm_without_kata(default_render: Rendered) -> None:
    spec = default_render.get("Deployment", "sealgate")["spec"]["template"]["spec"]
    assert "runtimeClassName" not in spec
    (tsm,) = [v for v in spec["volumes"] if "hostPath" in v]
    assert tsm["hostPath"] == {"path": "/sys/kernel/config/tsm", "type": "Directory"}
    mounts = {m["name"]: m for m in spec["containers"][0]["volumeMounts"]}
    assert mounts[tsm["name"]]["mountPath"] == "/sys/kernel/config/tsm"
    assert mounts["tmp"]["mountPath"] == "/tmp"
    assert mounts["data"]["mountPath"] == "/var/lib/sealgate"


def _proxy_env(rendered: Rendered) -> dict[str, Any]:
    spec = rendered.get("Deployment", "sealgate")["spec"]["template"]["spec"]
    proxy = next(c for c in spec["containers"] if c["name"] == "proxy")
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in proxy["env"]}


def _policy(rendered: Rendered, name: str) -> dict[str, Any]:
    spec: dict[str, Any] = rendered.get("NetworkPolicy", name)["spec"]
    return spec


def _selected_component(policy: dict[str, Any]) -> str:
    return str(policy["podSelector"]["matchLabels"]["app.kubernetes.io/component"])


@pytest.mark.parametrize("data_dir", ["/var/lib/sealgate", "/data/"])
def test_signing_keys_live_in_memory(render: Any, data_dir: str) -> None:
    """keys/ (log signing key, session secret) is a memory-backed emptyDir: under Confidential
    Containers it stays in the pod VM's memory instead of host-visible disk."""
    rendered: Rendered = render({"proxy": {"dataDir": data_dir}})
    spec = rendered.get("Deployment", "sealgate")["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert volumes["keys"]["emptyDir"]["medium"] == "Memory"
    assert volumes["keys"]["emptyDir"]["sizeLimit"]
    (proxy,) = [c for c in spec["containers"] if c["name"] == "proxy"]
    mounts = {m["name"]: m["mountPath"] for m in proxy["volumeMounts"]}
    assert mounts["data"] == data_dir
    assert mounts["keys"] == data_dir.rstrip("/") + "/keys"


def test_vllm_has_no_egress_and_only_proxy_ingress(each_render: Rendered) -> None:
    policy = _policy(each_render, "sealgate-vllm")
    assert _selected_component(policy) == "vllm"
    assert set(policy["policyTypes"]) == {"Ingress", "Egress"}
    assert policy["egress"] == []
    (rule,) = policy["ingress"]
    (peer,) = rule["from"]
    assert peer["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == "proxy"
    assert rule["ports"] == [{"port": 8000, "protocol": "TCP"}]


def test_default_deny_covers_proxy_and_vllm(each_render: Rendered) -> None:
    policy = _policy(each_render, "sealgate-default-deny")
    assert set(policy["policyTypes"]) == {"Ingress", "Egress"}
    assert "ingress" not in policy and "egress" not in policy
    (expr,) = policy["podSelector"]["matchExpressions"]
    assert expr["operator"] == "In" and set(expr["values"]) == {"proxy", "vllm"}


def test_proxy_egress_is_vllm_dns_and_database_only(each_render: Rendered) -> None:
    policy = _policy(each_render, "sealgate-proxy")
    assert _selected_component(policy) == "proxy"
    ports = sorted((p["port"], p["protocol"]) for r in policy["egress"] for p in r["ports"])
    database = [(5432, "TCP")] if _proxy_env(each_render).get("SEALGATE_AUDIT_URL") else []
    assert ports == sorted([(53, "TCP"), (53, "UDP"), (8000, "TCP"), *database])
    for rule in policy["egress"]:
        assert rule.get("to"), "every proxy egress rule names its destination"


def test_production_ingress_is_restricted_but_admits_the_test_hook(
    production_render: Rendered,
) -> None:
    (rule,) = _policy(production_render, "sealgate-proxy")["ingress"]
    components = [
        p["podSelector"]["matchLabels"].get("app.kubernetes.io/component")
        for p in rule["from"]
        if "podSelector" in p
    ]
    assert components == ["test"]
    assert rule["ports"] == [{"port": "http", "protocol": "TCP"}]


def test_helm_test_hook_fetches_the_identity_document(each_render: Rendered) -> None:
    (pod,) = each_render.of_kind("Pod")
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    (container,) = pod["spec"]["containers"]
    assert container["image"].startswith("curlimages/curl:")
    assert "--fail" in container["args"]
    assert container["args"][-1] == "http://sealgate:8080/.well-known/sealgate/identity"
    assert pod["spec"]["restartPolicy"] == "Never"


def test_each_replica_signs_under_its_own_log_origin(production_render: Rendered) -> None:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from audit import SignedCheckpoint, vkey_for

    spec = production_render.get("Deployment", "sealgate")["spec"]["template"]["spec"]
    env = next(c for c in spec["containers"] if c["name"] == "proxy")["env"]
    names = [e["name"] for e in env]
    assert names.index("POD_NAME") < names.index("SEALGATE_LOG_ORIGIN")  # defined before use
    assert env[names.index("POD_NAME")]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    origin = env[names.index("SEALGATE_LOG_ORIGIN")]["value"]
    assert origin == "sealgate.sealgate/audit/$(POD_NAME)"
    pod_origin = origin.replace("$(POD_NAME)", "sealgate-7d9c5b8f6-x2x9q")
    key = Ed25519PrivateKey.generate()  # the origin names the checkpoints' signer
    signed = SignedCheckpoint.sign(pod_origin, 1, b"\0" * 32, key)
    assert SignedCheckpoint.parse(signed.note, vkey_for(pod_origin, key.public_key())) == signed



def test_commands_run_in_the_pod_read_the_deployed_config(each_render: Rendered) -> None:
    """`kubectl exec ... sealgate config show` (or `audit verify`, `keys create`) reads the file
    `serve --config` reads, not the built-in defaults."""
    spec = each_render.get("Deployment", "sealgate")["spec"]["template"]["spec"]
    (proxy,) = [c for c in spec["containers"] if c["name"] == "proxy"]
    config = proxy["args"][proxy["args"].index("--config") + 1]
    assert _proxy_env(each_render)["SEALGATE_CONFIG"] == config
    assert config in {m["mountPath"] for m in proxy["volumeMounts"]}


def test_only_the_proxy_holds_the_key_vllm_requires(each_render: Rendered, render: Any) -> None:
    """vLLM refuses /v1 requests without the key (VLLM_API_KEY is its --api-key); the proxy
    sends it (the vllm backend's api_key_env), both from one Secret the chart makes with a
    random key: a pod the NetworkPolicy fails to keep out still cannot reach the model around
    policy and audit."""
    vllm = each_render.get("Deployment", "sealgate-vllm")["spec"]["template"]["spec"]["containers"][0]
    served = {e["name"]: e.get("valueFrom") for e in vllm["env"]}["VLLM_API_KEY"]
    sent = _proxy_env(each_render)["UPSTREAM_API_KEY_VLLM"]
    assert served == sent == {"secretKeyRef": {"name": "sealgate-vllm-api-key", "key": "api-key"}}
    secret = each_render.get("Secret", "sealgate-vllm-api-key")
    key = base64.b64decode(secret["data"]["api-key"])
    assert len(key) == 48 and key.isalnum()
    assert key != base64.b64decode(render().get("Secret", "sealgate-vllm-api-key")["data"]["api-key"])
    # An existing Secret instead: none is made, both sides name it.
    own = render({"vllm": {"apiKeySecret": {"name": "my-vllm-key", "key": "token"}}})
    assert own.of_kind("Secret") == []
    vllm = own.get("Deployment", "sealgate-vllm")["spec"]["template"]["spec"]["containers"][0]
    ref = {"secretKeyRef": {"name": "my-vllm-key", "key": "token"}}
    assert {e["name"]: e.get("valueFrom") for e in vllm["env"]}["VLLM_API_KEY"] == ref
    assert _proxy_env(own)["UPSTREAM_API_KEY_VLLM"] == ref
