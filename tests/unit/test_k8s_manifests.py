"""deploy/ checked offline, since no cluster runs here (docs/deploy.md says what did not run).

- Core kinds (Deployment, Service, HorizontalPodAutoscaler) against Kubernetes' own OpenAPI
  schemas at a pinned version (``kubernetes-validate``, schemas inside the wheel, strict:
  unknown fields fail as ``kubectl apply --validate=strict`` would).
- CRDs (KServe ServingRuntime / InferenceService, KubeRay RayService, KEDA ScaledObject)
  against the projects' published CRD schemas vendored in tests/data/crds (sources.json names
  the commits), made strict the same way: the API server prunes unknown fields silently,
  which would hide a misspelt field.
- Every ``vinolm serve`` command line (containers, the Dockerfile's CMD, the RayService's
  argv) parses with the real CLI; every probe path answers on the real app; the metrics the
  autoscalers query are ones /metrics exports; the Dockerfile keeps CPU torch first and runs
  as a non-root user.
"""

from __future__ import annotations

import copy
import gzip
import json
import re
import shlex
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from fastapi.testclient import TestClient
from tests.fakes import FakeEngine, FakeModel

from vinolm.cli import build_parser
from vinolm.server.app import build_app
from vinolm.server.metrics import ServerMetrics
from vinolm.server.service import ModelService

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
CRDS = ROOT / "tests" / "data" / "crds"
K8S_VERSION = "1.34.0"  # a cluster version KServe, KubeRay and KEDA all support today
CORE = {("apps/v1", "Deployment"), ("v1", "Service"), ("autoscaling/v2", "HorizontalPodAutoscaler")}
#: (apiVersion, kind) -> vendored schema file
CUSTOM = {
    ("serving.kserve.io/v1alpha1", "ServingRuntime"): "servingruntime",
    ("serving.kserve.io/v1beta1", "InferenceService"): "inferenceservice",
    ("ray.io/v1", "RayService"): "rayservice",
    ("keda.sh/v1alpha1", "ScaledObject"): "scaledobject",
}
EXPECTED_KINDS = {"Deployment", "Service", "HorizontalPodAutoscaler", "ServingRuntime", "InferenceService",
                  "RayService", "ScaledObject"}


def manifests() -> list[tuple[str, dict[str, Any]]]:
    found = []
    for path in sorted(DEPLOY.rglob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                found.append((f"{path.relative_to(ROOT)}:{doc['kind']}", doc))
    return found


MANIFESTS = manifests()
IDS = [name for name, _ in MANIFESTS]


def strict(schema: Any) -> Any:
    """The CRD schema with unknown fields refused wherever the CRD does not keep them."""
    if isinstance(schema, list):
        return [strict(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    out = {key: strict(value) for key, value in schema.items()}
    if "properties" in out and "additionalProperties" not in out \
            and not out.get("x-kubernetes-preserve-unknown-fields"):
        out["additionalProperties"] = False
    return out


def crd_schema(name: str) -> dict[str, Any]:
    schema = strict(json.loads(gzip.decompress((CRDS / f"{name}.schema.json.gz").read_bytes())))
    jsonschema.Draft7Validator.check_schema(schema)
    return schema


def validate(doc: dict[str, Any]) -> None:
    """Raise if ``doc`` breaks its kind's schema."""
    key = (doc["apiVersion"], doc["kind"])
    if key in CORE:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
    else:
        jsonschema.validate(doc, crd_schema(CUSTOM[key]), cls=jsonschema.Draft7Validator)
        assert doc["metadata"]["name"], "a custom resource needs metadata.name"


def containers(node: Any) -> Iterator[dict[str, Any]]:
    """Every container spec anywhere in a manifest (pod templates, runtimes, Ray groups)."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("containers", "initContainers") and isinstance(value, list):
                yield from value
            else:
                yield from containers(value)
    elif isinstance(node, list):
        for item in node:
            yield from containers(item)


def serve_argvs() -> list[tuple[str, list[str]]]:
    """Every ``vinolm serve`` argument list deploy/ runs."""
    found = []
    for name, doc in MANIFESTS:
        for container in containers(doc):
            if container.get("command", [])[:2] == ["vinolm", "serve"]:
                found.append((f"{name}:{container['name']}", [str(a) for a in container.get("args", [])]))
        if doc["kind"] == "RayService":
            for app in ray_serve_config(doc)["applications"]:
                found.append((f"{name}:{app['name']}", [str(a) for a in app["args"]["argv"]]))
    cmd = dockerfile_instructions("CMD")
    assert len(cmd) == 1
    argv = json.loads(cmd[0])
    assert argv[:2] == ["vinolm", "serve"]
    found.append(("deploy/Dockerfile:CMD", argv[2:]))
    return found


def ray_serve_config(doc: dict[str, Any]) -> dict[str, Any]:
    return yaml.safe_load(doc["spec"]["serveConfigV2"])


def dockerfile_instructions(keyword: str) -> list[str]:
    """The arguments of every ``keyword`` instruction, continuation lines joined."""
    text = re.sub(r"\\\n", " ", (DEPLOY / "Dockerfile").read_text())
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    return [line.split(None, 1)[1] for line in lines if line.split(None, 1)[0].upper() == keyword]


def test_every_kind_is_there() -> None:
    assert {doc["kind"] for _, doc in MANIFESTS} == EXPECTED_KINDS


@pytest.mark.parametrize("doc", [doc for _, doc in MANIFESTS], ids=IDS)
def test_manifest_matches_its_schema(doc: dict[str, Any]) -> None:
    validate(doc)


@pytest.mark.parametrize(("kind", "break_it"), [
    ("Deployment", lambda d: d["spec"]["template"]["spec"]["containers"][0].update(readinesProbe={})),
    ("Service", lambda d: d["spec"]["ports"][0].update(port="eight thousand")),
    ("InferenceService", lambda d: d["spec"]["predictor"].update(minReplica=1)),
    ("ServingRuntime", lambda d: d["spec"]["containers"][0].update(ports=[{"containerPort": "8000"}])),
    ("RayService", lambda d: d["spec"]["rayClusterConfig"]["workerGroupSpecs"][0].pop("groupName")),
    ("ScaledObject", lambda d: d["spec"].update(triggers=[{"metadata": {}}])),
])
def test_the_schemas_catch_mistakes(kind: str, break_it: Any) -> None:
    """The validation is no formality: one typo or wrong type per kind fails it."""
    doc = copy.deepcopy(next(doc for _, doc in MANIFESTS if doc["kind"] == kind))
    break_it(doc)
    with pytest.raises((kubernetes_validate.ValidationError, jsonschema.ValidationError)):
        validate(doc)


@pytest.mark.parametrize(("where", "argv"), serve_argvs(), ids=[where for where, _ in serve_argvs()])
def test_serve_command_lines_parse(where: str, argv: list[str]) -> None:
    args = build_parser().parse_args(["serve", *argv])  # an unknown flag or bad value exits 2
    assert args.func.__name__ == "cmd_serve"


def test_the_ray_service_builds_its_application() -> None:
    """The serve config's import path and gRPC servicer import, and the builder takes its args."""
    pytest.importorskip("ray.serve")
    import importlib

    from ray.serve.deployment import Application

    (doc,) = [doc for _, doc in MANIFESTS if doc["kind"] == "RayService"]
    config = ray_serve_config(doc)
    for function in config["grpc_options"]["grpc_servicer_functions"]:
        module, _, attr = function.rpartition(".")
        assert callable(getattr(importlib.import_module(module), attr))
    for app in config["applications"]:
        module, _, attr = app["import_path"].partition(":")
        built = getattr(importlib.import_module(module), attr)(app["args"])
        assert isinstance(built, Application)
    assert config["http_options"]["port"] == 8000 and config["grpc_options"]["port"] == 9000


def probe_paths() -> list[str]:
    paths = set()
    for _, doc in MANIFESTS:
        for container in containers(doc):
            for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
                if probe in container:
                    paths.add(container[probe]["httpGet"]["path"])
    (check,) = dockerfile_instructions("HEALTHCHECK")
    paths.update(re.findall(r"http://127\.0\.0\.1:8000(/[\w/.-]+)", check))
    return sorted(paths)


@pytest.fixture(scope="module")
def client() -> TestClient:
    metrics = ServerMetrics()
    service = ModelService(FakeEngine(FakeModel(context_length=256)), ["smollm2"], metrics=metrics)
    return TestClient(build_app(service, ui=False))


@pytest.mark.parametrize("path", probe_paths())
def test_probe_paths_are_served(client: TestClient, path: str) -> None:
    assert client.get(path).status_code == 200


def test_readiness_probes_use_kserve_ready() -> None:
    for _, doc in MANIFESTS:
        for container in containers(doc):
            if "readinessProbe" in container:
                assert container["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert "/v2/health/ready" in dockerfile_instructions("HEALTHCHECK")[0]


def autoscaler_queries() -> list[str]:
    queries = []
    for _, doc in MANIFESTS:
        if doc["kind"] == "InferenceService":
            queries += [m["external"]["metric"]["query"] for m in doc["spec"]["predictor"]["autoScaling"]["metrics"]]
        if doc["kind"] == "ScaledObject":
            queries += [t["metadata"]["query"] for t in doc["spec"]["triggers"]]
        if doc["kind"] == "HorizontalPodAutoscaler":
            queries += [m["pods"]["metric"]["name"] for m in doc["spec"]["metrics"]]
    return queries


def test_autoscalers_read_metrics_the_server_exports(client: TestClient) -> None:
    """Before any request too: an autoscaler's query must not come back empty on a fresh pod."""
    text = client.get("/metrics").text
    queries = autoscaler_queries()
    assert len(queries) == 3
    for query in queries:
        for name in re.findall(r"\bvinolm_\w+", query):
            assert re.search(rf"^# TYPE {name} gauge$", text, re.MULTILINE), f"{name} is not a gauge in /metrics"


def test_dockerfile_runs_cpu_torch_first_as_non_root() -> None:
    (user,) = dockerfile_instructions("USER")
    assert user.split(":")[0] not in ("root", "0")
    assert dockerfile_instructions("EXPOSE") == ["8000 9000"]
    (base,) = dockerfile_instructions("FROM")
    assert base == "python:3.11-slim"
    installs = [shlex.split(part) for run in dockerfile_instructions("RUN") for part in run.split("&&")
                if "pip install" in part]
    first, *rest = installs
    assert "torch==2.13.0" in first and first[first.index("--index-url") + 1] == "${TORCH_INDEX}"
    assert 'TORCH_INDEX=https://download.pytorch.org/whl/cpu' in dockerfile_instructions("ARG")
    for later in rest:  # nothing after may name torch or its CUDA-pulling company
        assert not any(word.startswith(("torch", "torchvision")) for word in later)
        assert "optimum-intel==2.2.0" not in later or "--no-deps" in later
    cmd = json.loads(dockerfile_instructions("CMD")[0])
    assert cmd[cmd.index("--host") + 1] == "0.0.0.0"
    assert (cmd[cmd.index("--port") + 1], cmd[cmd.index("--grpc-port") + 1]) == ("8000", "9000")
