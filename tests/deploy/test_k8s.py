"""The Kubernetes manifests validated offline against the Kubernetes schemas
(kubernetes-validate, strict), and checked against the settings classes and the beats' needs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import kubernetes_validate  # type: ignore[import-untyped]
import pytest
import yaml

from beats.cli import RUN

K8S = Path(__file__).parent.parent.parent / "deploy" / "k8s"
MANIFESTS = sorted(p for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml")


def documents(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def workloads() -> list[dict[str, Any]]:
    return [
        d for p in MANIFESTS for d in documents(p) if d["kind"] in ("StatefulSet", "Deployment")
    ]


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_manifest_is_valid_kubernetes(path: Path) -> None:
    for document in documents(path):
        kubernetes_validate.validate(document, "1.37", strict=True)


def test_the_validator_rejects_a_broken_manifest() -> None:
    broken = documents(K8S / "gateway.yaml")[0]
    broken["spec"]["template"]["spec"]["containers"][0]["livenessProbe"]["httpGet"]["port"] = []
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, "1.37", strict=True)


def test_kustomization_lists_every_manifest_but_the_secret_example() -> None:
    listed = yaml.safe_load((K8S / "kustomization.yaml").read_text())["resources"]
    assert sorted(listed) == sorted(p.name for p in MANIFESTS if p.name != "secret.example.yaml")


@pytest.mark.parametrize("workload", workloads(), ids=lambda w: w["metadata"]["name"])
def test_workload_probes_resources_and_settings(workload: dict[str, Any]) -> None:
    (container,) = workload["spec"]["template"]["spec"]["containers"]
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert {"requests", "limits"} <= set(container["resources"])
    assert container["securityContext"]["runAsNonRoot"] is True
    _, what = container["args"]
    settings_class, _ = RUN[what].load()
    config = documents(K8S / "config.yaml")[0]["data"]
    shared = config if container.get("envFrom") else {}
    for name in [*shared, *(e["name"] for e in container["env"])]:
        assert name.removeprefix("BEATS_").lower() in settings_class.model_fields, name
    port = next(int(e["value"]) for e in container["env"] if e["name"] == "BEATS_PORT")
    assert port == settings_class.model_fields["port"].default
    if workload["kind"] == "StatefulSet":  # a beat: its event log needs a volume
        (claim,) = workload["spec"]["volumeClaimTemplates"]
        mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
        assert mounts[claim["metadata"]["name"]] == config["BEATS_DATA_DIR"]
        assert workload["metadata"]["annotations"]["works-beats/scaling"]
