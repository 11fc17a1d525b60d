"""The protocol-neutral service: what every REST and gRPC method does.

Front ends decode their wire format, call one method here, and encode the
answer; they share every rule, error and number. Tensor values cross this
layer as numpy arrays; classification, regression, status and metadata
results are TF Serving's own protos (the neutral form TF Serving itself uses).

A request pins its servable for its whole duration:

    with service.acquire(ServableRequest.latest("m")) as servable:
        signature = ...                       # look-ups on servable.model.signatures
        outputs = await service.predict(servable, signature, inputs)
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from aserve import inference
from aserve.core import ServerCore
from aserve.errors import not_found
from aserve.ids import ServableRequest
from aserve.inference import Job
from aserve.metrics import Metrics
from aserve.registry import Handle, Servable
from aserve.signatures import CLASSIFY_METHOD, Signature


@dataclass(frozen=True, slots=True)
class ServiceOptions:
    check_method_name: bool = False  # --enable_signature_method_name_check


class Service:
    def __init__(
        self,
        *,
        core: ServerCore,
        metrics: Metrics | None = None,
        options: ServiceOptions = ServiceOptions(),
    ) -> None:
        self.core = core
        self.metrics = metrics or Metrics()
        self._check_method = options.check_method_name

    def acquire(self, request: ServableRequest) -> Handle:
        return self.core.registry.acquire(request)

    # -- inference ---------------------------------------------------------------------------

    async def predict(
        self,
        servable: Servable,
        signature: Signature,
        inputs: Mapping[str, np.ndarray],
        output_filter: Sequence[str] = (),
        *,
        timeout_ms: int = 0,
    ) -> dict[str, np.ndarray]:
        job = inference.predict_job(
            signature, inputs, output_filter, check_method_name=self._check_method
        )
        return await self._run(servable, job, timeout_ms, "Predict")  # type: ignore[no-any-return]

    async def classify_or_regress(
        self,
        servable: Servable,
        method: str,
        signature_name: str,
        input: Any,
        *,
        timeout_ms: int = 0,
    ) -> Any:
        """Classify (``method`` = CLASSIFY_METHOD) or Regress: the result proto."""
        job = inference.examples_job(
            servable.model.signatures,
            signature_name,
            method,
            input,
            check_method_name=self._check_method,
        )
        api = "Classify" if method == CLASSIFY_METHOD else "Regress"
        return await self._run(servable, job, timeout_ms, api)

    async def multi_inference(
        self,
        servable: Servable,
        tasks: Sequence[tuple[str, str]],
        input: Any,
        *,
        timeout_ms: int = 0,
    ) -> list[Any]:
        """``tasks`` = (signature name, method name) pairs; results in task order."""
        job = inference.multi_inference_job(servable.model.signatures, tasks, input)
        return await self._run(servable, job, timeout_ms, "MultiInference")  # type: ignore[no-any-return]

    async def _run(self, servable: Servable, job: Job, timeout_ms: int, api: str) -> Any:
        """Run the job; record TF Serving's runtime latency (queueing included) and examples."""
        name = servable.id.name
        if job.examples:
            self.metrics.request_example_counts.observe(job.examples, name)
            self.metrics.request_example_count_total.inc(name, by=job.examples)
        start = time.perf_counter()
        results = await servable.runner.run(job.plan, timeout_ms)
        elapsed_us = (time.perf_counter() - start) * 1e6
        self.metrics.runtime_latency.observe(elapsed_us, name, api, "TF1")
        return job.finish(results)

    # -- status, metadata, config --------------------------------------------------------------

    def model_status(self, name: str, version: int | None = None) -> Any:
        """``GetModelStatusResponse``: every version ever seen (or one), highest first."""
        from tensorflow_serving.apis import get_model_status_pb2

        versions = self.core.monitor.versions(name)
        if version is not None:
            if version not in versions:
                raise not_found(f"Could not find version {version} of model {name}")
            versions = {version: versions[version]}
        elif not versions:
            raise not_found(f"Could not find any versions of model {name}")
        response = get_model_status_pb2.GetModelStatusResponse()
        for v, status in versions.items():
            entry = response.model_version_status.add(version=v, state=int(status.state))
            entry.status.SetInParent()  # printed even when OK, as TF Serving does
            if status.error is not None:
                entry.status.error_code = int(status.error.code)
                entry.status.error_message = status.error.message
        return response

    def signature_def_map(self, servable: Servable) -> Any:
        """``SignatureDefMap`` of the servable, for GetModelMetadata."""
        from tensorflow_serving.apis import get_model_metadata_pb2

        signature_map = get_model_metadata_pb2.SignatureDefMap()
        for name, signature_def in servable.model.signature_defs.items():
            signature_map.signature_def[name].CopyFrom(signature_def)
        return signature_map

    async def reload_config(self, config_proto: Any) -> None:
        from aserve.config import from_proto

        await self.core.reload(from_proto(config_proto))
