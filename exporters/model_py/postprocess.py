"""Triton python-backend model: the VAE's float image [B, 3, H, W] in [-1, 1] -> uint8 [B, H, W, 3].

Same arithmetic as diffusers' ``VaeImageProcessor.postprocess`` then ``numpy_to_pil``:
``clip(x / 2 + 0.5, 0, 1)``, channels last, ``round(x * 255)``.
"""
import numpy as np
import triton_python_backend_utils as pb_utils


def to_uint8(sample):
    image = np.clip(sample / np.float32(2) + np.float32(0.5), 0, 1).transpose(0, 2, 3, 1)
    return (image * 255).round().astype(np.uint8)


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            sample = pb_utils.get_input_tensor_by_name(request, "sample").as_numpy().astype(np.float32)
            responses.append(pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor("image", to_uint8(sample))]))
        return responses
