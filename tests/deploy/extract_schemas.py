"""Make tests/deploy/data/crd-schemas.json from the CRDs their projects publish (run by hand).

    git -C kserve show HEAD:config/crd/full/serving.kserve.io_clusterservingruntimes.yaml > csr.yaml
    git -C kserve show HEAD:config/crd/full/serving.kserve.io_inferenceservices.yaml > isvc.yaml
    git -C prometheus-operator show \
        HEAD:example/prometheus-operator-crd/monitoring.coreos.com_servicemonitors.yaml > sm.yaml
    python tests/deploy/extract_schemas.py csr.yaml isvc.yaml sm.yaml --source "kserve@..., ..."

Keeps each CRD's served versions' ``openAPIV3Schema`` and drops every ``description`` (most of
the bytes). The InferenceService schema (2 MB: each component embeds a whole PodSpec) keeps only
``spec.predictor``, and of the predictor's per-framework specs only ``model``; the fields
dropped are then unknown to the tests, which refuse unknown fields.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import yaml

OUT = Path(__file__).parent / "data" / "crd-schemas.json"
# the predictor's per-framework fields, all dropped: the manifests use ``model`` only
_FRAMEWORKS = (
    "huggingface",
    "lightgbm",
    "onnx",
    "paddle",
    "pmml",
    "pytorch",
    "sklearn",
    "tensorflow",
    "triton",
    "xgboost",
)


def strip_descriptions(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: strip_descriptions(v) for k, v in node.items() if k != "description"}
    if isinstance(node, list):
        return [strip_descriptions(v) for v in node]
    return node


def prune_inference_service(schema: dict[str, Any]) -> dict[str, Any]:
    spec = schema["properties"]["spec"]
    spec["properties"] = {"predictor": spec["properties"]["predictor"]}
    predictor = spec["properties"]["predictor"]["properties"]
    for framework in _FRAMEWORKS:
        predictor.pop(framework, None)
    return schema


def schemas(crd: dict[str, Any]) -> dict[str, Any]:
    group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
    found = {}
    for version in crd["spec"]["versions"]:
        if not version.get("served", True):
            continue
        schema = strip_descriptions(version["schema"]["openAPIV3Schema"])
        if kind == "InferenceService":
            schema = prune_inference_service(schema)
        found[f"{group}/{version['name']}/{kind}"] = schema
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("crds", nargs="+", type=Path)
    parser.add_argument("--source", required=True, help="where the CRDs came from (commits)")
    args = parser.parse_args()
    found: dict[str, Any] = {}
    for path in args.crds:
        found.update(schemas(yaml.safe_load(path.read_text())))
    OUT.write_text(json.dumps({"source": args.source, "schemas": found}, sort_keys=True) + "\n")
    print(f"{OUT}: {', '.join(sorted(found))} ({OUT.stat().st_size:,} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
