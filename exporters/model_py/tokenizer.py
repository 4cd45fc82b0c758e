"""Triton python-backend model: prompt strings -> CLIP token ids (``input_ids``) and the empty prompt's ids
(``uncond_input_ids``, for classifier-free guidance), padded to the tokenizer's max length, as diffusers does.

The tokenizer files (``vocab.json``, ``merges.txt``, ...) lie in the version folder.
"""
import os

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        from transformers import CLIPTokenizer

        version_dir = os.path.join(args["model_repository"], args["model_version"])
        self.tokenizer = CLIPTokenizer.from_pretrained(version_dir)

    def _ids(self, texts):
        tokens = self.tokenizer(texts, padding="max_length", max_length=self.tokenizer.model_max_length,
                                truncation=True, return_tensors="np")
        return tokens.input_ids.astype(np.int64)

    def execute(self, requests):
        responses = []
        for request in requests:
            raw = pb_utils.get_input_tensor_by_name(request, "prompt").as_numpy().reshape(-1)
            texts = [p.decode("utf-8") if isinstance(p, bytes) else str(p) for p in raw]
            responses.append(pb_utils.InferenceResponse(output_tensors=[
                pb_utils.Tensor("input_ids", self._ids(texts)),
                pb_utils.Tensor("uncond_input_ids", self._ids([""] * len(texts))),
            ]))
        return responses
