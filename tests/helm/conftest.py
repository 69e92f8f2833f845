"""Chart plumbing for the Helm tests: load the chart once, render it with named value sets.

Helm runs in-process through helm-python-sdk (Helm v4's Go SDK behind a C ABI), so no ``helm``
binary is involved; a missing or unloadable native library is a missing component (``need``).
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from tests.conftest import ROOT, need

CHART_DIR = ROOT / "helm" / "sealgate"
PRODUCTION_VALUES = CHART_DIR / "values-production.yaml"
RELEASE = "sealgate"
NAMESPACE = "sealgate"
# Kubernetes minor the manifests are linted and validated against (kubernetes-validate ships
# schemas for 1.25 through 1.37; 1.31 is inside the AKS and GKE support windows).
KUBE_VERSION = "1.31.0"


def helm_module() -> Any:
    """The helm_python module, or a skip (fail under SEALGATE_REQUIRE_ALL=1) naming why not."""
    try:
        import helm_python
    except ImportError as exc:  # includes HelmLibraryError: the native library did not load
        need(False, f"helm-python-sdk unavailable: {exc}")
    except Exception as exc:
        need(False, f"helm-python-sdk native library failed to load: {exc}")
    return helm_python


def kube_validate_module() -> Any:
    """The kubernetes_validate module, or a skip naming why not."""
    try:
        import kubernetes_validate
    except ImportError as exc:
        need(False, f"kubernetes-validate unavailable: {exc}")
    return kubernetes_validate


def production_values() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(PRODUCTION_VALUES.read_text())
    return loaded


def objects_of(manifests: dict[str, str]) -> list[dict[str, Any]]:
    """Every Kubernetes object in a render result (template path → YAML stream)."""
    found: list[dict[str, Any]] = []
    for path, text in sorted(manifests.items()):
        if not path.endswith((".yaml", ".yml")):
            continue
        found.extend(doc for doc in yaml.safe_load_all(text) if doc)
    return found


class Rendered:
    """One render of the chart with its objects indexed by kind and name."""

    def __init__(self, manifests: dict[str, str]) -> None:
        self.manifests = manifests
        self.objects = objects_of(manifests)

    def of_kind(self, kind: str) -> list[dict[str, Any]]:
        return [o for o in self.objects if o["kind"] == kind]

    def get(self, kind: str, name: str) -> dict[str, Any]:
        for o in self.of_kind(kind):
            if o["metadata"]["name"] == name:
                return o
        raise AssertionError(f"{kind}/{name} not rendered")

    def pod_specs(self) -> Iterator[tuple[str, dict[str, Any]]]:
        """(kind/name, pod spec) for every workload and bare Pod."""
        for o in self.objects:
            if o["kind"] in {"Deployment", "StatefulSet", "DaemonSet", "Job"}:
                yield f"{o['kind']}/{o['metadata']['name']}", o["spec"]["template"]["spec"]
            elif o["kind"] == "Pod":
                yield f"Pod/{o['metadata']['name']}", o["spec"]


@pytest.fixture(scope="session")
def chart() -> Iterator[Any]:
    helm = helm_module()
    need(CHART_DIR.is_dir(), f"chart not found at {CHART_DIR}")
    with helm.Chart.load(CHART_DIR) as loaded:
        yield loaded


RELEASE_MEASUREMENT = "5e" * 48
"""The release measurement every install names (the chart refuses one without it)."""


def installable(values: dict[str, Any] | None) -> dict[str, Any]:
    """``values`` with what every install must set and they leave out: the release measurement."""
    merged = copy.deepcopy(values) if values else {}
    merged.setdefault("proxy", {}).setdefault("releaseMeasurement", RELEASE_MEASUREMENT)
    return merged


@pytest.fixture(scope="session")
def render(chart: Any) -> Any:
    """render(values=None) -> Rendered, as `helm template sealgate -n sealgate` would, with
    the release measurement every install sets (unless ``values`` names one)."""

    def _render(values: dict[str, Any] | None = None) -> Rendered:
        manifests = chart.render(
            installable(values),
            name=RELEASE,
            namespace=NAMESPACE,
            is_install=True,
        )
        return Rendered(manifests)

    return _render


@pytest.fixture(scope="session")
def default_render(render: Any) -> Rendered:
    return render()  # type: ignore[no-any-return]


@pytest.fixture(scope="session")
def production_render(render: Any) -> Rendered:
    return render(production_values())  # type: ignore[no-any-return]


@pytest.fixture(params=["default", "production"])
def each_render(request: pytest.FixtureRequest) -> Rendered:
    """Both value sets, one test case each."""
    return request.getfixturevalue(f"{request.param}_render")  # type: ignore[no-any-return]
