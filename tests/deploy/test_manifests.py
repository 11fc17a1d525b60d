"""The deployment files, checked without a cluster: every manifest and every rendering of the
Helm chart parses and validates, strictly (unknown fields refused), against the Kubernetes
schemas (kubernetes-validate) or the published CRD schemas (data/crd-schemas.json, from
extract_schemas.py); the chart lints strictly (helm-python-sdk, Helm's Go SDK, no binary);
and every aserve command line in them is one aserve accepts, consistent with the probes,
ports, metrics annotations and termination grace around it.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import helm_python as helm
import jsonschema
import kubernetes_validate
import pytest
import yaml

from aserve import flags

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
CHART = DEPLOY / "helm" / "aserve"
EXAMPLES = sorted((DEPLOY / "helm" / "examples").glob("*.yaml"))
KUBERNETES_VERSION = "1.37"
CRDS = json.loads((Path(__file__).parent / "data" / "crd-schemas.json").read_text())["schemas"]
MANIFESTS = sorted(
    p
    for p in [*(DEPLOY / "kubernetes").glob("*.yaml"), *(DEPLOY / "kserve").glob("*.yaml")]
    if p.name != "kustomization.yaml"
)

Doc = dict[str, Any]


def documents(text: str) -> list[Doc]:
    return [d for d in yaml.safe_load_all(text) if d]


def render(values_file: Path | None) -> list[Doc]:
    values = yaml.safe_load(values_file.read_text()) if values_file else None
    with helm.Chart.load(CHART) as chart:
        rendered = chart.render(values, name="aserve", namespace="serving")
    return [
        d
        for name, text in sorted(rendered.items())
        if name.endswith(".yaml")
        for d in documents(text)
    ]


def strict(schema: Any) -> Any:
    """A CRD schema that refuses unknown fields, as the API server prunes or (with
    fieldValidation=Strict) refuses them: objects with properties get additionalProperties
    false, unless they preserve unknown fields."""
    if isinstance(schema, list):
        return [strict(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: strict(v) for k, v in schema.items()}
    if (
        "properties" in out
        and "additionalProperties" not in out
        and not out.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    return out


STRICT_CRDS = {key: strict(schema) for key, schema in CRDS.items()}


def validate(doc: Doc) -> None:
    crd = STRICT_CRDS.get(f"{doc['apiVersion']}/{doc['kind']}")
    if crd is None:
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
    else:
        jsonschema.Draft7Validator(crd).validate(doc)


RENDER_SETS = [
    pytest.param(None, id="default-values"),
    *(pytest.param(example, id=example.stem) for example in EXAMPLES),
]


# -- schemas ---------------------------------------------------------------------------------


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_manifest_validates_strictly(path: Path) -> None:
    docs = documents(path.read_text())
    assert docs
    for doc in docs:
        validate(doc)


def test_the_kustomization_lists_every_kubernetes_manifest() -> None:
    kustomization = yaml.safe_load((DEPLOY / "kubernetes" / "kustomization.yaml").read_text())
    listed = set(kustomization["resources"])
    assert listed == {p.name for p in MANIFESTS if p.parent.name == "kubernetes"}


@pytest.mark.parametrize("values_file", RENDER_SETS)
def test_the_chart_lints_strictly_and_renders_valid_manifests(values_file: Path | None) -> None:
    values = yaml.safe_load(values_file.read_text()) if values_file else None
    report = helm.lint(CHART, values, strict=True, kube_version=f"v{KUBERNETES_VERSION}.0")
    problems = [m for m in report["messages"] if m["severity"] >= 2]
    assert not report["errors"] and not problems, report
    docs = render(values_file)
    assert {"Deployment", "Service"} <= {d["kind"] for d in docs}
    for doc in docs:
        validate(doc)


@pytest.mark.parametrize(
    ("path", "kind", "break_it"),
    [
        (
            "kubernetes/deployment.yaml",
            "Deployment",
            lambda d: _container(d).update(readinesProbe={}),
        ),
        ("kubernetes/service.yaml", "Service", lambda d: d["spec"].update(port=8500)),
        (
            "kserve/cluster-serving-runtime.yaml",
            "ClusterServingRuntime",
            lambda d: d["spec"].update(protocolVersion="v1"),
        ),
        (
            "kserve/inference-service.yaml",
            "InferenceService",
            lambda d: d["spec"]["predictor"]["model"].update(storageURI="gs://x"),
        ),
    ],
)
def test_a_misspelt_field_is_refused(path: str, kind: str, break_it: Any) -> None:
    doc = next(d for d in documents((DEPLOY / path).read_text()) if d["kind"] == kind)
    validate(doc)
    break_it(doc)
    with pytest.raises(jsonschema.ValidationError, match="Additional properties|additional"):
        validate(doc)


def test_the_chart_refuses_unknown_values() -> None:
    with helm.Chart.load(CHART) as chart, pytest.raises(helm.HelmValuesError, match="replicas"):
        chart.validate_schema({"replicas": 3})


# -- the command lines in them ---------------------------------------------------------------


def _container(doc: Doc) -> Doc:
    if doc["kind"] == "ClusterServingRuntime":
        return doc["spec"]["containers"][0]
    return doc["spec"]["template"]["spec"]["containers"][0]


def image_env() -> dict[str, str]:
    """The ENV of the Dockerfile's final stage."""
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    env: dict[str, str] = {}
    for line in text.splitlines():
        if line.startswith("ENV "):
            env.update(re.findall(r"(\w+)=(\S+)", line))
    return env


def entrypoint_argv(tmp_path: Path, env: dict[str, str], args: list[str]) -> list[str]:
    """The argv the image's entrypoint script gives aserve (run with a stand-in aserve)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    fake = bin_dir / "aserve"
    fake.write_text('#!/bin/sh\nprintf "%s\\0" "$@"\n')
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    script = DEPLOY / "docker" / "tf_serving_entrypoint.sh"
    environment = {**image_env(), **env, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    out = subprocess.run(
        ["sh", str(script), *args], env=environment, capture_output=True, check=True
    ).stdout
    return out.decode().split("\0")[:-1]


_DIRECTORIES = {"model_base_path", "allowed_model_roots"}


def in_sandbox(argv: list[str], sandbox: Path) -> list[str]:
    """The same flags with every absolute path moved under ``sandbox``, where it exists (a
    directory or an empty file, by flag), so that flags.parse checks what it would check in
    the container."""
    out = []
    for arg in argv:
        name, equals, value = arg.partition("=")
        if equals and value.startswith("/"):
            path = sandbox / value.lstrip("/")
            if name.lstrip("-") in _DIRECTORIES:
                path.mkdir(parents=True, exist_ok=True)
            else:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.touch()
            arg = f"{name}={path}"
        out.append(arg)
    return out


def workloads() -> Iterator[Any]:
    """(workload, the documents beside it) for every Deployment and serving runtime."""
    for path in MANIFESTS:
        docs = documents(path.read_text())
        for doc in docs:
            if doc["kind"] in ("Deployment", "ClusterServingRuntime"):
                yield pytest.param(doc, docs, id=f"{path.parent.name}/{path.name}")
    for values_file in RENDER_SETS:
        docs = render(values_file.values[0])
        for doc in docs:
            if doc["kind"] == "Deployment":
                yield pytest.param(doc, docs, id=f"helm/{values_file.id}")


WORKLOADS = list(workloads())


def server_options(doc: Doc, tmp_path: Path) -> flags.ServerOptions:
    container = _container(doc)
    args = [a.replace("{{.Name}}", "flower-sample") for a in container.get("args", [])]
    if container.get("command"):  # the image's entrypoint is replaced: aserve itself
        assert container["command"] == ["/usr/bin/tensorflow_model_server"]
        argv = args
    else:
        env = {e["name"]: e["value"] for e in container.get("env", []) if "value" in e}
        argv = entrypoint_argv(tmp_path, env, args)
    return flags.parse(in_sandbox(argv, tmp_path / "root"))


@pytest.mark.parametrize(("doc", "beside"), WORKLOADS)
def test_the_command_line_is_aserves_and_fits_its_pod(
    doc: Doc, beside: list[Doc], tmp_path: Path
) -> None:
    options = server_options(doc, tmp_path)
    assert options.ignored_flags == ()
    container = _container(doc)
    ports = {p["name"]: p["containerPort"] for p in container.get("ports", [])}
    if ports:
        assert ports == {"grpc": options.port, "http": options.rest_api_port}
    for probe, path in [
        ("readinessProbe", "/v2/health/ready"),
        ("livenessProbe", "/v2/health/live"),
    ]:
        get = container[probe]["httpGet"]
        assert get["path"] == path
        assert ports.get(get["port"], get["port"]) == options.rest_api_port
    # SIGTERM to exit, drain delay included, within the pod's grace (Kubernetes' default: 30 s)
    pod = doc["spec"]["template"]["spec"] if doc["kind"] == "Deployment" else {}
    grace = pod.get("terminationGracePeriodSeconds", 30)
    assert 0 < options.drain_delay_seconds < options.shutdown_grace_seconds < grace
    assert options.monitoring_config_file, "metrics are on"


@pytest.mark.parametrize(("doc", "beside"), WORKLOADS)
def test_the_metrics_annotations_name_the_served_path(
    doc: Doc, beside: list[Doc], tmp_path: Path
) -> None:
    if doc["kind"] == "Deployment":
        annotations = doc["spec"]["template"]["metadata"]["annotations"]
        port, path = annotations["prometheus.io/port"], annotations["prometheus.io/path"]
    else:
        annotations = doc["spec"]["annotations"]
        port, path = (
            annotations["prometheus.kserve.io/port"],
            annotations["prometheus.kserve.io/path"],
        )
    options = server_options(doc, tmp_path)
    assert int(port) == options.rest_api_port
    config = options.monitoring_config_file
    if "/etc/aserve/config/" in config:  # the chart's ConfigMap
        (config_map,) = [d for d in beside if d["kind"] == "ConfigMap"]
        served = config_map["data"]["monitoring.config"]
    else:
        assert config.endswith("/etc/aserve/monitoring.config")  # the image's
        served = (DEPLOY / "docker" / "monitoring.config").read_text()
    assert f'path: "{path}"' in served


@pytest.mark.parametrize("values_file", RENDER_SETS)
def test_the_charts_config_files_parse_as_aserve_reads_them(values_file: Path | None) -> None:
    from aserve._proto import monitoring_config_pb2
    from aserve.batching import version_options
    from aserve.config import parse_model_server_config, parse_text_proto

    values = yaml.safe_load(values_file.read_text()) if values_file else {}
    for doc in render(values_file):
        data = doc.get("data", {}) if doc["kind"] == "ConfigMap" else {}
        if "model_config.pbtxt" in data:
            assert parse_model_server_config(data["model_config.pbtxt"])
        if "batching_parameters.pbtxt" in data:
            batching = version_options(data["batching_parameters.pbtxt"])
            assert batching is not None
            assert batching.max_batch_size == values["batching"]["maxBatchSize"]
        if "monitoring.config" in data:
            message = monitoring_config_pb2.MonitoringConfig
            assert parse_text_proto(data["monitoring.config"], message).prometheus_config.enable


# -- KServe ----------------------------------------------------------------------------------


def test_the_kserve_runtime_runs_aserve_as_kserves_tf_serving_runtime_runs_tf_serving() -> None:
    ours = documents((DEPLOY / "kserve" / "cluster-serving-runtime.yaml").read_text())[0]
    theirs = documents(
        (Path(__file__).parent / "data" / "kserve-tensorflow-serving.yaml").read_text()
    )[0]
    mine, tf = _container(ours), _container(theirs)
    assert mine["command"] == tf["command"]
    assert set(tf["args"]) <= set(mine["args"])
    assert mine["securityContext"]["runAsUser"] == tf["securityContext"]["runAsUser"] == 1000
    formats = lambda doc: {(f["name"], f["version"]) for f in doc["spec"]["supportedModelFormats"]}  # noqa: E731
    assert formats(ours) == formats(theirs)
    assert set(theirs["spec"]["protocolVersions"]) < set(ours["spec"]["protocolVersions"])
    assert set(ours["spec"]["protocolVersions"]) == {"v1", "v2", "grpc-v1", "grpc-v2"}
    # KServe's webhook refuses two auto-selected runtimes sharing a protocol and a model format
    # at one priority: TF Serving's has 2 (v1), Triton's 1 (v2)
    priorities = {f["priority"] for f in ours["spec"]["supportedModelFormats"]}
    assert priorities.isdisjoint({1, 2})


def test_the_inference_services_use_the_runtime() -> None:
    runtime = documents((DEPLOY / "kserve" / "cluster-serving-runtime.yaml").read_text())[0]
    for path in (DEPLOY / "kserve").glob("inference-service*.yaml"):
        model = documents(path.read_text())[0]["spec"]["predictor"]["model"]
        assert model["runtime"] == runtime["metadata"]["name"]
        assert model["protocolVersion"] in runtime["spec"]["protocolVersions"]
        assert model["modelFormat"]["name"] == "tensorflow"


def test_the_entrypoint_appends_the_containers_arguments(tmp_path: Path) -> None:
    argv = entrypoint_argv(tmp_path, {"MODEL_NAME": "m"}, ["--port=9000", "--x=a b"])
    assert argv == shlex.split(
        "--port=8500 --rest_api_port=8501 --model_name=m --model_base_path=/models/m "
        "--port=9000 '--x=a b'"
    )
