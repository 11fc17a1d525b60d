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

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from aserve import inference
from aserve.core import ServerCore
from aserve.errors import Code, ServingError, invalid_argument, not_found
from aserve.ids import ServableRequest
from aserve.inference import Plan
from aserve.registry import Handle, Servable
from aserve.signatures import CLASSIFY_METHOD, REGRESS_METHOD, Signature


@dataclass(frozen=True, slots=True)
class ServiceOptions:
    check_method_name: bool = False  # --enable_signature_method_name_check


class Service:
    def __init__(self, *, core: ServerCore, options: ServiceOptions = ServiceOptions()) -> None:
        self.core = core
        self._pool = core.pool
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
        plan = inference.plan_predict(
            signature, inputs, output_filter, check_method_name=self._check_method
        )
        return plan.outputs(await self._run(servable, plan, timeout_ms))

    async def classify(
        self, servable: Servable, signature_name: str, input: Any, *, timeout_ms: int = 0
    ) -> Any:
        signature = inference.classification_signature(
            servable.model.signatures, signature_name, check_method_name=self._check_method
        )
        examples = inference.serialized_examples(input)
        results = await self._run_examples(servable, [signature], [True], examples, timeout_ms)
        return inference.classification_result(signature, results, len(examples))

    async def regress(
        self, servable: Servable, signature_name: str, input: Any, *, timeout_ms: int = 0
    ) -> Any:
        signature = inference.regression_signature(
            servable.model.signatures, signature_name, check_method_name=self._check_method
        )
        examples = inference.serialized_examples(input)
        results = await self._run_examples(servable, [signature], [False], examples, timeout_ms)
        return inference.regression_result(signature, results, len(examples))

    async def multi_inference(
        self,
        servable: Servable,
        tasks: Sequence[tuple[str, str]],
        input: Any,
        *,
        timeout_ms: int = 0,
    ) -> list[Any]:
        """``tasks`` = (signature name, method name) pairs; results in task order."""
        signatures, classify = [], []
        for name, method in tasks:
            name = inference.signature_name(name)
            if name in (s.name for s in signatures):
                raise invalid_argument(f"Duplicate evaluation of signature: {name}")
            signature = servable.model.signatures.get(name)
            if signature is None:
                raise invalid_argument(f"Requested signature not found in model graph: {name}")
            if method not in (CLASSIFY_METHOD, REGRESS_METHOD):
                raise ServingError(
                    Code.UNIMPLEMENTED, f"Unsupported signature method_name: {method}"
                )
            signatures.append(signature)
            classify.append(method == CLASSIFY_METHOD)
        examples = inference.serialized_examples(input)
        results = await self._run_examples(servable, signatures, classify, examples, timeout_ms)
        return [
            inference.classification_result(s, results, len(examples))
            if c
            else inference.regression_result(s, results, len(examples))
            for s, c in zip(signatures, classify, strict=True)
        ]

    async def _run_examples(
        self,
        servable: Servable,
        signatures: Sequence[Signature],
        classify: Sequence[bool],
        examples: np.ndarray,
        timeout_ms: int,
    ) -> dict[str, np.ndarray]:
        plan = inference.plan_examples(signatures, examples, classify=classify)
        return plan.outputs(await self._run(servable, plan, timeout_ms))

    async def _run(self, servable: Servable, plan: Plan, timeout_ms: int) -> list[np.ndarray]:
        return await self._pool.run(
            servable.model.run, plan.feeds, plan.fetches, timeout_ms=timeout_ms
        )

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
