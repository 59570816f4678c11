"""Deployment files: everything that can be checked here without Docker, systemd or a cluster."""

from __future__ import annotations

import configparser
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from streamd.api.routes import ROUTES
from streamd.metrics import Metrics
from streamd.settings import load

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"
ROUTE_PATHS = {route.path for route in ROUTES}


def metric_names() -> set[str]:
    metrics = Metrics()
    names = set()
    for family in metrics.registry.collect():
        names.add(family.name)
        names.update(sample.name for sample in family.samples)
        if family.type == "counter":
            names.add(f"{family.name}_total")
        if family.type == "histogram":
            names.update(f"{family.name}_{suffix}" for suffix in ("bucket", "sum", "count"))
    # Live gauges are produced at scrape time by the stream manager.
    names.update(
        {
            "streamd_stream_state",
            "streamd_stream_fps",
            "streamd_stream_buffered_frames",
            "streamd_sink_spool_bytes",
        }
    )
    return names


def test_dashboard_queries_only_metrics_that_exist() -> None:
    dashboard = json.loads((DEPLOY / "grafana" / "streamd-dashboard.json").read_text())
    exprs = [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]
    used = {name for expr in exprs for name in re.findall(r"\bstreamd_[a-z_]+", expr)}
    assert used and used <= metric_names(), used - metric_names()
    titles = " ".join(panel["title"].lower() for panel in dashboard["panels"])
    for subject in (
        "frames per second",
        "latency",
        "dropped",
        "batch size",
        "sink",
        "streams per node",
        "failover",
    ):
        assert subject in titles


def test_compose_wires_streamd_prometheus_grafana_and_a_camera() -> None:
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    assert set(compose["services"]) == {"streamd", "prometheus", "grafana", "rtsp", "camera"}
    assert compose["services"]["streamd"]["build"]["dockerfile"] == "deploy/Dockerfile"
    assert "STREAMD_AUTH__API_KEYS" in compose["services"]["streamd"]["environment"]
    prometheus = yaml.safe_load((DEPLOY / "prometheus.yml").read_text())
    [job] = prometheus["scrape_configs"]
    assert job["metrics_path"] in ROUTE_PATHS and job["static_configs"][0]["targets"] == ["streamd:8080"]
    for name in ("datasources/prometheus.yml", "dashboards/streamd.yml"):
        assert yaml.safe_load((DEPLOY / "grafana" / "provisioning" / name).read_text())["apiVersion"] == 1


def test_kubernetes_manifests_probe_real_routes() -> None:
    documents = list(yaml.safe_load_all((DEPLOY / "k8s" / "streamd.yaml").read_text()))
    kinds = {doc["kind"]: doc for doc in documents}
    assert set(kinds) == {
        "StatefulSet",
        "PersistentVolumeClaim",
        "PodDisruptionBudget",
        "Service",
        "ServiceMonitor",
    }
    [container] = kinds["StatefulSet"]["spec"]["template"]["spec"]["containers"]
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert {"/healthz", "/readyz"} <= ROUTE_PATHS
    assert kinds["StatefulSet"]["spec"]["volumeClaimTemplates"][0]["metadata"]["name"] == "data"
    assert kinds["ServiceMonitor"]["spec"]["endpoints"][0]["path"] == "/metrics"


def test_kubernetes_replicas_form_a_cluster_on_the_database_secret() -> None:
    documents = list(yaml.safe_load_all((DEPLOY / "k8s" / "streamd.yaml").read_text()))
    kinds = {doc["kind"]: doc for doc in documents}
    spec = kinds["StatefulSet"]["spec"]
    assert spec["replicas"] > 1
    [container] = spec["template"]["spec"]["containers"]
    env = {item["name"]: item for item in container["env"]}
    assert env["STREAMD_STORAGE__DATABASE_URL"]["valueFrom"]["secretKeyRef"]["key"] == "url"
    assert env["POD_IP"]["valueFrom"]["fieldRef"]["fieldPath"] == "status.podIP"
    assert env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    # Every STREAMD_ variable names a real setting: as Kubernetes would expand them, they load.
    pod = {"POD_NAME": "streamd-0", "POD_IP": "10.0.0.7"}
    environ = {
        name: re.sub(r"\$\((\w+)\)", lambda m: pod[m.group(1)], item["value"])
        for name, item in env.items()
        if name.startswith("STREAMD_") and "value" in item
    }
    environ["STREAMD_STORAGE__DATABASE_URL"] = "postgresql://streamd@postgres:5432/streamd"
    settings = load(None, environ)
    assert settings.database_url is not None
    assert settings.cluster.node_id == "streamd-0"
    assert settings.cluster.advertise_url == "http://10.0.0.7:8080/"
    assert settings.storage.result_roots == (Path("/results"),)
    [results] = [v for v in spec["template"]["spec"]["volumes"] if v["name"] == "results"]
    assert results["persistentVolumeClaim"]["claimName"] == kinds["PersistentVolumeClaim"]["metadata"]["name"]
    assert kinds["PersistentVolumeClaim"]["spec"]["accessModes"] == ["ReadWriteMany"]
    budget = kinds["PodDisruptionBudget"]["spec"]
    assert budget["maxUnavailable"] == 1
    assert budget["selector"]["matchLabels"] == spec["selector"]["matchLabels"]


def test_systemd_unit_is_hardened() -> None:
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str  # type: ignore[assignment, method-assign]
    unit.read(DEPLOY / "streamd.service")
    service = unit["Service"]
    assert service["ExecStart"].startswith("/opt/streamd/.venv/bin/streamd serve")
    for key, value in {
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "DynamicUser": "yes",
        "PrivateTmp": "yes",
        "KillSignal": "SIGTERM",
    }.items():
        assert service[key] == value


def test_dockerfile_runs_as_non_root_with_a_healthcheck() -> None:
    text = (DEPLOY / "Dockerfile").read_text()
    assert re.search(r"^USER streamd$", text, re.M)
    assert "HEALTHCHECK" in text and "/healthz" in text
    assert re.search(r'^CMD \["streamd", "serve"', text, re.M)


@pytest.mark.slow
def test_the_dockerfile_install_works_in_a_clean_venv(tmp_path: Path) -> None:
    """The Dockerfile's `pip install .` and check, in a fresh venv instead of an image (no Docker here)."""
    repo = DEPLOY.parent
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    install = subprocess.run(
        [str(venv / "bin" / "pip"), "install", "-q", str(repo)], capture_output=True, text=True, timeout=900
    )
    assert install.returncode == 0, install.stderr[-3000:]
    check = subprocess.run(
        [
            str(venv / "bin" / "streamd"),
            "check-config",
            "--config",
            str(repo / "config" / "streamd.toml"),
            "--host",
            "127.0.0.1",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert check.returncode == 0, check.stderr
    assert '"port": 8080' in check.stdout
