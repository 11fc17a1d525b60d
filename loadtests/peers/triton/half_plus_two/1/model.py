"""half_plus_two for Triton's Python backend: y = 0.5 * x + 2 on a whole dynamic batch."""

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        # The dynamic batcher hands over several requests at once: compute them as one batch.
        xs = [pb_utils.get_input_tensor_by_name(r, "x").as_numpy() for r in requests]
        ys = np.concatenate(xs) * np.float32(0.5) + np.float32(2.0)
        responses, start = [], 0
        for x in xs:
            y = ys[start : start + len(x)]
            start += len(x)
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor("y", y)]))
        return responses
