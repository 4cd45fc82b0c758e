"""add_sub: the example model of tritonmix's quick start. OUTPUT0 = INPUT0 + INPUT1, OUTPUT1 = INPUT0 - INPUT1.

Shapes must match; a mismatch is answered with an error response naming both shapes (never a crash).
"""
import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            in0 = pb_utils.get_input_tensor_by_name(request, "INPUT0").as_numpy()
            in1 = pb_utils.get_input_tensor_by_name(request, "INPUT1").as_numpy()
            if in0.shape != in1.shape:
                error = pb_utils.TritonError(f"INPUT0 shape {list(in0.shape)} != INPUT1 shape {list(in1.shape)}")
                responses.append(pb_utils.InferenceResponse(output_tensors=[], error=error))
                continue
            out0 = pb_utils.Tensor("OUTPUT0", (in0 + in1).astype(np.float32))
            out1 = pb_utils.Tensor("OUTPUT1", (in0 - in1).astype(np.float32))
            responses.append(pb_utils.InferenceResponse(output_tensors=[out0, out1]))
        return responses
