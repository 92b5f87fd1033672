"""ONNX Runtime as the image encoder's engine (IMAGE_RUNTIME=onnxruntime): same contract, same weights.

The .onnx file is the served TensorFlow function (uint8 pixels in; features and softmax probabilities out),
converted by `python -m models.onnx_export` from the installed Keras weights and checked against them there.
ONNX Runtime takes any batch size, so nothing is padded and nothing is traced.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from models.image_encoders import ImageEncoder

OUTPUTS = ("features", "probs")


def create_session(path: str, threads: int = 0, spinning: bool = False):
    """An ONNX Runtime CPU session: sequential execution (parallel mode measured 2-3x slower), all graph
    optimisations, `threads` intra-op threads (0: one per core), idle threads spinning only if asked."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    options.log_severity_level = 3  # errors only
    return ort.InferenceSession(path, sess_options=options, providers=["CPUExecutionProvider"])


@dataclass
class OnnxImageEncoder(ImageEncoder):
    """`model` is an onnxruntime.InferenceSession of the converted encoder."""

    onnx_sha256: str | None = None

    def __post_init__(self):
        inputs = self.model.get_inputs()
        outputs = [o.name for o in self.model.get_outputs()]
        if len(inputs) != 1 or sorted(outputs) != sorted(OUTPUTS):
            raise ValueError(f"expected one input and outputs {OUTPUTS}, the ONNX model has {outputs}")
        self._input = inputs[0].name

    def warmup(self) -> None:
        """Run each batch size once, so that ONNX Runtime has planned its memory for them before traffic."""
        size = self.input_size
        for bucket in self.buckets:
            self(np.zeros((bucket, size, size, 3), np.uint8))

    def tracing_count(self) -> int:
        return 0  # nothing is traced: the graph was fixed at conversion

    def _forward(self, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """One pass, any number of rows (nothing padded). run() releases the GIL meanwhile."""
        features, probs = self.model.run(OUTPUTS, {self._input: np.ascontiguousarray(pixels, np.uint8)})
        return features, probs

    def describe(self) -> dict:
        return {**super().describe(), "runtime": "onnxruntime", "onnx_sha256": self.onnx_sha256}
