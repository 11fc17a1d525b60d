"""half_plus_two as an MLServer custom runtime: y = 0.5 * x + 2 on a whole adaptive batch."""

import numpy as np
from mlserver import MLModel
from mlserver.codecs import NumpyCodec
from mlserver.types import InferenceRequest, InferenceResponse


class HalfPlusTwo(MLModel):
    async def load(self) -> bool:
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        # With adaptive batching, MLServer has already stacked the queued requests along axis 0.
        x = NumpyCodec.decode_input(payload.inputs[0])
        y = (x * np.float32(0.5) + np.float32(2.0)).astype(np.float32)
        return InferenceResponse(model_name=self.name, outputs=[NumpyCodec.encode_output("y", y)])
