"""values.schema.json and the template guards: bad values stop the install with a clear reason."""

from __future__ import annotations

import json
import shutil
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from inference._vllm import _RESERVED
from tests.conftest import ROOT, need
from tests.helm.conftest import (
    CHART_DIR,
    KUBE_VERSION,
    Rendered,
    helm_module,
    installable,
    kube_validate_module,
    production_values,
)

# (case id, values YAML, text the error must contain)
BAD_VALUES = [
    ("replicas-string", "proxy:\n  replicas: three\n", "/proxy/replicas"),
    ("replicas-zero", "proxy:\n  replicas: 0\n", "/proxy/replicas"),
    ("unknown-top-level-key", "replica: 3\n", "replica"),
    ("unknown-nested-key", "proxy:\n  replica: 3\n", "replica"),
    ("evidence-provider-unknown", "confidential:\n  evidenceProvider: sev\n", "evidenceProvider"),
    ("tsm-mount-unknown", "confidential:\n  configfsTsm:\n    mount: yes-please\n", "mount"),
    ("policy-engine-unknown", "policy:\n  engine: cedar\n", "engine"),
    ("policy-file-path", "policy:\n  files:\n    rego/../authz.rego: x\n", "rego/../authz.rego"),
    ("policy-file-outside-bundle", "policy:\n  files:\n    authz.rego: x\n", "authz.rego"),
    # A hidden file is no part of a bundle (load_bundle skips it): refused, not shipped unread.
    ("policy-file-dot-rego", "policy:\n  files:\n    rego/.shadow.rego: x\n", "rego/.shadow.rego"),
    ("policy-file-dot-data", "policy:\n  files:\n    data/.hidden.yaml: x\n", "data/.hidden.yaml"),
    ("policy-file-dot-folder", "policy:\n  files:\n    data/.d/x.yaml: x\n", "data/.d/x.yaml"),
    ("log-flag-unknown", "vllm:\n  requestLogFlag: --log-requests\n", "requestLogFlag"),
    # OPA at debug logs request bodies: decision inputs hold client paths and metadata keys.
    ("opa-debug-log", "opa:\n  logLevel: debug\n", "logLevel"),
    ("tp-zero", "vllm:\n  tensorParallelSize: 0\n", "tensorParallelSize"),
    ("metrics-path", "metrics:\n  path: /prom\n", "path"),  # the proxy serves /metrics only
    ("model-name-too-long", "models:\n  " + "m" * 129 + ":\n    backend: vllm\n", "m" * 129),
    (
        "backend-url-with-credentials",
        "backends:\n  up:\n    type: openai\n    url: http://u:p@up:8000/v1\n",
        "url",
    ),
    (
        "backend-type-unknown",
        "backends:\n  up:\n    type: bedrock\n    url: http://up/v1\n",
        "type",
    ),
    (
        "retention-tier-unknown",
        "models:\n  m:\n    backend: vllm\n    retentionTier: forever\n",
        "retentionTier",
    ),
    ("digest-malformed", "image:\n  digest: sha256:abc\n", "digest"),
    # No appVersion to fall back on: a tag or a digest, never an implicit latest.
    ("opa-unpinned", "opa:\n  image:\n    tag: ''\n", "/opa/image"),
    ("vllm-unpinned", "vllm:\n  image:\n    tag: ''\n", "/vllm/image"),
    ("test-hook-unpinned", "tests:\n  image:\n    tag: ''\n", "/tests/image"),
    ("tag-malformed", "vllm:\n  image:\n    tag: 'v1 latest'\n", "/vllm/image/tag"),
    ("resources-limits-removed", "opa:\n  resources:\n    limits: null\n", "limits"),
    ("claim-not-a-string", "vllm:\n  modelStorage: {existingClaim: 7}\n", "existingClaim"),
]

# (case id, values, text the render error must contain)
BAD_COMBINATIONS = [
    (
        "simulated-in-production",
        {"confidential": {"evidenceProvider": "simulated"}},
        "simulated needs proxy.deploymentMode=development",
    ),
    ("replicas-without-postgres", {"proxy": {"replicas": 3}}, "needs postgresql.enabled"),
    (
        "hpa-without-postgres",
        {"proxy": {"autoscaling": {"enabled": True}}},
        "needs postgresql.enabled",
    ),
    ("postgres-without-secret", {"postgresql": {"enabled": True}}, "existingSecret"),
    (
        "create-secret-without-url",
        {"postgresql": {"enabled": True, "createSecret": True}},
        "createSecret needs postgresql.url",
    ),
    (
        "both-secret-sources",
        {"postgresql": {"enabled": True, "createSecret": True, "existingSecret": "x", "url": "u"}},
        "not both",
    ),
    (
        "postgres-egress-to-anywhere",
        {"postgresql": {"enabled": True, "existingSecret": "audit-db"}},
        "needs postgresql.egress.to",
    ),
    (
        "model-names-unknown-backend",
        {"models": {"m": {"backend": "nowhere", "retentionTier": "attested-zero"}}},
        'names backend "nowhere"',
    ),
    (
        "no-model-route",
        {"vllm": {"enabled": False}},
        "no model route",
    ),
    (
        "backends-sharing-a-key-variable",
        {"backends": {n: {"type": "openai", "url": "https://up.example/v1",
                          "apiKeySecret": {"name": n, "key": "k"}} for n in ("a-b", "a_b")}},
        "share the API key variable UPSTREAM_API_KEY_A_B",
    ),
    (
        "hardware-evidence-without-release-measurement",
        {"confidential": {"evidenceProvider": "configfs-tsm"}},
        "proxy.releaseMeasurement is required with a hardware evidence provider",
    ),
    ("vllm-request-logging-on", {"vllm": {"extraArgs": ["--enable-log-requests"]}},
     "may not set --enable-log-requests"),
    ("vllm-output-logging-abbreviated", {"vllm": {"extraArgs": ["--enable-log-o=true"]}},
     "may not set --enable-log-o"),
    ("vllm-port-override", {"vllm": {"extraArgs": ["--port", "9"]}}, "may not set --port"),
    ("vllm-middleware", {"vllm": {"extraArgs": ["--middleware=x.Log"]}}, "may not set --middleware"),
    ("vllm-underscore-spelling", {"vllm": {"extraArgs": ["--enable_log_requests"]}},
     "may not set --enable-log-requests"),
    (
        "service-monitor-without-metrics",
        {"metrics": {"serviceMonitor": {"enabled": True}}},
        "needs metrics.enabled",
    ),
    # SEALGATE_* variables win over sealgate.toml: a setting the chart controls would be ignored.
    ("extra-config-sets-region", {"proxy": {"extraConfig": 'region = "eu"\n'}},
     "may not set region, which the chart controls"),
    ("extra-config-quoted-key",
     {"proxy": {"extraConfig": "policy_timeout_ms = 500\n  'log_level' = 'debug'\n"}},
     "use proxy.logLevel"),
    ("extra-config-sets-audit-url",
     {"proxy": {"extraConfig": 'audit_url = "postgresql+psycopg://u:p@db/sealgate"\n'}},
     "use postgresql.existingSecret"),
]


# An in-cluster database selected by its pods' labels.
DB_EGRESS = {
    "to": [
        {
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "databases"}},
            "podSelector": {"matchLabels": {"app.kubernetes.io/name": "postgresql"}},
        }
    ]
}
DIGEST = "sha256:" + "ab" * 32


def test_schema_is_valid_draft7() -> None:
    import jsonschema

    schema = json.loads((CHART_DIR / "values.schema.json").read_text())
    jsonschema.Draft7Validator.check_schema(schema)


def test_shipped_values_pass_the_schema(chart: Any) -> None:
    chart.validate_schema(None)
    chart.validate_schema(production_values())


@pytest.mark.parametrize(
    ("text", "needle"), [c[1:] for c in BAD_VALUES], ids=[c[0] for c in BAD_VALUES]
)
def test_schema_rejects_bad_values_file(chart: Any, tmp_path: Path, text: str, needle: str) -> None:
    helm = helm_module()
    values_file = tmp_path / "values-bad.yaml"
    values_file.write_text(text)
    values = helm.values_from_yaml(values_file.read_text())
    with pytest.raises(helm.HelmValuesError) as caught:
        chart.validate_schema(values)
    assert needle in str(caught.value)
    # An install renders through the same check, so nothing is produced either.
    with pytest.raises(helm.HelmError):
        chart.render(values, name="sealgate", namespace="sealgate")


@pytest.mark.parametrize(
    ("values", "needle"), [c[1:] for c in BAD_COMBINATIONS], ids=[c[0] for c in BAD_COMBINATIONS]
)
def test_guards_reject_unsafe_combinations(chart: Any, values: dict[str, Any], needle: str) -> None:
    helm = helm_module()
    chart.validate_schema(values)  # well-typed: only the combination is wrong
    with pytest.raises(helm.HelmRenderError) as caught:
        chart.render(values, name="sealgate", namespace="sealgate")
    assert needle in str(caught.value)


@pytest.mark.parametrize("flag", _RESERVED)
def test_the_chart_refuses_every_vllm_option_the_gateway_refuses(chart: Any, flag: str) -> None:
    """The chart's list of vLLM options it will not pass is the gateway's (inference/_vllm.py):
    a chart that let one through would start vLLM with it before the gateway could refuse."""
    helm = helm_module()
    for arg in (f"{flag}=x", f"{flag}.key", f"--{flag[2:].replace('-', '_')}.key+=x"):  # vLLM's forms
        with pytest.raises(helm.HelmRenderError) as caught:
            chart.render({"vllm": {"extraArgs": [arg]}}, name="sealgate", namespace="sealgate")
        assert f"may not set {flag}" in str(caught.value)


def test_created_secret_holds_the_url_and_nothing_else_does(render: Any) -> None:
    url = "postgresql+psycopg://audit:s3cr3t-pw@db.internal:5432/sealgate"
    rendered: Rendered = render(
        {"postgresql": {"enabled": True, "createSecret": True, "url": url, "egress": DB_EGRESS}}
    )
    secret = rendered.get("Secret", "sealgate-audit-db")
    assert "stringData" not in secret
    everything_else = [o for o in rendered.objects if o["kind"] != "Secret"]
    assert "s3cr3t-pw" not in yaml.safe_dump_all(everything_else)


def test_trusted_proxies_reach_the_gateway_as_one_setting_it_accepts(render: Any) -> None:
    from proxy.config import Settings

    def proxy_env(values: dict[str, Any]) -> dict[str, Any]:
        spec = render(values).get("Deployment", "sealgate")["spec"]["template"]["spec"]
        (proxy,) = [c for c in spec["containers"] if c["name"] == "proxy"]
        return {e["name"]: e.get("value") for e in proxy["env"]}

    assert "SEALGATE_TRUSTED_PROXIES" not in proxy_env({})  # the gateway's default: loopback
    value = proxy_env({"proxy": {"trustedProxies": ["10.0.0.0/8", "fd00::/8", "192.0.2.7"]}})[
        "SEALGATE_TRUSTED_PROXIES"]
    settings = Settings.load(None, env={"SEALGATE_TRUSTED_PROXIES": value})
    assert settings.trusted_proxy_list == ["10.0.0.0/8", "fd00::/8", "192.0.2.7"]

    assert "SEALGATE_TENANT_MAX_CONCURRENT" not in proxy_env({})  # no limit
    value = proxy_env({"proxy": {"tenantMaxConcurrent": 8}})["SEALGATE_TENANT_MAX_CONCURRENT"]
    assert Settings.load(None, env={"SEALGATE_TENANT_MAX_CONCURRENT": value}).tenant_max_concurrent == 8
    assert "SEALGATE_TENANT_REQUESTS_PER_MINUTE" not in proxy_env({})
    value = proxy_env({"proxy": {"tenantRequestsPerMinute": 600}})[
        "SEALGATE_TENANT_REQUESTS_PER_MINUTE"]
    settings = Settings.load(None, env={"SEALGATE_TENANT_REQUESTS_PER_MINUTE": value})
    assert settings.tenant_requests_per_minute == 600
    assert "SEALGATE_TENANT_TOKENS_PER_MINUTE" not in proxy_env({})
    value = proxy_env({"proxy": {"tenantTokensPerMinute": 200000}})[
        "SEALGATE_TENANT_TOKENS_PER_MINUTE"]
    settings = Settings.load(None, env={"SEALGATE_TENANT_TOKENS_PER_MINUTE": value})
    assert settings.tenant_tokens_per_minute == 200000


def test_database_egress_goes_only_to_the_named_peers(render: Any) -> None:
    values = {"postgresql": {"enabled": True, "existingSecret": "audit-db", "egress": DB_EGRESS}}
    egress = render(values).get("NetworkPolicy", "sealgate-proxy")["spec"]["egress"]
    (rule,) = [r for r in egress if {"port": 5432, "protocol": "TCP"} in r["ports"]]
    assert rule["to"] == DB_EGRESS["to"]


def test_database_without_network_policy_needs_no_peers(render: Any) -> None:
    values = {
        "postgresql": {"enabled": True, "existingSecret": "audit-db"},
        "networkPolicy": {"enabled": False},
    }
    assert not render(values).of_kind("NetworkPolicy")


def test_images_pin_by_digest_and_never_fall_back_to_latest(
    chart: Any, render: Any, each_render: Rendered
) -> None:
    images = [c["image"] for _, spec in each_render.pod_specs() for c in spec["containers"]]
    assert images and not [i for i in images if i.endswith(":latest") or ":" not in i]
    pinned = {"image": {"tag": "", "digest": DIGEST}}
    values = {"opa": pinned, "vllm": pinned, "tests": pinned}
    chart.validate_schema(values)
    rendered: Rendered = render(values)
    images = [c["image"] for _, spec in rendered.pod_specs() for c in spec["containers"]]
    assert sorted(images) == sorted(
        [
            "ghcr.io/sealgate/sealgate:0.1.0",
            f"openpolicyagent/opa@{DIGEST}",
            f"vllm/vllm-openai@{DIGEST}",
            f"curlimages/curl@{DIGEST}",
        ]
    )


def test_simulated_development_drops_the_tsm_mount(render: Any) -> None:
    rendered: Rendered = render(
        {
            "confidential": {"evidenceProvider": "simulated"},
            "proxy": {"deploymentMode": "development"},
        }
    )
    spec = rendered.get("Deployment", "sealgate")["spec"]["template"]["spec"]
    assert all("hostPath" not in v for v in spec["volumes"])
    assert "evidence is simulated" in rendered.manifests["sealgate/templates/NOTES.txt"]


def test_each_client_address_stays_on_one_replica(render: Any) -> None:
    """Each replica has its own OHTTP keys: a client sealed to one replica's keys that the
    Service sent to another got ohttp_unknown_key (about two requests in three with three
    replicas). The Service keeps each client address on one replica unless told otherwise."""
    production = yaml.safe_load((ROOT / "helm" / "sealgate" / "values-production.yaml").read_text())
    for values, expected in ((None, "ClientIP"), (production, "ClientIP"),
                             ({"proxy": {"service": {"type": "ClusterIP", "port": 8080,
                                                     "sessionAffinity": "None"}}}, "None")):
        service = render(values).get("Service", "sealgate")
        assert service["spec"]["sessionAffinity"] == expected


def test_external_upstream_instead_of_vllm(render: Any) -> None:
    values = {
        "vllm": {"enabled": False},
        "backends": {
            "upstream": {
                "type": "openai",
                "url": "https://upstream.example/v1",
                "apiKeySecret": {"name": "upstream-key", "key": "api-key"},
            }
        },
        "models": {
            "gpt-4o-mini": {"backend": "upstream", "retentionTier": "contractual-zero"},
        },
        "networkPolicy": {
            "extraProxyEgress": [
                {"to": [{"ipBlock": {"cidr": "203.0.113.10/32"}}], "ports": [{"port": 443}]}
            ]
        },
    }
    rendered: Rendered = render(values)
    assert not [o for o in rendered.objects if o["metadata"]["name"].startswith("sealgate-vllm")]
    config = tomllib.loads(rendered.get("ConfigMap", "sealgate-config")["data"]["sealgate.toml"])
    assert config["backends"] == {
        "upstream": {
            "type": "openai",
            "url": "https://upstream.example/v1",
            "api_key_env": "UPSTREAM_API_KEY_UPSTREAM",
        }
    }
    assert config["models"] == {
        "gpt-4o-mini": {"backend": "upstream", "retention_tier": "contractual-zero"}
    }
    spec = rendered.get("Deployment", "sealgate")["spec"]["template"]["spec"]
    env = {e["name"]: e for e in spec["containers"][0]["env"]}
    assert env["UPSTREAM_API_KEY_UPSTREAM"] == {
        "name": "UPSTREAM_API_KEY_UPSTREAM",
        "valueFrom": {"secretKeyRef": {"name": "upstream-key", "key": "api-key"}},
    }
    egress = rendered.get("NetworkPolicy", "sealgate-proxy")["spec"]["egress"]
    ports = sorted(p["port"] for rule in egress for p in rule["ports"])
    assert ports == [53, 53, 443]


def test_policy_files_from_values_change_the_rollout_checksum(
    render: Any, default_render: Rendered
) -> None:
    rego = "package sealgate.authz\n\nimport rego.v1\n\ndefault allow := false\n"
    rendered: Rendered = render({"policy": {"files": {"rego/authz.rego": rego}}})
    assert rendered.get("ConfigMap", "sealgate-policy")["data"] == {"rego__authz.rego": rego}

    def checksum(r: Rendered) -> str:
        meta = r.get("Deployment", "sealgate")["spec"]["template"]["metadata"]
        return str(meta["annotations"]["checksum/policy"])

    assert checksum(rendered) != checksum(default_render)
    notes = "sealgate/templates/NOTES.txt"
    assert "carries no policy bundle" not in rendered.manifests[notes]
    assert "carries no policy bundle" in default_render.manifests[notes]


def _chart_copy_with_policy(tmp_path: Path, files: dict[str, str]) -> Path:
    """A copy of the chart with bundle files (path → text) placed as the release step does."""
    copy_dir = tmp_path / "chart" / "sealgate"
    shutil.copytree(CHART_DIR, copy_dir)
    for rel, text in files.items():
        target = copy_dir / "policy" / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
    return copy_dir


def _render_dir(chart_dir: Path, values: dict[str, Any] | None = None) -> Rendered:
    helm = helm_module()
    with helm.Chart.load(chart_dir) as loaded:
        return Rendered(loaded.render(installable(values), name="sealgate", namespace="sealgate"))


def _mounted_bundle(rendered: Rendered, into: Path) -> Path:
    """Lay the policy ConfigMap out as the kubelet does from the pod's volume items."""
    data = rendered.get("ConfigMap", "sealgate-policy")["data"]
    spec = rendered.get("Deployment", "sealgate")["spec"]["template"]["spec"]
    (volume,) = [v for v in spec["volumes"] if v["name"] == "policy"]
    for item in volume["configMap"]["items"]:
        target = into / item["path"]
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(data[item["key"]])
    return into


def test_policy_folder_is_packaged_and_values_overlay_it(tmp_path: Path) -> None:
    shipped = {
        "rego/authz.rego": "package sealgate.authz\n",
        "data/contracts.yaml": "contracts:\n  default: {}\n",
        "data/limits/table.json": '{"rows": []}\n',
    }
    chart_dir = _chart_copy_with_policy(tmp_path, shipped)
    rendered = _render_dir(chart_dir)
    mounted = _mounted_bundle(rendered, tmp_path / "mounted")
    found = {p.relative_to(mounted).as_posix() for p in mounted.rglob("*") if p.is_file()}
    assert found == set(shipped)  # the folder's README stays out (.helmignore)
    kv = kube_validate_module()
    for kind, name in (("ConfigMap", "sealgate-policy"), ("Deployment", "sealgate")):
        kv.validate(rendered.get(kind, name), KUBE_VERSION, strict=True)
    overlay = {"policy": {"files": {"rego/authz.rego": "package sealgate.authz\n# override\n"}}}
    data = _render_dir(chart_dir, overlay).get("ConfigMap", "sealgate-policy")["data"]
    assert data["rego__authz.rego"].endswith("# override\n")
    assert data["data__contracts.yaml"] == shipped["data/contracts.yaml"]


@pytest.mark.parametrize("rel", ["rego/.shadow.rego", "data/.hidden.yaml", "data/.d/x.yaml"])
def test_dot_named_file_in_the_chart_policy_folder_is_refused(tmp_path: Path, rel: str) -> None:
    """The schema guards policy.files; the chart's own folder is checked at render time."""
    helm = helm_module()
    chart_dir = _chart_copy_with_policy(tmp_path, {"rego/authz.rego": "package a\n", rel: "x\n"})
    with pytest.raises(helm.HelmRenderError) as caught:
        _render_dir(chart_dir)
    assert f'policy file "{rel}"' in str(caught.value)


def test_repository_bundle_mounts_with_the_same_digest(tmp_path: Path) -> None:
    """The release copy step, then the pod's view: the proxy attests the source digest."""
    try:
        from policy import load_bundle
    except ImportError as exc:
        need(False, f"policy package unavailable: {exc}")
    source = ROOT / "policy"
    need((source / "rego").is_dir(), f"no policy bundle under {source} yet")
    rels = [p.relative_to(source).as_posix() for p in sorted(source.rglob("*"))]
    files = {
        rel: (source / rel).read_text()
        for rel in rels
        if (rel.startswith("rego/") and rel.endswith(".rego"))
        or (rel.startswith("data/") and rel.endswith((".yaml", ".yml", ".json")))
    }
    rendered = _render_dir(_chart_copy_with_policy(tmp_path, files))
    mounted = _mounted_bundle(rendered, tmp_path / "mounted")
    assert load_bundle(mounted).digest == load_bundle(source).digest

    spec = rendered.get("Deployment", "sealgate")["spec"]["template"]["spec"]
    containers = {c["name"]: c for c in spec["containers"]}
    env = {e["name"]: e.get("value") for e in containers["proxy"]["env"]}
    assert env["SEALGATE_POLICY_BUNDLE"] == "/etc/sealgate/policy"
    assert not any(a.startswith("/") for a in containers["opa"]["args"])  # installed by the proxy
    # A ConfigMap (with its metadata) must stay under the 1 MiB object limit.
    policy_map = rendered.get("ConfigMap", "sealgate-policy")
    assert len(json.dumps(policy_map).encode()) < 1_000_000


def test_extra_config_holds_top_level_settings_and_names_with_at_and_plus_load(
        render: Any, tmp_path: Path) -> None:
    try:
        from proxy.config import Settings
    except ImportError as exc:
        need(False, f"proxy.config unavailable: {exc}")
    rendered: Rendered = render({
        "proxy": {"extraConfig": "policy_timeout_ms = 500\naudit_sync = \"full\"\n"},
        "models": {"team@v1+fast": {"backend": "vllm", "retentionTier": "attested-zero"}},
    })
    config = tmp_path / "sealgate.toml"
    config.write_text(rendered.get("ConfigMap", "sealgate-config")["data"]["sealgate.toml"])
    settings = Settings.load(config, env={})
    assert (settings.policy_timeout_ms, settings.audit_sync) == (500, "full")
    assert "team@v1+fast" in settings.models and "llama-3.1-8b-instruct" in settings.models


def test_extra_config_may_not_set_what_the_chart_controls(chart: Any, render: Any) -> None:
    """Every setting the chart passes as a SEALGATE_* variable, or as a serve argument, wins
    over sealgate.toml: in proxy.extraConfig it is refused, not silently ignored."""
    helm = helm_module()
    rendered: Rendered = render({
        "proxy": {"trustedProxies": ["10.0.0.0/8"], "tenantMaxConcurrent": 4,
                  "tenantRequestsPerMinute": 60, "tenantTokensPerMinute": 10000,
                  "releaseMeasurement": "ab" * 48,
                  "sessionSecret": {"existingSecret": "session"}},
        "policy": {"files": {"rego/authz.rego": "package sealgate.authz\n"}},
        "postgresql": {"enabled": True, "existingSecret": "audit-db", "egress": DB_EGRESS},
    })
    (proxy,) = [c for c in rendered.get("Deployment", "sealgate")["spec"]["template"]["spec"]
                ["containers"] if c["name"] == "proxy"]
    # SEALGATE_CONFIG names the file extraConfig goes into, not a setting.
    keys = {e["name"].removeprefix("SEALGATE_").lower() for e in proxy["env"]
            if e["name"].startswith("SEALGATE_") and e["name"] != "SEALGATE_CONFIG"}
    assert {"region", "log_origin", "opa_url", "database_url"} <= keys
    keys |= {a.removeprefix("--") for a in proxy["args"] if a in ("--host", "--port")}
    for key in sorted(keys):
        with pytest.raises(helm.HelmRenderError) as caught:
            chart.render({"proxy": {"extraConfig": f"{key} = 1\n"}},
                         name="sealgate", namespace="sealgate")
        assert f"may not set {key}," in str(caught.value)


def test_extra_config_tables_may_hold_keys_named_like_controlled_settings(render: Any) -> None:
    """Only top-level keys are the chart's: the same name inside a table is another setting."""
    extra = ('policy_timeout_ms = 500\n\n[backends."local"]  # a supervised vLLM child\n'
             'type = "vllm"\nmodel = "/models/m"\nport = 8012\n')
    rendered: Rendered = render({"proxy": {"extraConfig": extra}})
    toml = rendered.get("ConfigMap", "sealgate-config")["data"]["sealgate.toml"]
    assert "port = 8012" in toml
