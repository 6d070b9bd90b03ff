"""ONNX Runtime execution of an Encoder's transformer (CPU): fp32 ("onnx") or int8 weights ("onnx-int8").

Invariant: the session computes exactly what `Encoder.forward` computes in torch (`pooled_states`
of every hidden state), from the encoder's weights at `compile_session` time (tuned layers loaded
first); "onnx-int8" quantizes the weights to int8 per output channel (ONNX Runtime dynamic
quantization; per tensor lost 3% cosine of the pooled states, per channel 0.4%), so a
head must be trained on that runtime's features (the feature cache keys on the runtime). The graph
is exported at load time into a temporary directory: nothing is downloaded or shipped.
"""
from __future__ import annotations

import logging
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch

RUNTIMES = ("torch", "onnx", "onnx-int8")


class PooledStates(torch.nn.Module):
    """(input_ids, attention_mask) -> `pooled_states` [B, L+1, 2, H], the graph that is exported."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        from .encoder import pooled_states

        out = self.model(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=True)
        return pooled_states(out.hidden_states, attention_mask)


def export_onnx(model: torch.nn.Module, path: Path) -> None:
    """Trace `PooledStates(model)` to ONNX with dynamic batch and sequence axes."""
    ids = torch.tensor([[101, 7592, 2088, 102], [101, 7592, 102, 0]])
    mask = (ids != 0).long()
    axes = {"input_ids": {0: "batch", 1: "tokens"}, "attention_mask": {0: "batch", 1: "tokens"},
            "pooled": {0: "batch"}}
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(PooledStates(model).eval(), (ids, mask), str(path), dynamo=False,
                          input_names=["input_ids", "attention_mask"], output_names=["pooled"],
                          dynamic_axes=axes, opset_version=17)


def compile_session(model: torch.nn.Module, runtime: str, num_threads: int | None = None):
    """An `onnxruntime.InferenceSession` running `model` (export, optional int8 quantization)."""
    import onnxruntime as ort

    if runtime not in RUNTIMES[1:]:
        raise ValueError(f"runtime must be one of {RUNTIMES[1:]} for a session, got {runtime!r}")
    options = ort.SessionOptions()
    options.intra_op_num_threads = num_threads or torch.get_num_threads()
    options.inter_op_num_threads = 1
    # idle pool threads sleep instead of spinning: the router's event loop shares these cores
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    with tempfile.TemporaryDirectory(prefix="proxy-onnx-") as tmp:
        path = Path(tmp) / "encoder.onnx"
        export_onnx(model, path)
        if runtime == "onnx-int8":
            from onnxruntime.quantization import QuantType, quantize_dynamic

            quantized = Path(tmp) / "encoder-int8.onnx"
            logging.getLogger().disabled, was = True, logging.getLogger().disabled  # "run pre-processing" hint
            try:
                quantize_dynamic(str(path), str(quantized), weight_type=QuantType.QInt8, per_channel=True)
            finally:
                logging.getLogger().disabled = was
            path = quantized
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def run_session(session, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    feeds = {"input_ids": input_ids.cpu().numpy().astype(np.int64),
             "attention_mask": attention_mask.cpu().numpy().astype(np.int64)}
    return torch.from_numpy(session.run(["pooled"], feeds)[0])
