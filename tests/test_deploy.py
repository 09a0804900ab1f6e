"""deploy/: the Kubernetes manifest and the Dockerfile agree with the server's flags, its
port and the health service it answers."""
import json
import pathlib
import re

import pytest

from detector.cli import _parser
from detector_server.servicer import SERVICE

DEPLOY = pathlib.Path(__file__).resolve().parent.parent / "deploy"
yaml = pytest.importorskip("yaml")


def manifests():
    documents = list(yaml.safe_load_all((DEPLOY / "kubernetes.yaml").read_text()))
    return {d["kind"]: d for d in documents}


def serve_args(args):
    return _parser().parse_args(["serve", *args])


def test_the_deployment_probes_the_port_the_server_listens_on_with_its_health_service():
    deployment = manifests()["Deployment"]
    pod = deployment["spec"]["template"]
    container = pod["spec"]["containers"][0]
    args = serve_args(container["args"])
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports["grpc"] == args.port and args.host == "0.0.0.0"
    assert ports["http"] == args.http_port  # the page, the JSON API and the metrics
    annotations = pod["metadata"]["annotations"]
    assert int(annotations["prometheus.io/port"]) == args.http_port and annotations["prometheus.io/path"] == "/metrics"
    for probe in (container["readinessProbe"], container["livenessProbe"]):
        assert probe["grpc"]["port"] == args.port
        assert probe["grpc"]["service"] in ("", SERVICE)  # what the server answers SERVING for
    assert container["readinessProbe"]["grpc"]["service"] == SERVICE
    # the cores the requests reserve are those the server's calls use at once
    assert int(container["resources"]["requests"]["cpu"]) == args.workers * args.threads
    assert pod["metadata"]["labels"] == deployment["spec"]["selector"]["matchLabels"]
    assert pod["spec"]["terminationGracePeriodSeconds"] > args.grace


def test_the_headless_service_reaches_the_pods_by_name_and_port():
    found = manifests()
    service, deployment = found["Service"], found["Deployment"]
    assert service["spec"]["clusterIP"] == "None"  # DNS gives every pod to the client's round-robin
    assert service["spec"]["selector"] == deployment["spec"]["template"]["metadata"]["labels"]
    port = service["spec"]["ports"][0]
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert port["targetPort"] in [p["name"] for p in container["ports"]]
    assert port["port"] == serve_args(container["args"]).port
    # the client example in the manifest names this service and the health service
    text = (DEPLOY / "kubernetes.yaml").read_text()
    assert f"dns:///{service['metadata']['name']}.default.svc.cluster.local:{port['port']}" in text
    config = json.loads(re.search(r"'(\{.*\})'", text).group(1))
    assert config["healthCheckConfig"]["serviceName"] == SERVICE


def test_the_dockerfile_serves_on_the_port_it_exposes():
    text = (DEPLOY / "Dockerfile").read_text()
    entry = json.loads(re.search(r"^ENTRYPOINT (\[.*\])$", text, re.M).group(1))
    cmd = json.loads(re.search(r"^CMD (\[.*\])$", text, re.M).group(1))
    assert entry == ["detector", "serve"]
    args = serve_args(cmd)
    exposed = [int(p) for p in re.findall(r"^EXPOSE (\d+)$", text, re.M)]
    assert exposed == [args.port, args.http_port] and args.host == "0.0.0.0"
    # the Deployment runs the image with the same flags
    assert manifests()["Deployment"]["spec"]["template"]["spec"]["containers"][0]["args"] == cmd


def test_the_image_leaves_this_machines_venv_and_builds_out():
    ignored = (DEPLOY.parent / ".dockerignore").read_text().split()
    assert {".venv/", "build/", "detector/_ext/*.so"} <= set(ignored)
    container = manifests()["Deployment"]["spec"]["template"]["spec"]["containers"][0]
    assert not container["image"].endswith(":latest") and container["imagePullPolicy"] == "IfNotPresent"
