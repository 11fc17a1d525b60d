"""The kserve SDK's V2 clients against a running aserve; prints what they saw as one JSON object.

    python kserve_client.py http://127.0.0.1:8501 127.0.0.1:8500

Run in a process of its own by test_v2_kserve.py: kserve's generated ``inference`` protos
and tritonclient's (which the other tests import) cannot share a process.
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

import grpc
import httpx
import numpy as np
from kserve import (
    InferenceGRPCClient,
    InferenceRESTClient,
    InferInput,
    InferRequest,
    RESTConfig,
)


def request(binary: bool = False) -> InferRequest:
    x = InferInput("x", [2, 1], "FP32")
    x.set_data_from_numpy(np.array([[1.0], [2.0]], np.float32), binary_data=binary)
    return InferRequest("half_plus_two", [x], request_id="k-1")


def strings() -> InferRequest:
    s = InferInput("s", [2], "BYTES", data=["ab", "xyz"])
    return InferRequest("echo", [s], parameters={"signature_name": "text"})


def outputs(response: Any) -> dict[str, Any]:
    values = {}
    for output in response.outputs:
        array = output.as_numpy()
        values[output.name] = [v.decode() if isinstance(v, bytes) else v for v in array.tolist()]
    return {"id": response.id, "model": response.model_name, "outputs": values}


async def rest(url: str) -> dict[str, Any]:
    client = InferenceRESTClient(RESTConfig(protocol="v2", timeout=30))
    seen: dict[str, Any] = {
        "live": await client.is_server_live(url),
        "ready": await client.is_server_ready(url),
        "model_ready": await client.is_model_ready(url, "half_plus_two"),
        "unknown_model_ready": await client.is_model_ready(url, "nope"),
        "json": outputs(await client.infer(url, request(), model_name="half_plus_two")),
        "binary": outputs(await client.infer(url, request(True), model_name="half_plus_two")),
        "strings": outputs(await client.infer(url, strings(), model_name="echo")),
    }
    try:
        await client.infer(url, request(), model_name="nope")
    except httpx.HTTPStatusError as e:
        seen["error"] = [e.response.status_code, str(e)]
    await client.close()
    return seen


async def grpc_calls(target: str) -> dict[str, Any]:
    client = InferenceGRPCClient(target, timeout=30)
    seen: dict[str, Any] = {
        "live": await client.is_server_live(),
        "ready": await client.is_server_ready(),
        "model_ready": await client.is_model_ready("half_plus_two"),
        "infer": outputs(await client.infer(request())),
        "strings": outputs(await client.infer(strings())),
    }
    try:
        await client.infer(InferRequest("nope", request().inputs))
    except grpc.aio.AioRpcError as e:
        seen["error"] = [e.code().name, e.details()]
    await client.close()
    return seen


async def main(url: str, target: str) -> None:
    print(json.dumps({"rest": await rest(url), "grpc": await grpc_calls(target)}))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
