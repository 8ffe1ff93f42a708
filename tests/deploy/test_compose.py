"""docker-compose.yml checked without a Docker engine: the Compose Specification's JSON schema
(vendored by check-jsonschema), every service's settings against the settings classes of the
command it runs, ports against the defaults, health checks, dependency conditions, profiles,
referenced files, and the variables .env.example must document."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from beats.cli import EMULATE, RUN, SIMULATE, Command
from common.metrics import Metrics
from gateway.metrics import GatewayMetrics

ROOT = Path(__file__).parent.parent.parent
COMPOSE_FILE = ROOT / "docker-compose.yml"
COMPOSE: dict[str, Any] = yaml.safe_load(COMPOSE_FILE.read_text())
SERVICES: dict[str, Any] = COMPOSE["services"]
BIN = Path(sys.executable).parent
TABLES = {"run": RUN, "emulate": EMULATE, "simulate": SIMULATE}
UPSTREAM = {
    "hivemq-beat": "hivemq",
    "fiware-beat": "orion",
    "opencti-beat": "opencti-emulator",
    "ditto-beat": "ditto-emulator",
}


def ours() -> dict[str, tuple[Command, dict[str, str]]]:
    """The services that run the project's image: their command and environment."""
    found = {}
    for name, service in SERVICES.items():
        if str(service.get("image", "")).startswith("works-beats:"):
            verb, what = service["command"]
            found[name] = (
                TABLES[verb][what],
                {k: str(v) for k, v in service["environment"].items()},
            )
    return found


def check_schema(path: Path) -> subprocess.CompletedProcess[str]:
    command = [str(BIN / "check-jsonschema"), "--builtin-schema", "vendor.compose-spec", str(path)]
    return subprocess.run(command, capture_output=True, text=True, check=False)


def test_compose_file_is_valid_against_the_compose_specification(tmp_path: Path) -> None:
    result = check_schema(COMPOSE_FILE)
    assert result.returncode == 0, result.stdout + result.stderr
    broken = tmp_path / "docker-compose.yml"
    broken.write_text(COMPOSE_FILE.read_text().replace("condition: service_healthy", "when: x", 1))
    assert check_schema(broken).returncode != 0  # the validator does reject a bad file


@pytest.mark.parametrize("name", sorted(ours()))
def test_every_variable_is_an_option_of_the_command(name: str) -> None:
    command, environment = ours()[name]
    settings_class, _ = command.load()
    for variable in environment:
        assert variable.startswith("BEATS_"), f"{name}: {variable} is not a BEATS_ variable"
        field = variable.removeprefix("BEATS_").lower()
        assert field in settings_class.model_fields, f"{name}: {variable} is no option"


@pytest.mark.parametrize("name", sorted(ours()))
def test_ports_are_the_documented_defaults(name: str) -> None:
    command, environment = ours()[name]
    settings_class, _ = command.load()
    if "port" not in settings_class.model_fields:
        return  # simulators serve nothing
    port = int(environment.get("BEATS_PORT", settings_class.model_fields["port"].default))
    assert port == settings_class.model_fields["port"].default
    published = [str(p).split(":")[-1] for p in SERVICES[name].get("ports", [])]
    assert published in ([], [str(port)])
    assert f"127.0.0.1:{port}/healthz" in " ".join(SERVICES[name]["healthcheck"]["test"])


def test_every_service_has_a_health_check_and_waits_for_healthy_dependencies() -> None:
    for name, service in SERVICES.items():
        assert service.get("healthcheck", {}).get("test"), f"{name} has no health check"
        for dependency, spec in service.get("depends_on", {}).items():
            assert dependency in SERVICES
            assert spec == {"condition": "service_healthy"}, f"{name} → {dependency}"
    for beat, upstream in UPSTREAM.items():
        assert {"kafka", upstream} <= set(SERVICES[beat]["depends_on"])
    assert set(SERVICES["gateway"]["depends_on"]) == set(UPSTREAM)


def test_the_gateway_fronts_every_beat_on_8080() -> None:
    gateway = SERVICES["gateway"]
    assert gateway["ports"] == ["8080:8080"]
    beats = dict(spec.split("=", 1) for spec in gateway["environment"]["BEATS_BEAT"].split(","))
    for beat in UPSTREAM:
        port = SERVICES[beat]["environment"]["BEATS_PORT"]
        assert beats[beat.removesuffix("-beat")] == f"http://{beat}:{port}"


def test_profiles_and_volumes() -> None:
    profiles = {name: s.get("profiles", []) for name, s in SERVICES.items()}
    assert profiles["prometheus"] == profiles["grafana"] == ["monitoring"]
    assert profiles["spark-monitoring"] == ["spark"] and profiles["cassandra"] == ["storage"]
    core = [n for n, p in profiles.items() if not p]
    assert {"kafka", "orion", "mongo", "hivemq", "gateway", *UPSTREAM} <= set(core)
    for beat in UPSTREAM:
        (volume,) = SERVICES[beat]["volumes"]
        assert volume.endswith(":/data") and volume.split(":")[0] in COMPOSE["volumes"]
    assert "kafka-data:/var/lib/kafka/data" in SERVICES["kafka"]["volumes"]


def test_referenced_files_exist() -> None:
    for service in SERVICES.values():
        for volume in service.get("volumes", []):
            if volume.startswith("./"):
                assert (ROOT / volume.split(":")[0]).exists(), volume
        if "build" in service:
            assert (ROOT / service["build"]["dockerfile"]).exists()
    scraped = yaml.safe_load((ROOT / "deploy/prometheus/prometheus.yml").read_text())
    targets = {
        t for job in scraped["scrape_configs"] for c in job["static_configs"] for t in c["targets"]
    }
    expected = {
        f"{n}:{s['environment']['BEATS_PORT']}" for n, s in SERVICES.items() if n in UPSTREAM
    }
    assert targets == expected | {"gateway:8080"}


def test_every_variable_the_file_reads_is_in_env_example() -> None:
    used = set(re.findall(r"\$\{([A-Z_]+)", COMPOSE_FILE.read_text())) - {"BEATS_VERSION"}
    documented = set(re.findall(r"^#? ?([A-Z_]+)=", (ROOT / ".env.example").read_text(), re.M))
    assert used <= documented, used - documented
    required = set(re.findall(r"\$\{([A-Z_]+):\?", COMPOSE_FILE.read_text()))
    assert {"FIWARE_NOTIFY_SECRET", "OPENCTI_TOKEN", "DITTO_PASSWORD"} <= required
    assert not re.search(r"(PASSWORD|TOKEN|SECRET): [^$\s]", COMPOSE_FILE.read_text())


def test_the_dashboard_queries_metrics_that_exist() -> None:
    names = {m.name for reg in (Metrics("x").registry, GatewayMetrics().registry)
             for m in reg.collect()}  # fmt: skip
    exported = names | {f"{n}_total" for n in names}
    dashboard = (ROOT / "deploy/grafana/dashboards/works-beats.json").read_text()
    queried = set(re.findall(r"\b(?:beats|process)_[a-z_]+", dashboard))
    assert queried and queried <= exported, queried - exported
    assert {"process_resident_memory_bytes", "process_cpu_seconds_total"} <= queried


def test_dockerfile_passes_hadolint() -> None:
    result = subprocess.run(
        [str(BIN / "hadolint"), "--no-color", str(ROOT / "deploy/Dockerfile")],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
