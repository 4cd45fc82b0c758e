"""Triton python-backend model: runs ``model.onnx`` from its version folder in-process with onnxruntime.

Inputs and outputs are matched by name between config.pbtxt and the ONNX graph; an input with a ``reshape`` in the
config is reshaped (per batch element) before it reaches onnxruntime, as Triton's onnxruntime backend would do.
"""
import json
import os

import numpy as np
import onnxruntime as ort
import triton_python_backend_utils as pb_utils


def _onnx_path(version_dir):
    path = os.path.join(version_dir, "model.onnx")
    return os.path.join(path, "model.onnx") if os.path.isdir(path) else path


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        version_dir = os.path.join(args["model_repository"], args["model_version"])
        options = ort.SessionOptions()
        options.intra_op_num_threads = int(os.environ.get("TRITONMIX_ORT_THREADS", "1"))
        self.session = ort.InferenceSession(_onnx_path(version_dir), options, providers=["CPUExecutionProvider"])
        self.batching = config.get("max_batch_size", 0) > 0
        self.reshape = {i["name"]: i["reshape"].get("shape", []) for i in config["input"] if "reshape" in i}
        self.output_names = [o["name"] for o in config["output"]]

    def _feed(self, request):
        feeds = {}
        for node in self.session.get_inputs():
            array = pb_utils.get_input_tensor_by_name(request, node.name).as_numpy()
            if node.name in self.reshape:
                lead = [array.shape[0]] if self.batching else []
                array = array.reshape(lead + [int(d) for d in self.reshape[node.name]])
            feeds[node.name] = array
        return feeds

    def execute(self, requests):
        responses = []
        for request in requests:
            try:
                outputs = self.session.run(self.output_names, self._feed(request))
                tensors = [pb_utils.Tensor(n, np.ascontiguousarray(o)) for n, o in zip(self.output_names, outputs)]
                responses.append(pb_utils.InferenceResponse(output_tensors=tensors))
            except Exception as exc:  # noqa: BLE001 - reported to the client as this request's error
                responses.append(pb_utils.InferenceResponse(error=pb_utils.TritonError(str(exc))))
        return responses
