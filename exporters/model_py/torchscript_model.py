"""Triton python-backend model for AWS Inferentia/Trainium: ``torch.jit.load`` a torch-neuronx compiled module.

Each instance takes its NeuronCores from the config parameters ``NEURON_CORE_START`` / ``NEURON_CORES_PER_INSTANCE``
(instance i gets cores START + i*N .. START + (i+1)*N - 1) and sets ``NEURON_RT_VISIBLE_CORES`` before loading, the
way Triton's python backend examples for Inferentia do. ``import torch_neuronx`` registers the Neuron ops; where it is
not installed (a CPU host) the same file loads a CPU-traced TorchScript module, which exercises this loading path.
Inputs are passed positionally in config order; a ``reshape`` in the config is applied per batch element.
"""
import json
import os

import numpy as np
import triton_python_backend_utils as pb_utils


def _param(config, key, default):
    return config.get("parameters", {}).get(key, {}).get("string_value", default)


def _core_range(config, instance_name):
    start = int(_param(config, "NEURON_CORE_START", "0"))
    per_instance = int(_param(config, "NEURON_CORES_PER_INSTANCE", "1"))
    try:
        index = int(instance_name.rsplit("_", 1)[-1])
    except ValueError:
        index = 0
    first = start + index * per_instance
    return "%d-%d" % (first, first + per_instance - 1)


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        os.environ["NEURON_RT_VISIBLE_CORES"] = _core_range(config, args.get("model_instance_name", ""))
        try:
            import torch_neuronx  # noqa: F401 - registers the Neuron ops for torch.jit.load
        except Exception:  # noqa: BLE001 - CPU host: the PyPI placeholder raises
            pass
        import torch

        self.torch = torch
        version_dir = os.path.join(args["model_repository"], args["model_version"])
        self.module = torch.jit.load(os.path.join(version_dir, _param(config, "COMPILED_MODEL", "model.pt")))
        self.batching = config.get("max_batch_size", 0) > 0
        self.inputs = [(i["name"], i.get("reshape", {}).get("shape") if "reshape" in i else None)
                       for i in config["input"]]
        self.output_names = [o["name"] for o in config["output"]]

    def _args(self, request):
        tensors = []
        for name, reshape in self.inputs:
            array = pb_utils.get_input_tensor_by_name(request, name).as_numpy()
            if reshape is not None:
                array = array.reshape(([array.shape[0]] if self.batching else []) + [int(d) for d in reshape])
            tensors.append(self.torch.from_numpy(np.ascontiguousarray(array)))
        return tensors

    def execute(self, requests):
        responses = []
        for request in requests:
            try:
                with self.torch.no_grad():
                    result = self.module(*self._args(request))
                results = result if isinstance(result, (tuple, list)) else [result]
                tensors = [pb_utils.Tensor(n, r.cpu().numpy()) for n, r in zip(self.output_names, results)]
                responses.append(pb_utils.InferenceResponse(output_tensors=tensors))
            except Exception as exc:  # noqa: BLE001 - reported to the client as this request's error
                responses.append(pb_utils.InferenceResponse(error=pb_utils.TritonError(str(exc))))
        return responses
